"""Project conventions: the conda environment covers the dependencies, notebooks are clean."""
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# pip name -> the name environment.yml uses for it (conda's CUDA builds)
CONDA_NAMES = {"torch": "pytorch-gpu", "faiss-cpu": "faiss-gpu"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_every_runtime_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = [_name(r) for r in project["dependencies"] + project["optional-dependencies"]["cpu"]]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = {_name(d) for d in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))}
    missing = [r for r in required if CONDA_NAMES.get(r, r) not in conda | pip]
    assert not missing, f"environment.yml lacks {missing}"


def test_cpu_setup_pins_torch():
    assert 'torch==2.13.0' in (REPO / "run.sh").read_text()


def test_ci_runs_the_readme_test_command():
    assert "bash run.sh test" in (REPO / "README.md").read_text()
    assert "bash run.sh test" in (REPO / ".ci" / "run").read_text()


NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean_with_parameters_first(path):
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    assert re.match(r"^\d\d_", path.name)
