"""Notebook paths: the same folders from notebooks/ (JupyterLab), the repository root and a
pipeline run folder (papermill); pipeline runs are read, not written, unless asked."""
from pathlib import Path

import pytest

from vixml_lib.notebook_env import find_repo_root, notebook_env
from vixml_lib.runs import PipelineFolder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo(tmp_path):
    """A checkout: notebooks/, data/demo-tiny/, and a pipeline run reports/demo/ with two training runs."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "data" / "demo-tiny").mkdir(parents=True)
    demo = PipelineFolder(tmp_path / "reports" / "demo")
    for name in ("minilm-vixml", "minilm-text"):
        demo.train_run(name).path.mkdir(parents=True)
    demo.config.write_text("run_name: demo\nnotebook_parameters: {}\n")  # as `vixml pipeline` saves it
    return tmp_path


@pytest.mark.parametrize("where", ["notebooks", ".", "reports/demo"])
def test_relative_paths_are_taken_from_the_repository_root_wherever_the_kernel_starts(repo, where):
    env = notebook_env("data", "demo-tiny", "reports/interactive", "reports/demo", cwd=repo / where,
                       need_train_runs=["minilm-vixml", "minilm-text"])
    assert env.root == repo and env.cwd == (repo / where).resolve()
    assert env.data_dir == repo / "data" / "demo-tiny"
    assert env.run_dir == repo / "reports" / "interactive" and env.run_dir.is_dir()  # created
    assert env.source.train_dir == repo / "reports" / "demo" / "train"
    assert "writes to: reports/interactive · training runs from reports/demo" in str(env)


def test_absolute_paths_are_kept_and_source_defaults_to_run_dir(repo, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "ds").mkdir()
    env = notebook_env(elsewhere, "ds", elsewhere / "out", cwd=repo / "notebooks")
    assert env.data_dir == elsewhere / "ds" and env.run_dir == env.source_run == elsewhere / "out"


def test_the_real_checkout_is_found_from_its_notebooks_folder():
    assert find_repo_root(REPO / "notebooks") == REPO and find_repo_root(REPO) == REPO


def test_without_a_notebooks_folder_paths_are_relative_to_the_kernel_folder(tmp_path):
    (tmp_path / "data" / "d").mkdir(parents=True)
    env = notebook_env("data", "d", "out", cwd=tmp_path)
    assert env.root == tmp_path and env.run_dir == tmp_path / "out"


def test_missing_dataset_names_the_root_the_kernel_folder_and_notebook_01(repo):
    with pytest.raises(FileNotFoundError) as e:
        notebook_env("data", "demo-small", cwd=repo / "notebooks")
    msg = str(e.value)
    assert str(repo / "data" / "demo-small") in msg and f"repository root {repo}" in msg
    assert f"kernel runs in {repo / 'notebooks'}" in msg and "notebook 01" in msg
    assert not (repo / "reports" / "interactive").exists()  # nothing created on failure
    # notebook 01 builds the data: no check there
    assert notebook_env("data", "demo-small", need_data=False, cwd=repo / "notebooks").data_dir.name == "demo-small"


def test_a_pipeline_run_is_written_only_from_inside_it_or_when_asked(repo):
    demo = repo / "reports" / "demo"
    with pytest.raises(PermissionError) as e:
        notebook_env("data", "demo-tiny", "reports/demo", cwd=repo / "notebooks")
    assert "source_run = 'reports/demo'" in str(e.value) and "run_dir = 'reports/interactive'" in str(e.value)
    assert "write_to_pipeline_run=True" in str(e.value)
    assert notebook_env("data", "demo-tiny", str(demo), cwd=demo).run_dir == demo  # as `vixml pipeline` runs it
    assert notebook_env("data", "demo-tiny", "reports/demo", cwd=repo, write_to_pipeline_run=True).run_dir == demo


def test_missing_training_runs_point_to_the_run_folder_that_has_them(repo):
    with pytest.raises(FileNotFoundError) as e:
        notebook_env("data", "demo-tiny", cwd=repo / "notebooks", need_train_runs=["minilm-vixml"])
    msg = str(e.value)
    assert "minilm-vixml not found in" in msg and "(it has: none)" in msg
    assert "set source_run = 'reports/demo'" in msg
    with pytest.raises(FileNotFoundError, match="Train them with notebook 03"):
        notebook_env("data", "demo-tiny", cwd=repo, source_run="reports/demo", need_train_runs=["smollm2"])
