"""Retrieval inspection: what a trained run retrieves for single queries, where it misses,
and where two runs (e.g. ViXML and text only) differ.

A run folder is what :func:`vixml_lib.training.train` leaves in ``<run_dir>/train/<name>/``:
``config.yaml``, ``metrics.json``, ``embeddings_tst.npy`` / ``embeddings_lbl.npy``
(L2-normalised float32), ``predictions_tst.npz`` (top-k scores, rows = evaluated test
queries, columns = labels) and, when present, ``items_tst.npy`` / ``items_lbl.npy`` (the
dataset row of each embedding / prediction row and column).

Everything is held in *run space* (query position = row of ``embeddings_tst``, label
position = row of ``embeddings_lbl``) and shown with dataset ids (``items``): a test query
is named by its row in ``tst.raw.txt``, a label by its row in ``lbl.raw.txt``.

* :func:`load_run` / :func:`load_runs`: a run with its dataset titles, truth and filter
  pairs (applied to the predictions as in evaluation), with checks that name the file.
* :func:`per_query_metrics`: per-query P@k, hit flags of the top k.
* :func:`true_label_ranks`: the exact rank of every true label among all labels, from the
  embeddings (filtered pairs excluded), vectorised in blocks.
* selection: :func:`find_queries` (case-insensitive text search), :func:`worst_queries`,
  :func:`best_queries`, :func:`pair_runs` (:class:`RunPair`: per-query P@k differences of
  two runs on their common queries, :meth:`RunPair.helped` / :meth:`RunPair.hurt`).
* :func:`project_embeddings`: a seeded 2-D map of label and query embeddings (PCA by
  numpy SVD; UMAP / t-SNE only when ``umap`` / ``sklearn`` are installed).
* rendering: :func:`plot_query` (matplotlib: the query, each run's top k with images,
  scores and hit marks, and the missed true labels with their rank),
  :func:`plot_embedding_map` / :func:`embedding_map_plotly`, and :class:`QueryBrowser`
  (an ipywidgets browser; built without display, so it also runs headless).

Only numpy, scipy and yaml are imported at module level; matplotlib, plotly, PIL and
ipywidgets are imported by the functions that draw.
"""
from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from .data import formats
from .errors import DataFormatError
from .io_utils import read_json

log = logging.getLogger(__name__)

__all__ = [
    "RunData", "InspectionRun", "RunPair", "Projection", "ItemImages", "QueryBrowser",
    "load_dataset_for_inspection", "load_run", "load_runs", "per_query_metrics", "true_label_ranks",
    "query_details", "find_queries", "worst_queries", "best_queries", "pair_runs", "choose_static_queries",
    "missed_ranks", "miss_rank_summary", "inspection_summary", "plot_pair_differences", "plot_missed_ranks",
    "project_embeddings", "point_attribute", "plot_query", "plot_embedding_map",
    "embedding_map_plotly",
]

RUN_FILES = ("config.yaml", "metrics.json", "embeddings_tst.npy", "embeddings_lbl.npy", "predictions_tst.npz")


# --------------------------------------------------------------------------- loading


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
    from .data.prepare import load_dataset

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


def _read_yaml(path: Path) -> dict:
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
    """The test rows a run evaluated when it saved no ``items_tst.npy``: all of them, or the
    seeded sample training draws (:func:`vixml_lib.training.sample_subproblem`, from the
    run's ``max_labels`` / ``eval_max_queries`` / ``seed``)."""
    from .training import sample_subproblem

    n_test = Y_tst.shape[0]
    if n_rows == n_test:
        return np.arange(n_test, dtype=np.int64)
    m, max_labels = config.get("eval_max_queries"), config.get("max_labels")
    if m or max_labels:
        items = sample_subproblem(Y_tst, config.get("seed", 0), max_labels, m)[1]
        if len(items) == n_rows:
            log.warning("%s: no items_tst.npy; using the seeded sample of %d test queries training draws", folder, n_rows)
            return items.astype(np.int64)
    raise ValueError(f"{folder}: embeddings_tst.npy has {n_rows} rows but the dataset has {n_test} test queries "
                     f"(eval_max_queries={m}); without items_tst.npy the rows cannot be matched to queries")


def _to_run_space(data: RunData, items_tst: np.ndarray, items_lbl: np.ndarray):
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


