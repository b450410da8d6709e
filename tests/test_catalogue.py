"""The catalogue of malformed inputs: each row breaks the tiny demo dataset, a config or a flag
in one way and runs the ``vixml`` command on it as a subprocess, as a user would.

Every row must give: a non-zero exit (2: bad input), no traceback, ONE error line
``vixml <command>: error: ...`` that names the file or key (the row's expected words), and
no new, changed or half-written file anywhere under the test's folder.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from vixml_lib.data.demo import make_demo_dataset
from vixml_lib.data.prepare import prepare_dataset

REPO = Path(__file__).resolve().parent.parent
RUN = "import sys\nfrom vixml_lib.cli import main\nsys.exit(main(sys.argv[1:]))\n"

# writes to any file whose name holds MARK fail with ENOSPC, as on a full disk
DISK_FULL = """
import builtins, errno, os
_open = builtins.open
class _Full:
    def __init__(self, f): self._f = f
    def write(self, data): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    def __getattr__(self, name): return getattr(self._f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self._f.close()
def _patched(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    return _Full(f) if "MARK" in str(file) and any(c in mode for c in "wax+") else f
builtins.open = _patched
"""


@dataclasses.dataclass
class Row:
    name: str
    args: list[str]  # {d}: the dataset folder, {t}: the test folder
    expect: list[str]  # words the error line must hold (the file or key among them)
    setup: Callable[[Path], None] | None = None
    data: str = "raw"  # raw: json.gz only; prepared: raw/X_Y files made; none
    prelude: str = ""
    code: int = 2


# ----------------------------------------------------------------------------- breaking things
def _gz_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines(keepends=True)


def append_line(name: str, line: bytes):
    def setup(t: Path):
        p = t / "data" / name
        p.write_bytes(gzip.compress(b"".join(_gz_lines(p)) + line + b"\n"))
    return setup


def write(rel: str, data: bytes | str):
    def setup(t: Path):
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def truncate(rel: str, fraction: float):
    def setup(t: Path):
        p = t / rel
        b = p.read_bytes()
        p.write_bytes(b[: int(len(b) * fraction)])
    return setup


def corrupt_middle(rel: str):
    def setup(t: Path):
        p = t / rel
        b = bytearray(p.read_bytes())
        mid = len(b) // 2
        b[mid:mid + 8] = bytes(x ^ 0x5A for x in b[mid:mid + 8])
        p.write_bytes(bytes(b))
    return setup


def map_past_bin(split: str):
    def setup(t: Path):
        p = t / "data" / f"{split}_imgs_384_3_map.npy"
        m = np.load(p)
        n = sum(1 for _ in open(t / "data" / f"{split}_imgs_384_3.bin", "rb"))
        m[0, 0] = n + 5
        np.save(p, m)
    return setup


def pickled_map(t: Path):
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = [0], [1]
    np.save(t / "data" / "trn_imgs_384_3_map.npy", obj, allow_pickle=True)


def remove(*rels: str):
    def setup(t: Path):
        for rel in rels:
            (t / rel).unlink()
    return setup


def predictions(t: Path):
    """A score matrix (the test truth itself) in ``P.npz``."""
    from vixml_lib.data import formats

    truth = formats.read_xy(t / "data" / "tst_X_Y.txt")
    sp.save_npz(t / "P.npz", truth)


def train_config(**values):
    def setup(t: Path):
        cfg = {"data_dir": str(t / "data"), "out_dir": str(t / "run"), "model": "minilm", "epochs": 1}
        cfg.update(values)
        (t / "t.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if v is not ...}))
    return setup


NOTEBOOKS = {  # a stand-in for notebooks/: two notebooks and their parameters cells
    "01_preparation": 'run_dir = "."\ndata_root = "data"\nseed = 0\nn_samples = 4',
    "02_training": 'run_dir = "."\nepochs = 3\nlr = 5e-4\ndevice = "auto"\ncompare = {}',
}


def notebooks(t: Path) -> Path:
    import nbformat

    folder = t / "nbs"
    folder.mkdir(exist_ok=True)
    for name, source in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell, nbformat.v4.new_code_cell("open('ran', 'w').write('yes')")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
    return folder


def params(**values):
    def setup(t: Path):
        cfg = {"run_name": "x", "data_root": str(t / "data"), "export_html": False,
               "notebooks_dir": str(notebooks(t))}
        cfg.update(values)
        (t / "p.yaml").write_text(yaml.safe_dump(cfg))
    return setup


def both(*setups):
    def setup(t: Path):
        for s in setups:
            s(t)
    return setup


def other_run(t: Path):
    """A finished-looking run folder of another configuration (seed 7)."""
    from vixml_lib.config import PipelineConfig

    (t / "run").mkdir()
    (t / "run" / "config.yaml").write_text(yaml.safe_dump(PipelineConfig(run_name="x", seed=7).to_dict()))
    (t / "run" / "pipeline.json").write_text(json.dumps({"notebooks": []}))


def checkpoint_of_other_config(t: Path):
    (t / "run" / "checkpoint").mkdir(parents=True)
    (t / "run" / "checkpoint" / "state.json").write_text(json.dumps({"epoch": 1, "config": {"epochs": 99}}))


NO_CUDA = not __import__("torch").cuda.is_available()
P = ["prepare", "--data", "{d}"]
E = ["evaluate", "--true", "{d}/tst_X_Y.txt", "--pred", "{t}/P.npz"]
T = ["train", "--config", "{t}/t.yaml"]
Q = ["pipeline", "--params", "{t}/p.yaml", "--out", "{t}/run"]

ROWS = [
    # ---- json.gz splits (vixml prepare)
    Row("trn-truncated-gzip", P, ["trn.json.gz", "truncated gzip"], truncate("data/trn.json.gz", 0.6)),
    Row("trn-not-gzip", P, ["trn.json.gz", "not a gzip file"], write("data/trn.json.gz", '{"title": "x"}\n')),
    Row("lbl-zero-bytes", P, ["lbl.json.gz", "empty file"], write("data/lbl.json.gz", b"")),
    Row("trn-empty-gzip", P, ["trn.json.gz", "no items"], write("data/trn.json.gz", gzip.compress(b""))),
    Row("trn-corrupt-middle", P, ["trn.json.gz", "corrupt gzip data"], corrupt_middle("data/trn.json.gz")),
    Row("trn-non-utf8", P, ["trn.json.gz:", "not UTF-8"],
        append_line("trn.json.gz", b'{"uid": "q", "title": "caf\xe9", "target_ind": [0]}')),
    Row("trn-bad-json", P, ["trn.json.gz:", "not valid JSON"], append_line("trn.json.gz", b'{"uid": "q", "title"')),
    Row("trn-target-rel-text", P, ["trn.json.gz:", "target_rel"],
        append_line("trn.json.gz", b'{"uid": "q", "title": "t", "target_ind": [0], "target_rel": ["high"]}')),
    Row("trn-target-ind-bools", P, ["trn.json.gz:", "target_ind"],
        append_line("trn.json.gz", b'{"uid": "q", "title": "t", "target_ind": [true, false]}')),
    Row("tst-label-out-of-range", P, ["tst.json.gz:", "out of range"],
        append_line("tst.json.gz", b'{"uid": "q", "title": "t", "target_ind": [999999]}')),
    Row("tst-no-title", P, ["tst.json.gz:", "'title'"], append_line("tst.json.gz", b'{"uid": "q", "target_ind": [0]}')),
    Row("encoding-utf-9", P + ["--encoding", "utf-9"], ["--encoding", "utf-9"]),
    Row("max-len-zero", P + ["--max-len", "0"], ["--max-len", "0"]),
    Row("unknown-tokenizer-offline", P + ["--tokenizer", "nobody/no-such-model"],
        ["nobody/no-such-model", "not available offline", "offline-minilm"]),
    Row("misspelled-offline-tokenizer", P + ["--tokenizer", "offline-minilmm"], ["offline-minilmm", "offline-minilm?"]),
    Row("image-map-past-bin", P, ["tst_imgs_384_3_map.npy", "out of range"], map_past_bin("tst")),
    Row("pickled-image-map", P, ["trn_imgs_384_3_map.npy", "pickled"], pickled_map),
    Row("filter-out-of-range", P, ["filter_labels_test.txt:1", "out of range"],
        write("data/filter_labels_test.txt", "0 999999\n")),
    Row("no-dataset-folder", ["prepare", "--data", "{t}/nowhere"], ["nowhere", "no such dataset folder"], data="none"),
    Row("disk-full", P, ["no space left"], prelude=DISK_FULL.replace("MARK", "trn_X_Y.txt")),
    Row("prepared-xy-malformed", P, ["trn_X_Y.txt:2", "malformed pair"],
        both(write("data/trn_X_Y.txt", "2 5\n1:x\n\n"), remove(*(f"data/{s}.json.gz" for s in ("trn", "tst", "lbl")))),
        data="prepared"),
    # ---- vixml evaluate
    Row("true-is-a-folder", ["evaluate", "--true", "{d}", "--pred", "{t}/P.npz"], ["data", "is a folder"], predictions,
        data="prepared"),
    Row("true-missing", ["evaluate", "--true", "{t}/none.txt", "--pred", "{t}/P.npz"], ["none.txt"], predictions,
        data="prepared"),
    Row("pred-not-npz", E, ["P.npz", "not a scipy.sparse"], write("P.npz", b"garbage"), data="prepared"),
    Row("pred-truncated", E, ["P.npz"], both(predictions, truncate("P.npz", 0.5)), data="prepared"),
    Row("k-zero", E + ["--k", "0"], ["--k"], predictions, data="prepared"),
    Row("filter-malformed", E + ["--filter", "{t}/f.txt"], ["f.txt:1", "malformed line"],
        both(predictions, write("f.txt", "a b c\n")), data="prepared"),
    # ---- vixml train: the TrainConfig and its flags
    Row("epochs-not-a-number", T, ["t.yaml", "epochs", "three", "an integer"], train_config(epochs="three")),
    Row("epochs-negative", T, ["t.yaml", "epochs", ">= 1"], train_config(epochs=-1)),
    Row("lr-not-a-number", T, ["t.yaml", "lr", "fast"], train_config(lr="fast")),
    Row("batch-size-zero", T, ["t.yaml", "batch_size", ">= 1"], train_config(batch_size=0)),
    Row("eval-every-zero", T, ["t.yaml", "eval_every"], train_config(eval_every=0)),
    Row("max-len-zero-config", T, ["t.yaml", "max_len"], train_config(max_len=0)),
    Row("loss-k-zero", T, ["t.yaml", "loss.k"], train_config(loss={"k": 0})),
    Row("encoding-utf-9-config", T, ["t.yaml", "encoding", "utf-9"], train_config(encoding="utf-9")),
    Row("unknown-key", T, ["t.yaml", "epoch", "did you mean epochs"], train_config(epoch=3)),
    Row("config-is-a-list", T, ["t.yaml", "mapping", "list"], write("t.yaml", "- epochs: 3\n- lr: 1\n")),
    Row("config-not-yaml", T, ["t.yaml", "not valid YAML"], write("t.yaml", "epochs: [3\n")),
    Row("config-missing", T, ["t.yaml", "not found"]),
    Row("no-data-dir", T, ["t.yaml", "data_dir"], train_config(data_dir=...)),
    Row("data-dir-missing", T, ["t.yaml", "data_dir", "nowhere"], train_config(data_dir="nowhere")),
    Row("data-dir-not-prepared", T, ["data", "missing", "vixml prepare"], train_config()),
    Row("no-image-features", T, ["offline-efficientnet-lite0-64", "no image features", "02_image_caching"],
        train_config(model="minilm-vixml"), data="prepared"),
    Row("backbone-not-available", T, ["nobody/no-such-model", "not available offline"],
        train_config(model_overrides={"backbone": "nobody/no-such-model"}), data="prepared"),
    Row("device-gpu", T, ["t.yaml", "device", "gpu", "cuda:N"], train_config(device="gpu")),
    Row("device-flag-bad", T + ["--device", "tpu"], ["--device", "tpu"], train_config()),
    Row("model-preset-typo", T, ["t.yaml", "model", "minilm-vixm", "did you mean"], train_config(model="minilm-vixm")),
    Row("attn-from-the-hub", T, ["t.yaml", "attn_implementation"],
        train_config(model_overrides={"attn_implementation": "kernels-community/flash-attn"})),
    Row("checkpoint-of-other-config", T, ["run", "another configuration", "--overwrite"],
        both(train_config(), checkpoint_of_other_config), data="prepared"),
    # ---- vixml pipeline: the parameters file and the run folder
    Row("params-is-a-list", Q, ["p.yaml", "mapping", "list"], write("p.yaml", "- seed: 1\n")),
    Row("params-unknown-key", Q, ["p.yaml", "epochs"], params(epochs=3)),
    Row("notebook-name-typo", Q, ["p.yaml", "02_trainnig", "did you mean 02_training"],
        params(notebook_parameters={"02_trainnig": {"epochs": 2}})),
    Row("parameter-name-typo", Q, ["p.yaml", "notebook_parameters.02_training", "epoch", "did you mean epochs"],
        params(notebook_parameters={"02_training": {"epoch": 2}})),
    Row("parameter-declared-nowhere", Q, ["p.yaml", "parameters", "no_such_parameter"],
        params(parameters={"no_such_parameter": 1})),
    Row("parameter-wrong-type", Q, ["p.yaml", "notebook_parameters.02_training.epochs", "three", "an integer"],
        params(notebook_parameters={"02_training": {"epochs": "three"}})),
    Row("common-parameter-wrong-type", Q, ["p.yaml", "parameters.n_samples", "an integer"],
        params(parameters={"n_samples": [1, 2]})),
    Row("notebooks-typo", Q, ["p.yaml", "notebooks", "01_preparaton", "did you mean 01_preparation"],
        params(notebooks=["01_preparaton"])),
    Row("timeout-negative", Q, ["p.yaml", "notebook_timeout"], params(notebook_timeout=-1)),
    Row("kernel-not-installed", Q, ["p.yaml", "kernel", "python9", "python3"], params(kernel="python9")),
    Row("rerun-other-configuration", Q, ["run", "another configuration", "seed", "--overwrite"],
        both(params(seed=1), other_run)),
    Row("out-is-not-a-run-folder", Q, ["run", "holds no pipeline run"],
        both(params(), write("run/notes.txt", "mine"))),
    # ---- vixml demo-data
    Row("demo-out-is-a-file", ["demo-data", "--out", "{t}/x"], ["x", "not a directory"], write("x", "a file"),
        data="none"),
    Row("demo-out-not-demo", ["demo-data", "--out", "{t}/d"], ["d", "not a demo dataset", "--overwrite"],
        write("d/mine.txt", "mine"), data="none"),
    Row("demo-preset-unknown", ["demo-data", "--preset", "huge", "--out", "{t}/d"], ["huge"], data="none"),
]
if NO_CUDA:
    ROWS.append(Row("device-cuda-without-cuda", T, ["t.yaml", "device", "cuda", "CUDA"], train_config(device="cuda")))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    make_demo_dataset(root / "raw", preset="tiny", seed=0)
    shutil.copytree(root / "raw", root / "prepared")
    prepare_dataset(root / "prepared")
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), None if p.is_dir() else st.st_size,
                                         None if p.is_dir() else st.st_mtime_ns)
    return out


def run_cli(args: list[str], cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", prelude + RUN, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_malformed_input_gives_one_clear_line_and_leaves_no_file(row, datasets, tmp_path):
    if row.data != "none":
        shutil.copytree(datasets / row.data, tmp_path / "data")
    if row.setup:
        row.setup(tmp_path)
    before = snapshot(tmp_path)
    args = [a.replace("{d}", str(tmp_path / "data")).replace("{t}", str(tmp_path)) for a in row.args]
    res = run_cli(args, tmp_path, row.prelude)
    assert res.returncode == row.code, res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    command = args[0]
    errors = [line for line in res.stderr.splitlines() if line.startswith(f"vixml {command}: ")]
    assert len(errors) == 1 and errors[0].startswith(f"vixml {command}: error: "), res.stderr
    for word in row.expect:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
    assert snapshot(tmp_path) == before, "files were written, changed or left behind"


def test_internal_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path):
    boom = "import vixml_lib.cli as c\ndef _boom(args): raise RuntimeError('boom')\nc._evaluate = _boom\n"
    args = ["evaluate", "--true", "a", "--pred", "b"]
    res = run_cli(args, tmp_path, boom)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("vixml evaluate: internal error: RuntimeError: boom")
    assert "-v" in res.stderr
    res = run_cli(["-v", *args], tmp_path, boom)
    assert res.returncode == 1 and "Traceback" in res.stderr and "RuntimeError: boom" in res.stderr
    res = run_cli(["evaluate", "-v", "--true", "a", "--pred", "b"], tmp_path, boom)  # -v after the command
    assert "Traceback" in res.stderr


def test_converted_values_and_a_good_dataset_still_work(datasets, tmp_path):
    """The other side of the catalogue: a clean dataset prepares (exit 0, outputs written)."""
    shutil.copytree(datasets / "raw", tmp_path / "data")
    res = run_cli(["prepare", "--data", str(tmp_path / "data")], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n_labels"] > 0 and (tmp_path / "data" / "trn_X_Y.txt").is_file()
