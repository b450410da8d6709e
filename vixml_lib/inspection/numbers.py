"""Per-query numbers of a loaded run (:class:`~vixml_lib.inspection.loading.InspectionRun`).

* :func:`per_query_metrics`: per-query P@k, hit flags of the top k (pyxclib's definitions,
  from the filtered predictions).
* :func:`true_label_ranks`: the exact rank of every true label among all labels, from the
  embeddings (filtered pairs excluded), vectorised in blocks.
* :func:`query_details`: everything shown for one test query (top k, missed true labels).
* :func:`missed_ranks` / :func:`miss_rank_summary`: where the true labels the top k missed
  rank; :func:`inspection_summary`: the numbers for a report, per run and for a pair.

Results are cached on the run (``run._cache``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .loading import InspectionRun, run_list

if TYPE_CHECKING:
    from .selection import RunPair


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
    from ..metrics import topk_indices

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


def miss_rank_summary(run: InspectionRun, k: int = 5, max_queries: int | None = 5000,
                      seed: int = 0) -> dict[str, float]:
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


def inspection_summary(runs: dict[str, InspectionRun] | Sequence[InspectionRun], pair: RunPair | None = None,
                       k: int = 5, max_rank_queries: int | None = 5000, seed: int = 0) -> dict[str, Any]:
    """Numbers for a report: per run its P@k recomputed per query (and as reported in its
    summary metrics) and where its missed true labels rank; with a pair, where the first
    run beats / loses to / ties with the second."""
    out: dict[str, Any] = {"k": k, "runs": {}}
    for r in run_list(runs):
        pq = per_query_metrics(r, k)
        out["runs"][r.name] = {"queries": r.n_queries, "use_images": r.use_images,
                               f"P@{k}": float(pq["P@k"].mean()),
                               f"P@{k}_reported": r.summary.get("final", {}).get(f"P@{k}"),
                               "queries_with_no_hit_pct": float(100 * np.mean(~pq["hits"].any(1))),
                               **miss_rank_summary(r, k, max_rank_queries, seed)}
    if pair is not None:
        out["pair"] = pair.summary()
    return out