def load_run(folder: str | Path, data_dir: str | Path | None = None, data: RunData | None = None,
             name: str | None = None) -> InspectionRun:
    """Load a training run folder for inspection.

    ``data_dir`` (default: the run's ``config.yaml`` ``data_dir``) is read unless ``data``
    (from :func:`load_dataset_for_inspection`, shared between runs) is given. Missing files
    and disagreeing shapes raise errors that name the folder or file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: run folder not found (train it with notebook 03_training)")
    missing = [f for f in RUN_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (a run folder of vixml_lib.training.train "
                                "with save_embeddings=True holds them; was the run interrupted?)")
    config = _read_yaml(folder / "config.yaml")
    summary = read_json(folder / "metrics.json")
    if data is None:
        if data_dir is None:
            if not config.get("data_dir"):
                raise DataFormatError(folder / "config.yaml", "no data_dir; pass data_dir=")
            data_dir = Path(config["data_dir"])
        data = load_dataset_for_inspection(data_dir, encoding=config.get("encoding", "utf-8"))
    emb_tst = _load_npy(folder / "embeddings_tst.npy", "query embeddings", 2).astype(np.float32, copy=False)
    emb_lbl = _load_npy(folder / "embeddings_lbl.npy", "label embeddings", 2).astype(np.float32, copy=False)
    if emb_tst.shape[1] != emb_lbl.shape[1]:
        raise DataFormatError(folder / "embeddings_tst.npy", f"width {emb_tst.shape[1]} differs from "
                                                             f"embeddings_lbl.npy's {emb_lbl.shape[1]}")
    pred = formats.read_predictions(folder / "predictions_tst.npz")
    if pred.shape != (emb_tst.shape[0], emb_lbl.shape[0]):
        raise DataFormatError(folder / "predictions_tst.npz",
                              f"shape {pred.shape} does not match the embeddings (queries x labels = "
                              f"{emb_tst.shape[0]} x {emb_lbl.shape[0]})")

    def items_for(split: str, n_rows: int, n_data: int) -> np.ndarray:
        path = folder / f"items_{split}.npy"
        if path.is_file():
            items = _load_npy(path, f"dataset rows of {split}", 1)
            if items.dtype.kind not in "iu":
                raise DataFormatError(path, f"expected integer dataset rows, found dtype {items.dtype}")
            items = items.astype(np.int64)
            if len(items) != n_rows:
                raise DataFormatError(path, f"{len(items)} entries but embeddings_{split}.npy has {n_rows} rows")
            if len(items) and (items.min() < 0 or items.max() >= n_data):
                raise DataFormatError(path, f"dataset rows must be in 0..{n_data - 1} ({data.path})")
            if len(np.unique(items)) != len(items):
                raise DataFormatError(path, "repeated dataset rows")
            return items
        if split == "tst":
            return default_test_items(n_rows, data.Y_tst, config, folder)
        if n_rows != n_data:
            raise DataFormatError(folder / "embeddings_lbl.npy", f"{n_rows} label rows but {data.path} has {n_data} "
                                                                 "labels (and there is no items_lbl.npy)")
        return np.arange(n_data, dtype=np.int64)

    items_tst = items_for("tst", emb_tst.shape[0], data.n_test)
    items_lbl = items_for("lbl", emb_lbl.shape[0], data.n_labels)
    truth, exclude, outside = _to_run_space(data, items_tst, items_lbl)
    if exclude.nnz:
        pred = formats.apply_filter(pred, np.stack(exclude.nonzero(), axis=1))
    return InspectionRun(name or folder.name, folder, config, summary, data, emb_tst, emb_lbl, pred,
                         items_tst, items_lbl, truth, exclude, outside)


def load_runs(train_dir: str | Path, names: Sequence[str], data_dir: str | Path | None = None) -> dict[str, InspectionRun]:
    """Several runs of ``<train_dir>/<name>/`` on one dataset (read once)."""
    train_dir = Path(train_dir)
    if not names:
        raise ValueError("no runs named")
    folders = [train_dir / n for n in names]
    absent = [str(f) for f in folders if not f.is_dir()]
    if absent:
        have = sorted(p.name for p in train_dir.iterdir() if p.is_dir()) if train_dir.is_dir() else []
        raise FileNotFoundError(f"run folder(s) not found: {', '.join(absent)}; "
                                f"{train_dir} holds {', '.join(have) if have else 'no runs'} (notebook 03 trains them)")
    first_cfg = folders[0] / "config.yaml"
    cfg = _read_yaml(first_cfg) if first_cfg.is_file() else {}
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    if data_dir is None:
        raise FileNotFoundError(f"{first_cfg}: not found (or no data_dir in it); pass data_dir=")
    data = load_dataset_for_inspection(data_dir, encoding=cfg.get("encoding", "utf-8"))
    return {n: load_run(f, data=data, name=n) for n, f in zip(names, folders)}


# --------------------------------------------------------------------------- per-query numbers


def _lookup(M: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Values M[rows, cols] (0 where not stored; cols == n_cols is padding), vectorised.
    ``M`` must have sorted indices and no duplicates."""
    n_cols = M.shape[1]
    keys = np.repeat(np.arange(M.shape[0], dtype=np.int64), np.diff(M.indptr)) * (n_cols + 1) + M.indices
    want = np.asarray(rows, np.int64) * (n_cols + 1) + np.asarray(cols, np.int64)
    at = np.searchsorted(keys, want)
    at_c = np.minimum(at, max(len(keys) - 1, 0))
    found = (at < len(keys)) & (keys[at_c] == want) if len(keys) else np.zeros(want.shape, bool)
    return np.where(found, M.data[at_c] if len(keys) else 0, 0).astype(np.float32)


def per_query_metrics(run: InspectionRun, k: int = 5) -> dict[str, np.ndarray]:
    """Per-query numbers from the (filtered) predictions, pyxclib's definitions:
    ``labels`` (n, k) top-k label positions (``n_labels`` = padding), ``scores`` (n, k),
    ``hits`` (n, k) bool, ``P@k`` (percent, the mean over queries is the run's P@k),
    ``n_true`` true labels per query, ``R@k`` (percent)."""
    from .metrics import topk_indices

    key = ("pq", int(k))
    if key in run._cache:
        return run._cache[key]
    labels = topk_indices(run.pred, k)
    n = labels.shape[0]
    rows = np.repeat(np.arange(n), labels.shape[1]).reshape(labels.shape)
    pred = run.pred.copy()
    pred.sum_duplicates()
    pred.sort_indices()
    scores = np.where(labels < run.n_labels, _lookup(pred, rows, labels), np.nan).astype(np.float32)
    flags = _lookup(run.truth, rows, labels)
    n_true = np.diff(run.truth.indptr).astype(np.int64)
    hits_sum = flags.sum(1, dtype=np.float64)
    out = {"labels": labels, "scores": scores, "hits": flags > 0, "P@k": 100 * hits_sum / k,
           "n_true": n_true, "R@k": 100 * hits_sum / np.maximum(run.truth.sum(1).A1, 1), "k": k}
    run._cache[key] = out
    return out


