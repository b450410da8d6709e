"""Run folders are safe to rerun: the same configuration resumes, another one is refused before
anything is touched (or replaces the run whole with --overwrite); metrics.json and pipeline.json
describe exactly the notebooks of the last run; a failed notebook's copy sits beside the good
one; a notebook past its time limit, or whose kernel dies, ends with a clear status."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from notebook_data import make_notebook

from vixml_lib.cli import main

TRAIN = """import json, os
os.makedirs('train', exist_ok=True)
if os.path.exists('fail_now'):
    raise ValueError('asked to fail')
result = {'epochs': epochs, 'score': 10 * epochs}
json.dump(result, open('train/result.json', 'w'))
from vixml_lib.report import save_metrics
save_metrics(run_dir, '02_training', result)"""


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "01_data.ipynb", 'run_dir = "."\nseed = 0',
                  "from vixml_lib.report import save_metrics\nsave_metrics(run_dir, '01_data', {'seed': seed})")
    make_notebook(d / "02_training.ipynb", 'run_dir = "."\nepochs = 1', TRAIN)
    return d


def params(tmp_path: Path, nb_dir: Path, epochs: int, **extra) -> Path:
    cfg = {"run_name": "r", "data_root": str(tmp_path / "data"), "notebooks_dir": str(nb_dir), "export_html": False,
           "notebook_parameters": {"02_training": {"epochs": epochs}}, **extra}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read(folder: Path, name: str):
    return json.loads((folder / name).read_text())


def test_rerun_resumes_refuses_a_changed_training_parameter_or_replaces_the_run(tmp_path, nb_dir, capsys):
    out = tmp_path / "run"
    assert main(["pipeline", "--params", str(params(tmp_path, nb_dir, 2)), "--out", str(out)]) == 0
    assert read(out, "metrics.json")["02_training"] == {"epochs": 2, "score": 20}
    first = files(out)
    # a changed training parameter: refused before anything is touched, naming the change
    capsys.readouterr()
    assert main(["pipeline", "--params", str(params(tmp_path, nb_dir, 3)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "notebook_parameters.02_training.epochs: 2 -> 3" in err
    assert "--overwrite" in err and files(out) == first
    # asked to: the run is replaced whole (nothing of the old one stays)
    (out / "train" / "old_checkpoint.pt").write_bytes(b"from the epochs=2 run")
    assert main(["pipeline", "--params", str(params(tmp_path, nb_dir, 3)), "--out", str(out), "--overwrite"]) == 0
    assert read(out, "pipeline.json")["mode"] == "replaced"
    assert read(out, "metrics.json")["02_training"] == {"epochs": 3, "score": 30}
    assert read(out, "train/result.json") == {"epochs": 3, "score": 30}
    assert not (out / "train" / "old_checkpoint.pt").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["notebook_parameters"]["02_training"]["epochs"] == 3
    # the same configuration (one notebook only this time) resumes; the summary is this run's alone
    assert main(["pipeline", "--params", str(params(tmp_path, nb_dir, 3, notebooks=["01_data"])),
                 "--out", str(out)]) == 0
    summary = read(out, "pipeline.json")
    assert summary["mode"] == "resumed" and summary["status"] == "ok"
    assert [e["notebook"] for e in summary["notebooks"]] == ["01_data"]
    assert read(out, "metrics.json") == {"01_data": {"seed": 0}}  # no stale metrics/02_training.json merged
    assert (out / "metrics" / "02_training.json").exists()


def test_a_failed_notebook_sits_beside_the_good_copy(tmp_path, nb_dir, capsys):
    out = tmp_path / "run"
    p = params(tmp_path, nb_dir, 2, notebooks=["02_training"])
    assert main(["pipeline", "--params", str(p), "--out", str(out)]) == 0
    good = (out / "02_training.ipynb").read_bytes()
    good_metrics = (out / "metrics" / "02_training.json").read_bytes()
    (out / "fail_now").write_text("")
    assert main(["pipeline", "--params", str(p), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "02_training.failed.ipynb" in err and "ValueError: asked to fail" in err
    assert (out / "02_training.ipynb").read_bytes() == good and (out / "02_training.failed.ipynb").exists()
    assert (out / "metrics" / "02_training.json").read_bytes() == good_metrics
    summary = read(out, "pipeline.json")
    assert summary["status"] == "failed" and summary["notebooks"][0]["status"] == "failed"
    assert summary["notebooks"][0]["output"] == "02_training.failed.ipynb"
    assert read(out, "metrics.json") == {}  # a failed notebook's metrics are not this run's results
    (out / "fail_now").unlink()
    assert main(["pipeline", "--params", str(p), "--out", str(out)]) == 0
    assert not (out / "02_training.failed.ipynb").exists()


def test_a_notebook_past_its_time_limit_ends_with_status_timeout(tmp_path, nb_dir, capsys):
    make_notebook(nb_dir / "03_slow.ipynb", 'run_dir = "."', "x = 1", "import time\ntime.sleep(120)")
    p = params(tmp_path, nb_dir, 1, notebooks=["03_slow"])
    out = tmp_path / "run"
    start = time.monotonic()
    assert main(["pipeline", "--params", str(p), "--out", str(out), "--notebook-timeout", "5"]) == 1
    assert time.monotonic() - start < 100
    err = capsys.readouterr().err
    assert "03_slow.ipynb ran out of time at cell 3" in err and "notebook_timeout (5 s)" in err
    entry = read(out, "pipeline.json")["notebooks"][0]
    assert entry["status"] == "timeout" and entry["cell"] == 3
    assert read(out, "pipeline.json")["status"] == "timeout"


def test_a_dead_kernel_ends_the_notebook_with_a_clear_status(tmp_path, nb_dir, capsys):
    make_notebook(nb_dir / "03_crash.ipynb", 'run_dir = "."', "import os\nos._exit(1)")
    p = params(tmp_path, nb_dir, 1, notebooks=["03_crash"])
    out = tmp_path / "run"
    assert main(["pipeline", "--params", str(p), "--out", str(out)]) == 1
    assert "lost its kernel" in capsys.readouterr().err
    assert read(out, "pipeline.json")["notebooks"][0]["status"] == "kernel died"
