"""Project conventions: the conda environment covers the dependencies, notebooks are clean."""
import re
from pathlib import Path

import nbformat
import pytest
import tomllib
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


LIBRARY = REPO / "vixml_lib"
# the files of a run folder: only vixml_lib/runs.py spells them
RUN_FILE_NAMES = ('"metrics.json"', '"pipeline.json"', '"config.yaml"', '"checkpoint"', '"state.json"',
                  '"predictions_tst.npz"', '"embeddings_', '"items_', '"results.json"', '"results.csv"', '"error.txt"',
                  '"figures"', '"ablations"')


def test_every_library_module_reads_in_a_sitting():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in LIBRARY.rglob("*.py")}
    assert not {p: n for p, n in sizes.items() if n > 450}, "split modules over 450 lines by concern"


def test_only_runs_module_spells_run_folder_file_names():
    offenders = [f"{p.relative_to(REPO)}: {name}" for p in LIBRARY.rglob("*.py") if p.name != "runs.py"
                 for name in RUN_FILE_NAMES if name in p.read_text()]
    assert not offenders, offenders


def test_readme_layout_names_every_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    listed = {line.split()[0] for line in layout.splitlines()[3:] if line.strip()}
    modules = {p.name for p in LIBRARY.rglob("*.py") if p.name != "__init__.py"}
    assert not sorted(modules - listed), "add these modules to the README's Layout section"