def true_label_ranks(run: InspectionRun, rows: Sequence[int] | np.ndarray | None = None,
                     block_elems: int = 1 << 24) -> dict[str, np.ndarray]:
    """Exact rank of every true label of the given query positions (default: all) among
    all labels, scored from the embeddings: ``rank = 1 + #labels with a strictly higher
    score``, the query's filtered labels excluded (ties count in the label's favour).

    Returns flat arrays over the true (query, label) pairs: ``row`` (query position),
    ``label`` (label position), ``rank`` (-1 for a pair that is itself filtered: it can
    never be retrieved), ``score`` and ``ties`` (other labels with exactly the same score:
    the label ranks anywhere in ``rank .. rank + ties``, e.g. identical titles). Rows come
    in the order given, labels ascending.
    Computed in blocks of queries (about ``block_elems`` scores at a time)."""
    full = rows is None
    if full and "ranks" in run._cache:
        return run._cache["ranks"]
    rows = np.arange(run.n_queries) if full else np.atleast_1d(np.asarray(rows, dtype=np.int64))
    m = run.n_labels
    T = run.truth[rows]
    counts = np.diff(T.indptr)
    out_row = np.repeat(rows, counts)
    out_lab = T.indices.astype(np.int64)
    out_rank = np.empty(len(out_lab), np.int64)
    out_score = np.empty(len(out_lab), np.float32)
    out_ties = np.zeros(len(out_lab), np.int64)
    per_row = max(1.0, counts.mean() if len(counts) else 1.0)
    qb = max(1, int(block_elems // max(1, m) // per_row))
    starts = np.concatenate([[0], np.cumsum(counts)])
    for b0 in range(0, len(rows), qb):
        b1 = min(b0 + qb, len(rows))
        br = rows[b0:b1]
        S = run.emb_tst[br] @ run.emb_lbl.T  # (b, m)
        ex = run.exclude[br].tocoo()
        S[ex.row, ex.col] = -np.inf
        p0, p1 = starts[b0], starts[b1]
        if p1 == p0:
            continue
        local = np.repeat(np.arange(b1 - b0), counts[b0:b1])
        lab = out_lab[p0:p1]
        s = S[local, lab]
        out_score[p0:p1] = s
        rows_s = S[local]
        rank = (rows_s > s[:, None]).sum(1) + 1
        filtered = np.isneginf(s)
        out_rank[p0:p1] = np.where(filtered, -1, rank)
        out_ties[p0:p1] = np.where(filtered, 0, (rows_s == s[:, None]).sum(1) - 1)
    res = {"row": out_row, "label": out_lab, "rank": out_rank, "score": out_score, "ties": out_ties}
    if full:
        run._cache["ranks"] = res
    return res


def missed_ranks(run: InspectionRun, k: int = 5, max_queries: int | None = 5000, seed: int = 0) -> np.ndarray:
    """Exact ranks of the true labels the top k missed (-1: filtered pair), over all the
    run's queries or a seeded sample of ``max_queries`` (ranking every label for every
    query of a full-size test set is slow on a CPU)."""
    key = ("missed", int(k), max_queries, seed)
    if key not in run._cache:
        rows = None
        if max_queries is not None and run.n_queries > max_queries:
            rows = np.sort(np.random.default_rng(seed).choice(run.n_queries, max_queries, replace=False))
        r = true_label_ranks(run, rows)
        hit = _in_topk(per_query_metrics(run, k)["labels"], r["row"], r["label"])
        run._cache[key] = (r["rank"][~hit], len(r["rank"]), run.n_queries if rows is None else len(rows))
    return run._cache[key][0]


def miss_rank_summary(run: InspectionRun, k: int = 5, max_queries: int | None = 5000, seed: int = 0) -> dict[str, float]:
    """How far the true labels missed by the top k are: their median rank and the share
    of them within the top 10 / 100 (over :func:`missed_ranks`' queries)."""
    missed = missed_ranks(run, k, max_queries, seed)
    _, n_pairs, n_queries = run._cache[("missed", int(k), max_queries, seed)]
    rankable = missed[missed > 0]
    return {"rank_queries": int(n_queries), "true_pairs": int(n_pairs), "missed_pairs": int(len(missed)),
            "missed_filtered": int((missed < 0).sum()),
            "missed_median_rank": float(np.median(rankable)) if len(rankable) else float("nan"),
            "missed_within_10_pct": float(100 * np.mean(rankable <= 10)) if len(rankable) else float("nan"),
            "missed_within_100_pct": float(100 * np.mean(rankable <= 100)) if len(rankable) else float("nan")}


def _in_topk(topk_labels: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (topk_labels[rows] == labels[:, None]).any(1)


# --------------------------------------------------------------------------- one query


def query_details(run: InspectionRun, item: int, k: int = 5) -> dict[str, Any]:
    """Everything shown for one test query (a dataset test row) of one run: its title,
    P@k, the top k (label item, title, score, hit) and the missed true labels (label item,
    title, rank, ties, score; best rank first; rank -1 = filtered pair)."""
    pos = int(run.positions([item])[0])
    pq = per_query_metrics(run, k)
    r = true_label_ranks(run, rows=[pos])
    top = []
    for j, lab in enumerate(pq["labels"][pos]):
        if lab >= run.n_labels:
            continue
        top.append({"label": int(run.items_lbl[lab]), "title": run.title("lbl", run.items_lbl[lab]),
                    "score": float(pq["scores"][pos, j]), "hit": bool(pq["hits"][pos, j]), "rank": j + 1})
    hit = np.isin(r["label"], pq["labels"][pos])
    missed = [{"label": int(run.items_lbl[lab]), "title": run.title("lbl", run.items_lbl[lab]),
               "rank": int(rk), "ties": int(ti), "score": float(sc)}
              for lab, rk, ti, sc in zip(r["label"][~hit], r["rank"][~hit], r["ties"][~hit], r["score"][~hit])]
    missed.sort(key=lambda d: (d["rank"] < 0, d["rank"]))
    return {"run": run.name, "item": int(item), "position": pos, "title": run.title("tst", item),
            "P@k": float(pq["P@k"][pos]), "k": k, "n_true": int(pq["n_true"][pos]), "top": top, "missed": missed}


# --------------------------------------------------------------------------- selection


def find_queries(run: InspectionRun, text: str, limit: int | None = None) -> np.ndarray:
    """Dataset test rows (evaluated by the run, ascending) whose title contains ``text``,
    case-insensitively; every evaluated query for an empty text."""
    items = np.sort(run.items_tst)
    needle = (text or "").strip().casefold()
    if needle:
        if run.data._folded is None:
            run.data._folded = [t.casefold() for t in run.data.titles["tst"]]
        folded = run.data._folded
        items = np.array([i for i in items if needle in folded[i]], dtype=np.int64)
    return items[:limit] if limit is not None else items


def _ranked(run: InspectionRun, k: int, worst: bool, n: int | None) -> np.ndarray:
    p = per_query_metrics(run, k)["P@k"]
    # worst: lowest P@k first, then queries with more true labels (more to miss); best: highest
    # P@k first, then fewer true labels; finally the dataset row, so the order is deterministic
    n_true = per_query_metrics(run, k)["n_true"]
    order = np.lexsort((run.items_tst, -n_true if worst else n_true, p if worst else -p))
    return run.items_tst[order][:n]


def worst_queries(run: InspectionRun, n: int | None = 10, k: int = 5) -> np.ndarray:
    """Dataset test rows of the ``n`` queries with the lowest P@k (ties: more true labels first)."""
    return _ranked(run, k, True, n)


def best_queries(run: InspectionRun, n: int | None = 10, k: int = 5) -> np.ndarray:
    """Dataset test rows of the ``n`` queries with the highest P@k (ties: fewer true labels first)."""
    return _ranked(run, k, False, n)


@dataclass
class RunPair:
    """Two runs on their common test queries: ``diff = P@k(a) - P@k(b)`` per query."""

    a: InspectionRun
    b: InspectionRun
    k: int
    items: np.ndarray  # common dataset test rows, ascending
    pos_a: np.ndarray
    pos_b: np.ndarray
    p_a: np.ndarray
    p_b: np.ndarray

    @property
    def diff(self) -> np.ndarray:
        return self.p_a - self.p_b

    def helped(self, n: int | None = 10) -> np.ndarray:
        """Common items where ``a`` beats ``b`` most (largest difference first; ties by row).
        Only strictly positive differences."""
        d = self.diff
        order = np.lexsort((self.items, -d))
        order = order[d[order] > 0]
        return self.items[order][:n]

    def hurt(self, n: int | None = 10) -> np.ndarray:
        """Common items where ``a`` loses most to ``b`` (most negative first). Only strictly negative."""
        d = self.diff
        order = np.lexsort((self.items, d))
        order = order[d[order] < 0]
        return self.items[order][:n]

    def sorted_items(self, descending: bool = True) -> np.ndarray:
        """Every common item by difference (ties by row)."""
        d = self.diff
        return self.items[np.lexsort((self.items, -d if descending else d))]

    def summary(self) -> dict[str, Any]:
        d = self.diff
        n = max(len(d), 1)
        return {"a": self.a.name, "b": self.b.name, "k": self.k, "n_common": int(len(d)),
                f"P@{self.k}_a": float(self.p_a.mean()) if len(d) else float("nan"),
                f"P@{self.k}_b": float(self.p_b.mean()) if len(d) else float("nan"),
                "mean_diff": float(d.mean()) if len(d) else float("nan"),
                "helped_frac": float((d > 0).sum() / n), "hurt_frac": float((d < 0).sum() / n),
                "tie_frac": float((d == 0).sum() / n)}


def pair_runs(a: InspectionRun, b: InspectionRun, k: int = 5) -> RunPair:
    """Pair two runs on the test queries both evaluated (the intersection of their items)."""
    if a.data is not b.data and (a.data.n_labels != b.data.n_labels or a.data.n_test != b.data.n_test
                                 or a.data.titles["lbl"] != b.data.titles["lbl"]):
        raise ValueError(f"runs {a.name!r} ({a.data.path}) and {b.name!r} ({b.data.path}) are on different datasets")
    items = np.intersect1d(a.items_tst, b.items_tst)
    if len(items) == 0:
        raise ValueError(f"runs {a.name!r} and {b.name!r} evaluated no test query in common")
    pa, pb = a.positions(items), b.positions(items)
    return RunPair(a, b, k, items, pa, pb, per_query_metrics(a, k)["P@k"][pa], per_query_metrics(b, k)["P@k"][pb])


def choose_static_queries(source: InspectionRun | RunPair, n: int = 6, k: int = 5, fixed: Sequence[int] | None = None,
                          seed: int = 0) -> list[tuple[str, int]]:
    """A handful of (reason, test item) pairs to draw in a static report: for a pair, the
    ``n // 3`` queries ``a`` helped most, the ``n // 3`` it hurt most (fewer when there are
    fewer), then ``fixed`` items or seeded random common ones up to ``n``; for one run,
    worst and best by P@k then fixed/random. No item twice."""
    chosen: list[tuple[str, int]] = []
    seen: set[int] = set()

    def add(reason, items, limit):
        for it in items:
            if limit <= 0:
                break
            if int(it) not in seen:
                chosen.append((reason, int(it)))
                seen.add(int(it))
                limit -= 1

    third = n // 3
    if isinstance(source, RunPair):
        add(f"{source.a.name} beats {source.b.name}", source.helped(None), third)
        add(f"{source.b.name} beats {source.a.name}", source.hurt(None), third)
        pool = source.items
    else:
        add(f"worst P@{k}", worst_queries(source, None, k), third)
        add(f"best P@{k}", best_queries(source, None, k), third)
        pool = np.sort(source.items_tst)
    if fixed:
        bad = [int(i) for i in fixed if int(i) not in set(pool.tolist())]
        if bad:
            raise ValueError(f"static queries {bad} are not among the evaluated test queries")
        add("chosen", fixed, n - len(chosen))
    if len(chosen) < n:
        rest = np.array([i for i in pool if int(i) not in seen], dtype=np.int64)
        pick = np.random.default_rng(seed).permutation(len(rest))[: n - len(chosen)]
        add("random", np.sort(rest[pick]), n - len(chosen))
    return chosen


# --------------------------------------------------------------------------- projection


@dataclass
class Projection:
    """2-D coordinates of a sample of label and query embeddings."""

    xy: np.ndarray  # (n, 2)
    split: np.ndarray  # "lbl" / "tst" per point
    items: np.ndarray  # dataset rows per point
    titles: list[str]
    method: str
    explained: np.ndarray | None = None  # PCA: variance ratio of the two axes
    data_dir: Path | None = None


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it, BLAS keeps its thread count
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Xc = (X - X.mean(0, keepdims=True)).astype(np.float64)
    with _one_blas_thread():  # small LAPACK calls: threads only add contention on a busy CPU
        if Xc.shape[0] > Xc.shape[1]:
            # SVD of the small d x d covariance: the same axes as the n x d SVD, much cheaper
            _, var, vt = np.linalg.svd(Xc.T @ Xc)
        else:
            _, s, vt = np.linalg.svd(Xc, full_matrices=False)
            var = s ** 2
    comps = vt[:2]
    # sign convention: the largest loading of each axis is positive (SVD signs are arbitrary)
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    xy = Xc @ comps.T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return xy.astype(np.float32), (var[:2] / max(var.sum(), 1e-30))


def project_embeddings(run: InspectionRun, max_points: int = 3000, seed: int = 0, method: str = "pca",
                       include: Sequence[str] = ("lbl", "tst")) -> Projection:
    """Project a seeded sample (at most ``max_points``, split between labels and queries in
    proportion to their numbers) of the run's embeddings to 2-D. ``method``: ``pca`` (numpy
    SVD; deterministic), ``umap`` (needs ``umap-learn``) or ``tsne`` (needs scikit-learn)."""
    method = method.lower()
    if method not in ("pca", "umap", "tsne"):
        raise ValueError(f"method must be pca, umap or tsne, not {method!r}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    embs = {"lbl": (run.emb_lbl, run.items_lbl), "tst": (run.emb_tst, run.items_tst)}
    unknown = set(include) - set(embs)
    if unknown or not include:
        raise ValueError(f"include must name lbl and/or tst, got {list(include)}")
    total = sum(len(embs[s][0]) for s in include)
    rng = np.random.default_rng(seed)
    X, split, items = [], [], []
    for j, s in enumerate(include):
        E, it = embs[s]
        if total <= max_points:
            take = np.arange(len(E))
        else:
            quota = (max_points - sum(len(x) for x in X)) if j == len(include) - 1 else round(max_points * len(E) / total)
            take = np.sort(rng.choice(len(E), min(len(E), quota), replace=False))
        X.append(E[take])
        split += [s] * len(take)
        items.append(it[take])
    X = np.concatenate(X).astype(np.float32)
    items = np.concatenate(items)
    split = np.array(split)
    explained = None
    if method == "pca":
        xy, explained = _pca_2d(X)
    elif method == "umap":
        try:
            import umap  # type: ignore
        except ImportError:
            raise ImportError("method='umap' needs the umap-learn package (not a workbench dependency); use 'pca'") from None
        xy = umap.UMAP(n_components=2, random_state=seed).fit_transform(X).astype(np.float32)
    else:
        try:
            from sklearn.manifold import TSNE  # type: ignore
        except ImportError:
            raise ImportError("method='tsne' needs scikit-learn (not a workbench dependency); use 'pca'") from None
        xy = TSNE(n_components=2, random_state=seed, init="pca").fit_transform(X).astype(np.float32)
    titles = [run.title(s, i) for s, i in zip(split, items)]
    return Projection(xy, split, items, titles, method, explained, run.data.path)


def point_attribute(proj: Projection, column: str, data_dir: str | Path | None = None) -> np.ndarray:
    """The value of attribute ``column`` for every projected point, from
    ``<data_dir>/<split>_attributes.csv`` (the demo datasets have them). A missing file or
    column is a clear error (the message lists the columns there are)."""
    from .analysis import read_attributes

    data_dir = Path(data_dir or proj.data_dir)
    out = np.empty(len(proj.items), dtype=object)
    for s in np.unique(proj.split):
        path = data_dir / f"{s}_attributes.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no attribute table to colour by {column!r}")
        attrs = read_attributes(path)
        if column not in attrs:
            raise KeyError(f"{path}: no column {column!r}; columns: {', '.join(attrs)}")
        vals = attrs[column]
        sel = proj.split == s
        if proj.items[sel].max(initial=-1) >= len(vals):
            raise DataFormatError(path, f"{len(vals)} rows, fewer than the {s} items")
        out[sel] = vals[proj.items[sel]]
    return out.astype(str)


def _categories(values: np.ndarray | None, max_categories: int) -> tuple[np.ndarray, list[str]]:
    if values is None:
        return np.zeros(0, str), []
    vals, counts = np.unique(values, return_counts=True)
    keep = list(vals[np.argsort(-counts, kind="stable")][:max_categories])
    if len(vals) > max_categories:
        values = np.where(np.isin(values, keep), values, "other")
        keep.append("other")
    return np.asarray(values), [str(v) for v in keep]


_NAMED = {"black": "#222222", "white": "#dddddd", "grey": "#888888", "gray": "#888888", "silver": "#b0b0b0",
          "red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "yellow": "#e6c619", "orange": "#ff7f0e",
          "purple": "#9467bd", "pink": "#e377c2", "brown": "#8c564b", "beige": "#d8c9a3", "navy": "#1b2a6b",
          "teal": "#17becf", "gold": "#c9a227", "cyan": "#17becf", "other": "#cccccc"}


def _palette(cats: list[str]) -> dict[str, str]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    named = all(c in _NAMED for c in cats)
    return {c: (_NAMED[c] if named else ("#cccccc" if c == "other" else matplotlib.colors.to_hex(cmap(i % 20))))
            for i, c in enumerate(cats)}


def plot_embedding_map(proj: Projection, colour: np.ndarray | None = None, colour_name: str = "", ax=None,
                       max_categories: int = 12, title: str | None = None):
    """Static scatter of a :class:`Projection`: labels as dots, queries as crosses, coloured
    by a categorical attribute (most frequent ``max_categories``, the rest "other")."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6))
    values, cats = _categories(colour, max_categories)
    pal = _palette(cats) if cats else {}
    markers = {"lbl": ("o", 10, "labels"), "tst": ("x", 14, "queries")}
    for s, (mk, size, _) in markers.items():
        sel = proj.split == s
        if not sel.any():
            continue
        c = [pal[v] for v in values[sel]] if cats else ("#1f77b4" if s == "lbl" else "#d62728")
        ax.scatter(proj.xy[sel, 0], proj.xy[sel, 1], s=size, marker=mk, c=c, alpha=0.6, linewidths=0.8 if mk == "x" else 0)
    handles = [Line2D([], [], marker=m, ls="", color="#444444", label=lab) for s, (m, _, lab) in markers.items()
               if (proj.split == s).any()]
    handles += [Line2D([], [], marker="s", ls="", color=pal[c], label=c) for c in cats]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              title=colour_name or None)
    axis = "PC" if proj.method == "pca" else proj.method.upper()
    def lab(i):
        share = f" ({100 * proj.explained[i]:.1f}%)" if proj.explained is not None else ""
        return f"{axis}{i + 1}{share}"

    ax.set(xlabel=lab(0), ylabel=lab(1), title=title or f"Embedding map ({len(proj.items)} points)")
    ax.grid(alpha=0.2)
    return ax


def embedding_map_plotly(proj: Projection, colour: np.ndarray | None = None, colour_name: str = "",
                         max_categories: int = 12, title: str | None = None):
    """Interactive plotly scatter of a :class:`Projection`, titles on hover."""
    import plotly.graph_objects as go

    values, cats = _categories(colour, max_categories)
    pal = _palette(cats) if cats else {}
    fig = go.Figure()
    for s, (symbol, name) in {"lbl": ("circle", "label"), "tst": ("x", "query")}.items():
        for c in (cats or [None]):
            sel = (proj.split == s) & ((values == c) if c is not None else True)
            if not np.any(sel):
                continue
            idx = np.flatnonzero(sel)
            extra = (lambda i: f"<br>{colour_name}: {values[i]}") if c is not None else (lambda i: "")
            text = [f"{name} {proj.items[i]}: {proj.titles[i]}{extra(i)}" for i in idx]
            fig.add_trace(go.Scattergl(
                x=proj.xy[idx, 0], y=proj.xy[idx, 1], mode="markers", name=f"{name}s" + (f" · {c}" if c else ""),
                legendgroup=str(c), hovertext=text, hoverinfo="text",
                marker=dict(symbol=symbol, size=5 if s == "lbl" else 7, opacity=0.7,
                            color=pal.get(c, "#1f77b4" if s == "lbl" else "#d62728"))))
    fig.update_layout(title=title or f"Embedding map ({proj.method}, {len(proj.items)} points)"
                      + (f", coloured by {colour_name}" if colour_name else ""),
                      width=850, height=620, template="plotly_white", legend=dict(font=dict(size=10)))
    return fig


# --------------------------------------------------------------------------- images and drawing


class ItemImages:
    """First images of test queries and labels, read lazily from the dataset's ``.bin``
    files (``open_image_source``); a dataset without images gives none (placeholders)."""

    def __init__(self, data_dir: str | Path, max_per_item: int = 3):
        self.data_dir = Path(data_dir)
        self.max_per_item = max_per_item
        self._sources: dict[str, Any] = {}

    def source(self, split: str):
        if split not in self._sources:
            from .image_sources import open_image_source

            try:
                self._sources[split] = open_image_source(self.data_dir, split)
            except FileNotFoundError as e:
                log.warning("no images for %s: %s", split, e)
                self._sources[split] = None
        return self._sources[split]

    def get(self, split: str, item: int, n: int | None = None) -> list:
        src = self.source(split)
        if src is None or item >= src.n_items:
            return []
        rows = [int(j) for j in src.image_map[int(item)] if j >= 0][: n or self.max_per_item]
        out = []
        for j in rows:
            try:
                out.append(src.load(j))
            except Exception as e:  # noqa: BLE001 - a corrupt image is shown as missing
                log.warning("%s image %d of item %d unreadable: %s", split, j, item, e)
        return out


def _tile(ax, img, caption: str, head: str = "", colour: str | None = None, width: int = 22):
    ax.set_xticks([])
    ax.set_yticks([])
    if img is not None:
        ax.imshow(img)
    else:
        ax.imshow(np.full((8, 8, 3), 235, np.uint8))
        ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7, color="#777777", transform=ax.transAxes)
    for sp_ in ax.spines.values():
        sp_.set_color(colour or "#bbbbbb")
        sp_.set_linewidth(3 if colour else 0.8)
    if head:
        ax.set_title(head, fontsize=8, color=colour or "black", pad=3)
    ax.set_xlabel("\n".join(textwrap.wrap(caption, width)[:3]), fontsize=7)


def _blank(ax):
    ax.axis("off")


def plot_query(runs: InspectionRun | Sequence[InspectionRun], item: int, k: int = 5, images: ItemImages | None = None,
               max_missed: int = 5, note: str = "", fig=None):
    """One test query (dataset row ``item``) in one or more runs: the query title and
    images, then per run its top ``k`` labels (image, title, score; green = true label, red
    = not) and the true labels it missed with their exact rank among all labels."""
    import matplotlib.pyplot as plt

    runs = [runs] if isinstance(runs, InspectionRun) else list(runs)
    if not runs:
        raise ValueError("no run to draw")
    details = [query_details(r, item, k) for r in runs]
    ncol = max(k, max_missed, 4)
    nrow = 1 + 2 * len(runs)
    if fig is None:
        fig = plt.figure(figsize=(1.6 * ncol + 1.0, 2.05 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    q_imgs = images.get("tst", item) if images is not None else []
    for c in range(ncol):
        if c < max(1, len(q_imgs)) and c < 3:
            _tile(axes[0, c], q_imgs[c] if c < len(q_imgs) else None, "", colour="#333333")
        else:
            _blank(axes[0, c])
    axes[0, 0].set_ylabel(f"query {item}", fontsize=9)
    text_at = min(max(1, len(q_imgs)), 3)
    if text_at < ncol:
        d0 = details[0]
        ptxt = "   ".join(f"{d['run']}: P@{k} {d['P@k']:.0f}" for d in details)
        axes[0, text_at].text(0.0, 0.5, "\n".join(textwrap.wrap(d0["title"], 70)[:3]) +
                              f"\n\n{d0['n_true']} true label(s)   {ptxt}",
                              transform=axes[0, text_at].transAxes, fontsize=10, va="center", ha="left")
    for r, d in enumerate(details):
        top_row, miss_row = 1 + 2 * r, 2 + 2 * r
        for c in range(ncol):
            if c < len(d["top"]):
                t = d["top"][c]
                img = (images.get("lbl", t["label"], 1) or [None])[0] if images is not None else None
                mark = "\u2713" if t["hit"] else "\u2717"
                _tile(axes[top_row, c], img, t["title"], f"{mark} #{t['rank']}  {t['score']:.3f}",
                      "#2ca02c" if t["hit"] else "#d62728")
            else:
                _blank(axes[top_row, c])
        axes[top_row, 0].set_ylabel(f"{d['run']}\ntop {k} · P@{k} {d['P@k']:.0f}", fontsize=9)
        shown = d["missed"][:max_missed]
        for c in range(ncol):
            if c < len(shown):
                m = shown[c]
                img = (images.get("lbl", m["label"], 1) or [None])[0] if images is not None else None
                rank = f"{m['rank']}-{m['rank'] + m['ties']}" if m["ties"] else str(m["rank"])
                head = f"rank {rank}  {m['score']:.3f}" if m["rank"] > 0 else "filtered pair"
                _tile(axes[miss_row, c], img, m["title"], head, "#ff7f0e")
            else:
                _blank(axes[miss_row, c])
        if shown:
            axes[miss_row, 0].set_ylabel(f"{d['run']}\nmissed ({len(d['missed'])})", fontsize=9)
            if len(d["missed"]) > len(shown):
                axes[miss_row, len(shown) - 1].text(1.05, 0.5, f"+{len(d['missed']) - len(shown)} more",
                                                    transform=axes[miss_row, len(shown) - 1].transAxes, fontsize=8)
        else:
            axes[miss_row, 0].text(0.0, 0.5, f"{d['run']}: every true label is in the top {k}" if d["n_true"]
                                   else f"{d['run']}: this query has no true label", transform=axes[miss_row, 0].transAxes,
                                   fontsize=9, va="center")
    fig.suptitle(f"Test query {item}" + (f" — {note}" if note else ""), fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - 0.35 / nrow, bottom=0.05, hspace=0.6, wspace=0.12)
    return fig


# --------------------------------------------------------------------------- summaries


def inspection_summary(runs: dict[str, InspectionRun] | Sequence[InspectionRun], pair: RunPair | None = None,
                       k: int = 5, max_rank_queries: int | None = 5000, seed: int = 0) -> dict[str, Any]:
    """Numbers for a report: per run its P@k recomputed per query (and as reported in
    ``metrics.json``) and where its missed true labels rank; with a pair, where the first
    run beats / loses to / ties with the second."""
    runs = list(runs.values()) if isinstance(runs, dict) else list(runs)
    out: dict[str, Any] = {"k": k, "runs": {}}
    for r in runs:
        pq = per_query_metrics(r, k)
        out["runs"][r.name] = {"queries": r.n_queries, "use_images": r.use_images,
                               f"P@{k}": float(pq["P@k"].mean()),
                               f"P@{k}_reported": r.summary.get("final", {}).get(f"P@{k}"),
                               "queries_with_no_hit_pct": float(100 * np.mean(~pq["hits"].any(1))),
                               **miss_rank_summary(r, k, max_rank_queries, seed)}
    if pair is not None:
        out["pair"] = pair.summary()
    return out


def plot_pair_differences(pair: RunPair, ax=None):
    """Histogram of the per-query differences P@k(a) - P@k(b) on the common queries."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    d = pair.diff
    step = 100 / pair.k
    edges = np.arange(-100 - step / 2, 100 + step, step)
    counts, _ = np.histogram(d, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    colours = ["#2ca02c" if c > 0 else "#d62728" if c < 0 else "#999999" for c in centres]
    ax.bar(centres, 100 * counts / max(len(d), 1), width=step * 0.85, color=colours)
    lo, hi = (d.min(), d.max()) if len(d) else (-step, step)
    ax.set_xlim(min(lo, -step) - step, max(hi, step) + step)
    s = pair.summary()
    ax.set(xlabel=f"P@{pair.k}({pair.a.name}) - P@{pair.k}({pair.b.name})", ylabel="% of queries",
           title=f"{pair.a.name} better on {100 * s['helped_frac']:.1f}%, worse on {100 * s['hurt_frac']:.1f}%, "
                 f"tie on {100 * s['tie_frac']:.1f}% of {s['n_common']} queries")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_missed_ranks(runs: dict[str, InspectionRun] | Sequence[InspectionRun], k: int = 5, ax=None,
                      max_queries: int | None = 5000, seed: int = 0):
    """Cumulative share of the missed true labels found within rank r (log scale), per run
    (:func:`missed_ranks`)."""
    import matplotlib.pyplot as plt

    runs = list(runs.values()) if isinstance(runs, dict) else list(runs)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    for r in runs:
        missed = missed_ranks(r, k, max_queries, seed)
        missed = np.sort(missed[missed > 0])
        if len(missed):
            ax.step(missed, np.arange(1, len(missed) + 1) / len(missed) * 100, where="post",
                    label=f"{r.name} ({len(missed)} missed)")
    ax.set_xscale("log")
    ax.set(xlabel="exact rank among all labels (tied scores: best case)", ylabel="% of missed true labels", ylim=(0, 101),
           title=f"Where the true labels missed by the top {k} rank")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


# --------------------------------------------------------------------------- widget


class QueryBrowser:
    """An ipywidgets browser over the test queries of one or two runs.

    Controls: an order toggle (by row, worst / best P@k of the first run, and with two runs
    where the first beats / loses to the second), a text box searching titles
    (case-insensitive), a slider and a dropdown over the resulting queries. The selected
    query is drawn with :func:`plot_query`, one output per run, side by side.
    Building it displays nothing; ``.widget`` is the box to display. Works headless
    (the callbacks only draw into ``Output`` widgets)."""

    ORDERS = ("by row", "worst P@k", "best P@k", "A beats B", "B beats A")

    def __init__(self, runs: Sequence[InspectionRun], k: int = 5, images: ItemImages | None = None,
                 max_options: int = 200, render: bool = True, figure_scale: float = 0.8):
        import ipywidgets as w

        self.runs = list(runs)[:2]
        if not self.runs:
            raise ValueError("QueryBrowser needs at least one run")
        self.k, self.images, self.max_options, self.scale = k, images, max_options, figure_scale
        self.pair = pair_runs(self.runs[0], self.runs[1], k) if len(self.runs) == 2 else None
        orders = [o.replace("P@k", f"P@{k}") for o in self.ORDERS[: 5 if self.pair else 3]]
        self.order = w.ToggleButtons(options=orders, value=orders[0], description="order")
        self.search = w.Text(value="", placeholder="search titles", description="search", continuous_update=False)
        self.slider = w.IntSlider(value=0, min=0, max=0, description="query #", continuous_update=False)
        self.dropdown = w.Dropdown(options=[], description="query", layout=w.Layout(width="70%"))
        self.status = w.HTML()
        self.outputs = [w.Output(layout=w.Layout(width=f"{100 // len(self.runs) - 1}%")) for _ in self.runs]
        self.candidates = np.zeros(0, np.int64)
        self._busy = False
        self.rendered: list[int] = []  # items drawn, newest last (for tests)
        self._render_enabled = render
        self.order.observe(self._on_filter, "value")
        self.search.observe(self._on_filter, "value")
        self.slider.observe(self._on_slider, "value")
        self.dropdown.observe(self._on_dropdown, "value")
        self.widget = w.VBox([w.HBox([self.order]), w.HBox([self.search, self.status]), self.slider, self.dropdown,
                              w.HBox(self.outputs)])
        self._on_filter()

    # the queries in the chosen order, restricted by the search
    def compute_candidates(self, order: str, text: str) -> np.ndarray:
        a = self.runs[0]
        base = self.pair.items if self.pair else np.sort(a.items_tst)
        if order.startswith("worst"):
            ranked = worst_queries(a, None, self.k)
        elif order.startswith("best"):
            ranked = best_queries(a, None, self.k)
        elif order == "A beats B":
            ranked = self.pair.sorted_items(descending=True)
        elif order == "B beats A":
            ranked = self.pair.sorted_items(descending=False)
        else:
            ranked = base
        if self.pair is not None:
            ranked = ranked[np.isin(ranked, base)]
        if text.strip():
            ranked = ranked[np.isin(ranked, find_queries(a, text))]
        return ranked

    def _label(self, item: int) -> str:
        ps = []
        for r in self.runs:
            pos = r.positions([item])[0]
            ps.append(f"{per_query_metrics(r, self.k)['P@k'][pos]:.0f}")
        return f"{item}: {self.runs[0].title('tst', item)[:70]}  (P@{self.k} {' / '.join(ps)})"

    def _on_filter(self, *_):
        self.candidates = self.compute_candidates(self.order.value, self.search.value)
        n = len(self.candidates)
        self.status.value = f"&nbsp;{n} queries" + ("" if self.pair is None else
                                                    f" · A = {self.runs[0].name}, B = {self.runs[1].name}")
        self._busy = True
        try:
            self.dropdown.options = [(self._label(i), int(i)) for i in self.candidates[: self.max_options]]
            self.slider.max = max(n - 1, 0)
            self.slider.value = 0
            self.dropdown.value = int(self.candidates[0]) if n else None
        finally:
            self._busy = False
        self.show(0)

    def _on_slider(self, change):
        if self._busy:
            return
        self._busy = True
        try:
            if change["new"] < min(len(self.candidates), self.max_options):
                self.dropdown.value = int(self.candidates[change["new"]])
        finally:
            self._busy = False
        self.show(change["new"])

    def _on_dropdown(self, change):
        if self._busy or change["new"] is None:
            return
        idx = int(np.flatnonzero(self.candidates == change["new"])[0])
        self._busy = True
        try:
            self.slider.value = idx
        finally:
            self._busy = False
        self.show(idx)

    def show(self, index: int) -> None:
        """Draw candidate ``index`` into the outputs (nothing when there are no candidates)."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        for out in self.outputs:
            out.clear_output(wait=True)
        if not len(self.candidates):
            with self.outputs[0]:
                print("no query matches")
            return
        item = int(self.candidates[min(index, len(self.candidates) - 1)])
        self.rendered.append(item)
        if not self._render_enabled:
            return
        for run, out in zip(self.runs, self.outputs):
            with out:
                fig = plot_query(run, item, self.k, self.images)
                fig.set_size_inches(fig.get_size_inches() * self.scale)
                display(fig)
                plt.close(fig)
