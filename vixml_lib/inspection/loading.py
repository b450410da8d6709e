"""Loading trained runs for inspection, in *run space*.

A run folder is a :class:`vixml_lib.runs.TrainFolder` (what :func:`vixml_lib.training.train`
leaves in the pipeline folder's ``train/<name>/``): its config, summary metrics, the
L2-normalised float32 query and label embeddings, the top-k test predictions (rows =
evaluated test queries, columns = labels) and, when present, the dataset row of each
embedding / prediction row and column (``TrainFolder.items``).

Everything is held in *run space* (query position = row of the query embeddings, label
position = row of the label embeddings) and shown with dataset ids (``items``): a test
query is named by its row in the test titles, a label by its row in the label titles.

* :func:`load_dataset_for_inspection`: titles, test truth and test filter pairs of a
  prepared dataset (:class:`RunData`, shared between runs on it).
* :func:`load_run` / :func:`load_runs`: a run (:class:`InspectionRun`) with its dataset
  titles, truth and filter pairs (applied to the predictions as in evaluation), with checks
  that name the file.
* :func:`default_test_items`: which test rows a run evaluated when it saved no items.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..data import formats
from ..errors import DataFormatError
from ..io_utils import read_json
from ..runs import TrainFolder

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """What several runs on one dataset share: titles, full test truth, test filter pairs."""

    path: Path
    titles: dict[str, list[str]]  # "tst" and "lbl"
    Y_tst: sp.csr_matrix  # (n_test, n_labels)
    filter_tst: np.ndarray  # (n, 2) dataset (test row, label) pairs
    _folded: list[str] | None = field(default=None, repr=False)  # casefolded test titles (search)

    @property
    def n_test(self) -> int:
        return self.Y_tst.shape[0]

    @property
    def n_labels(self) -> int:
        return self.Y_tst.shape[1]


def load_dataset_for_inspection(data_dir: str | Path, encoding: str = "utf-8") -> RunData:
    """Titles, test labels and test filter pairs of a prepared dataset folder."""
    from ..data.prepare import load_dataset

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: dataset folder not found (prepare it with notebook 01)")
    ds = load_dataset(data_dir, encoding=encoding, images=False)
    Y = sp.csr_matrix(ds.Y["tst"])
    Y.sort_indices()
    return RunData(data_dir, {"tst": ds.texts["tst"], "lbl": ds.texts["lbl"]}, Y, ds.filters["tst"])


@dataclass
class InspectionRun:
    """One trained run, in run space (rows = evaluated queries, columns = label rows)."""

    name: str
    folder: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    data: RunData
    emb_tst: np.ndarray  # (n_q, d)
    emb_lbl: np.ndarray  # (n_l, d)
    pred: sp.csr_matrix  # (n_q, n_l), filter pairs removed
    items_tst: np.ndarray  # (n_q,) dataset test rows
    items_lbl: np.ndarray  # (n_l,) dataset label rows
    truth: sp.csr_matrix  # (n_q, n_l) the true labels of the evaluated queries, in run space
    exclude: sp.csr_matrix  # (n_q, n_l) filter pairs in run space (1 = excluded)
    n_true_outside: int = 0  # true pairs whose label is not among items_lbl (cannot be ranked)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_queries(self) -> int:
        return len(self.items_tst)

    @property
    def n_labels(self) -> int:
        return len(self.items_lbl)

    @property
    def use_images(self) -> bool | None:
        return self.summary.get("use_images", self.config.get("use_images"))

    def positions(self, items) -> np.ndarray:
        """Run-space query positions of dataset test rows ``items``; ValueError naming the
        items this run did not evaluate."""
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        order = self._cache.get("tst_order")
        if order is None:
            order = self._cache["tst_order"] = np.argsort(self.items_tst, kind="stable")
        at = np.searchsorted(self.items_tst, items, sorter=order)
        at = np.minimum(at, len(order) - 1) if len(order) else at
        pos = order[at] if len(order) else np.zeros(0, np.int64)
        bad = ~(self.items_tst[pos] == items) if len(order) else np.ones(len(items), bool)
        if bad.any():
            shown = ", ".join(map(str, items[bad][:5]))
            raise ValueError(f"run {self.name!r} ({self.folder}): test item(s) {shown} were not evaluated "
                             f"({self.n_queries} of {self.data.n_test} test queries were)")
        return pos

    def title(self, split: str, item: int) -> str:
        return self.data.titles[split][int(item)]


def run_list(runs: InspectionRun | dict[str, InspectionRun] | Sequence[InspectionRun]) -> list[InspectionRun]:
    """One run, a ``{name: run}`` dict (as :func:`load_runs` returns) or a sequence, as a list."""
    if isinstance(runs, InspectionRun):
        return [runs]
    return list(runs.values()) if isinstance(runs, dict) else list(runs)


def _read_yaml(path: Path) -> dict:
    """A run's config as a dict; unlike :meth:`TrainFolder.read_config`, anything but a
    mapping is an error (a run cannot be matched to its data without it)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise DataFormatError(path, f"expected a mapping of TrainConfig settings, found {type(values).__name__}")
    return values


def _load_npy(path: Path, what: str, ndim: int) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise DataFormatError(path, f"not a readable .npy array of {what} ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != ndim:
        raise DataFormatError(path, f"expected a {ndim}-D array of {what}, found shape {getattr(arr, 'shape', None)}")
    return arr


def default_test_items(n_rows: int, Y_tst: sp.csr_matrix, config: dict, folder: Path) -> np.ndarray:
    """The test rows a run evaluated when it saved no test items: all of them, or the
    seeded sample training draws (:func:`vixml_lib.data.inputs.sample_subproblem`, from the
    run's ``max_labels`` / ``eval_max_queries`` / ``seed``)."""
    from ..data.inputs import sample_subproblem

    run = TrainFolder(folder)
    items_name, emb_name = run.items("tst").name, run.embeddings("tst").name
    n_test = Y_tst.shape[0]
    if n_rows == n_test:
        return np.arange(n_test, dtype=np.int64)
    m, max_labels = config.get("eval_max_queries"), config.get("max_labels")
    if m or max_labels:
        items = sample_subproblem(Y_tst, config.get("seed", 0), max_labels, m)[1]
        if len(items) == n_rows:
            log.warning("%s: no %s; using the seeded sample of %d test queries training draws", folder, items_name,
                        n_rows)
            return items.astype(np.int64)
    raise ValueError(f"{folder}: {emb_name} has {n_rows} rows but the dataset has {n_test} test queries "
                     f"(eval_max_queries={m}); without {items_name} the rows cannot be matched to queries")


def _to_run_space(data: RunData, items_tst: np.ndarray, items_lbl: np.ndarray):
    """``(truth, exclude, n_true_outside)``: the dataset's test truth and filter pairs
    restricted to the run's queries and labels, renumbered to run positions."""
    n_l = len(items_lbl)
    col_of = np.full(data.n_labels, -1, dtype=np.int64)
    col_of[items_lbl] = np.arange(n_l)
    Y = data.Y_tst[items_tst].tocoo()
    cols = col_of[Y.col]
    keep = cols >= 0
    truth = sp.csr_matrix((Y.data[keep], (Y.row[keep], cols[keep])), shape=(len(items_tst), n_l), dtype=np.float32)
    truth.sum_duplicates()
    truth.sort_indices()
    row_of = np.full(data.n_test, -1, dtype=np.int64)
    row_of[items_tst] = np.arange(len(items_tst))
    f = data.filter_tst
    fr, fc = (row_of[f[:, 0]], col_of[f[:, 1]]) if len(f) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    ok = (fr >= 0) & (fc >= 0)
    exclude = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (fr[ok], fc[ok])), shape=(len(items_tst), n_l))
    exclude.sum_duplicates()
    exclude.sort_indices()
    return truth, exclude, int((~keep).sum())


def _check_run_files(run: TrainFolder) -> None:
    """FileNotFoundError naming the folder and the files it lacks."""
    if not run.path.is_dir():
        raise FileNotFoundError(f"{run.path}: run folder not found (train it with notebook 03_training)")
    needed = (run.config, run.metrics, run.embeddings("tst"), run.embeddings("lbl"), run.predictions)
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run.path}: missing {', '.join(missing)} (a run folder of vixml_lib.training.train "
                                "with save_embeddings=True holds them; was the run interrupted?)")


def _data_for(run: TrainFolder, config: dict, data_dir: str | Path | None) -> RunData:
    """The run's dataset: ``data_dir``, else its config's ``data_dir``."""
    if data_dir is None:
        if not config.get("data_dir"):
            raise DataFormatError(run.config, "no data_dir; pass data_dir=")
        data_dir = Path(config["data_dir"])
    return load_dataset_for_inspection(data_dir, encoding=config.get("encoding", "utf-8"))


def _load_scores(run: TrainFolder) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """``(emb_tst (n_q, d), emb_lbl (n_l, d), pred (n_q, n_l))``, their shapes checked."""
    emb_tst = _load_npy(run.embeddings("tst"), "query embeddings", 2).astype(np.float32, copy=False)
    emb_lbl = _load_npy(run.embeddings("lbl"), "label embeddings", 2).astype(np.float32, copy=False)
    if emb_tst.shape[1] != emb_lbl.shape[1]:
        raise DataFormatError(run.embeddings("tst"), f"width {emb_tst.shape[1]} differs from "
                                                     f"{run.embeddings('lbl').name}'s {emb_lbl.shape[1]}")
    pred = formats.read_predictions(run.predictions)
    if pred.shape != (emb_tst.shape[0], emb_lbl.shape[0]):
        raise DataFormatError(run.predictions, f"shape {pred.shape} does not match the embeddings (queries x labels = "
                                               f"{emb_tst.shape[0]} x {emb_lbl.shape[0]})")
    return emb_tst, emb_lbl, pred


def _read_items(path: Path, split: str, n_rows: int, n_data: int, data: RunData, emb_name: str) -> np.ndarray:
    """A saved items file (dataset row of each embedding row), checked against the data."""
    items = _load_npy(path, f"dataset rows of {split}", 1)
    if items.dtype.kind not in "iu":
        raise DataFormatError(path, f"expected integer dataset rows, found dtype {items.dtype}")
    items = items.astype(np.int64)
    if len(items) != n_rows:
        raise DataFormatError(path, f"{len(items)} entries but {emb_name} has {n_rows} rows")
    if len(items) and (items.min() < 0 or items.max() >= n_data):
        raise DataFormatError(path, f"dataset rows must be in 0..{n_data - 1} ({data.path})")
    if len(np.unique(items)) != len(items):
        raise DataFormatError(path, "repeated dataset rows")
    return items


def _run_items(run: TrainFolder, split: str, n_rows: int, data: RunData, config: dict) -> np.ndarray:
    """The dataset rows of a split's embedding rows: the saved items, else the default
    (test: :func:`default_test_items`; labels: all of them, which the row count must match)."""
    n_data = data.n_test if split == "tst" else data.n_labels
    if run.items(split).is_file():
        return _read_items(run.items(split), split, n_rows, n_data, data, run.embeddings(split).name)
    if split == "tst":
        return default_test_items(n_rows, data.Y_tst, config, run.path)
    if n_rows != n_data:
        raise DataFormatError(run.embeddings("lbl"), f"{n_rows} label rows but {data.path} has {n_data} "
                                                     f"labels (and there is no {run.items('lbl').name})")
    return np.arange(n_data, dtype=np.int64)


def load_run(folder: str | Path, data_dir: str | Path | None = None, data: RunData | None = None,
             name: str | None = None) -> InspectionRun:
    """Load a training run folder for inspection.

    ``data_dir`` (default: the run's config ``data_dir``) is read unless ``data``
    (from :func:`load_dataset_for_inspection`, shared between runs) is given. Missing files
    and disagreeing shapes raise errors that name the folder or file.
    """
    run = TrainFolder(folder)
    _check_run_files(run)
    config = _read_yaml(run.config)
    summary = read_json(run.metrics)
    if data is None:
        data = _data_for(run, config, data_dir)
    emb_tst, emb_lbl, pred = _load_scores(run)
    items_tst = _run_items(run, "tst", emb_tst.shape[0], data, config)
    items_lbl = _run_items(run, "lbl", emb_lbl.shape[0], data, config)
    truth, exclude, outside = _to_run_space(data, items_tst, items_lbl)
    if exclude.nnz:
        pred = formats.apply_filter(pred, np.stack(exclude.nonzero(), axis=1))
    return InspectionRun(name or run.name, run.path, config, summary, data, emb_tst, emb_lbl, pred,
                         items_tst, items_lbl, truth, exclude, outside)


def load_runs(train_dir: str | Path, names: Sequence[str],
              data_dir: str | Path | None = None) -> dict[str, InspectionRun]:
    """Several runs of ``<train_dir>/<name>/`` on one dataset (read once). ``train_dir`` is
    e.g. a pipeline folder's :attr:`vixml_lib.runs.PipelineFolder.train_dir`."""
    train_dir = Path(train_dir)
    if not names:
        raise ValueError("no runs named")
    folders = [TrainFolder(train_dir / n) for n in names]
    absent = [str(f.path) for f in folders if not f.exists()]
    if absent:
        have = sorted(p.name for p in train_dir.iterdir() if p.is_dir()) if train_dir.is_dir() else []
        raise FileNotFoundError(f"run folder(s) not found: {', '.join(absent)}; "
                                f"{train_dir} holds {', '.join(have) if have else 'no runs'} (notebook 03 trains them)")
    first_cfg = folders[0].config
    cfg = _read_yaml(first_cfg) if first_cfg.is_file() else {}
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    if data_dir is None:
        raise FileNotFoundError(f"{first_cfg}: not found (or no data_dir in it); pass data_dir=")
    data = load_dataset_for_inspection(data_dir, encoding=cfg.get("encoding", "utf-8"))
    return {n: load_run(f.path, data=data, name=n) for n, f in zip(names, folders)}
