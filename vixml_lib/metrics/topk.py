"""Top-k selection in CSR score matrices, as pyxclib ranks: only stored entries are
candidates, ranked by score descending; a row with fewer than k stored entries is padded
with the pseudo-label ``n_labels`` (never relevant, propensity weight 0). Ties between
scores are broken arbitrarily (pyxclib's order depends on its sort too).

:func:`topk_positions` also gives, for recall cut-offs r, each row's r-th best score, so
that the top-r set (the entries reaching it) is known without sorting it.

Method: blocks of rows are laid out densely (a reshape when all rows have the same number
of entries, else -inf inserted at the end of the shorter rows), the k-th score of each
row is found with ``np.partition`` (much faster than ``argpartition``) and the entries
reaching it are sorted. Blocks keep the temporaries small (and in cache). Very unequal
rows go through one global sort instead.

Only numpy and scipy are imported here.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["topk_indices", "topk_positions", "labels_at", "as_csr", "row_ids", "PAD_FACTOR"]

# A padded dense (rows x max nnz) view of the scores is used when it is at most this many
# times larger than the number of stored entries; otherwise a sort-based path is used.
PAD_FACTOR = 4
# Rows are processed in blocks of about this many (padded) entries.
_BLOCK = 1 << 20


def row_ids(indptr: np.ndarray) -> np.ndarray:
    """(nnz,) int64 row of each stored entry of a CSR matrix with this ``indptr``."""
    n = len(indptr) - 1
    return np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))


def as_csr(X, what: str) -> sp.csr_matrix:
    """``X`` (any scipy sparse matrix) as CSR; ``TypeError`` naming ``what`` when it is not sparse."""
    if not sp.issparse(X):
        raise TypeError(f"{what} must be a scipy sparse matrix, got {type(X).__name__}")
    X = sp.csr_matrix(X)
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-D")
    return X


def topk_indices(pred, k: int) -> np.ndarray:
    """(n, k) int64 label indices of each row's k highest stored scores, best first;
    rows with fewer than k stored entries are padded with ``n_labels``."""
    pred = as_csr(pred, "pred")
    pos, _ = topk_positions(pred.indptr, pred.data, int(k))
    return labels_at(pred, pos)


def labels_at(X: sp.csr_matrix, pos: np.ndarray) -> np.ndarray:
    """Labels at CSR positions; position -1 (padding) -> n_labels."""
    labels = X.indices[np.maximum(pos, 0)].astype(np.int64)
    return np.where(pos >= 0, labels, X.shape[1])


def topk_positions(indptr, data, k: int, rs=()):
    """Top-k stored entries of each CSR row, by score descending.

    Returns ``pos``, (n, k) int64 positions into ``data`` (-1 = padding), and ``thr``, a dict
    giving for each r in ``rs`` an (n,) array: an entry of row i is among the row's top r
    iff its score is >= thr[r][i] (-inf where the row has at most r entries).
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    n = len(indptr) - 1
    pos = np.full((n, k), -1, dtype=np.int64)
    counts = np.diff(indptr)
    m = int(counts.max()) if n else 0
    thr = {r: np.full(n, -np.inf) for r in rs}
    if m == 0 or k == 0:
        return pos, thr
    nnz = int(indptr[-1] - indptr[0])
    if n * m - nnz > PAD_FACTOR * nnz + (1 << 16):
        vals = data[indptr[0]:indptr[-1]]
        if not np.issubdtype(vals.dtype, np.floating):
            vals = vals.astype(np.float64)
        return _topk_positions_sorted(indptr, vals, k, rs, pos, thr)
    step = max(1, _BLOCK // m)
    for a in range(0, n, step):
        b = min(n, a + step)
        _topk_block(indptr[a:b + 1], counts[a:b], data, k, rs, pos[a:b],
                    {r: t[a:b] for r, t in thr.items()})
    return pos, thr


def _topk_block(indptr, counts, data, k, rs, pos, thr) -> None:
    """:func:`topk_positions` for one block of rows; writes into ``pos`` and ``thr``."""
    n = counts.size
    m = int(counts.max())
    if m == 0:
        return
    lo, hi = int(indptr[0]), int(indptr[-1])
    vals_all = data[lo:hi]
    if not np.issubdtype(vals_all.dtype, np.floating):
        vals_all = vals_all.astype(np.float64)
    n_pads = n * m - (hi - lo)
    if n_pads == 0:
        D = vals_all.reshape(n, m)  # (n, m) scores
    else:  # -inf at the end of each short row
        at = np.repeat(indptr[1:] - lo, m - counts)
        D = np.insert(vals_all, at, -np.inf).reshape(n, m)
    kk = min(k, m)
    kth = _kth_scores(D, counts, kk, rs, thr)
    flat = np.flatnonzero(D >= kth[:, None])
    rr = flat // m
    cc = flat - rr * m
    if n_pads:
        real = cc < counts[rr]  # drop the padding
        flat, rr, cc = flat[real], rr[real], cc[real]
    if n_pads == 0 and flat.size == n * kk:
        # every row selected exactly kk entries: no ties at the k-th score
        top_pos = (flat + lo).reshape(n, kk)
        top_val = vals_all[flat].reshape(n, kk)
    else:
        top_val, top_pos = _top_with_ties(D, flat, rr, cc, counts, indptr, kk)
    order = np.argsort(-top_val, axis=1, kind="stable")  # NaN (padding) sorts last
    pos[:, :kk] = np.take_along_axis(top_pos, order, axis=1)
    small = {r for r in rs if 0 < r <= kk and r < m}
    if small:  # thresholds inside the top k: the r-th best score
        top_sorted = np.take_along_axis(top_val, order, axis=1)
        for r in small:
            t = top_sorted[:, r - 1].astype(np.float64)
            t[counts <= r] = -np.inf
            thr[r][:] = t


def _kth_scores(D: np.ndarray, counts: np.ndarray, kk: int, rs, thr) -> np.ndarray:
    """(n,) kk-th best score of each row of ``D`` (n, m); fills ``thr[r]`` for the recall
    cut-offs kk < r < m on the way (largest r first, each partition on the previous top part)."""
    m = D.shape[1]
    part = D
    width = m
    for r in sorted({r for r in rs if kk < r < m}, reverse=True):
        part = np.partition(part, width - r, axis=1)[:, width - r:]
        width = r
        t = part[:, 0].astype(np.float64)
        t[counts <= r] = -np.inf
        thr[r][:] = t
    return np.partition(part, width - kk, axis=1)[:, width - kk]


def _top_with_ties(D, flat, rr, cc, counts, indptr, kk):
    """(n, kk) scores and positions (NaN / -1 padded, unsorted) of each row's top entries,
    from the entries (flat index, row, column) that reach the row's kk-th score; rows with
    ties at that score are resolved by a stable sort of the row."""
    n, m = D.shape
    cnt = np.bincount(rr, minlength=n)
    tied = cnt != np.minimum(counts, kk)  # ties at the k-th score: resolved below
    any_tied = bool(tied.any())
    if any_tied:
        keep = ~tied[rr]
        flat, rr, cc = flat[keep], rr[keep], cc[keep]
        cnt[tied] = 0
    rank = np.arange(flat.size, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    top_val = np.full((n, kk), np.nan, dtype=D.dtype)
    top_pos = np.full((n, kk), -1, dtype=np.int64)
    top_val[rr, rank] = D.ravel()[flat]
    top_pos[rr, rank] = indptr[rr] + cc
    if any_tied:
        ti = np.flatnonzero(tied)
        valid = np.arange(m)[None, :] < counts[ti][:, None]
        sub = np.where(valid, -D[ti], np.nan)
        order = np.argsort(sub, axis=1, kind="stable")[:, :kk]
        ok = np.take_along_axis(valid, order, axis=1)
        tv = np.take_along_axis(D[ti], order, axis=1)
        tp = indptr[ti][:, None] + order
        tp[~ok] = -1
        tv[~ok] = np.nan
        top_val[ti] = tv
        top_pos[ti] = tp
    return top_val, top_pos


def _topk_positions_sorted(indptr, vals, k, rs, pos, thr):
    """Top-k by one global sort (rows of very unequal length)."""
    lo = int(indptr[0])
    rowid = row_ids(indptr)
    order = np.lexsort((-vals, rowid))
    rows_sorted = rowid[order]
    rank = np.arange(vals.size, dtype=np.int64) - (indptr[rows_sorted] - lo)
    take = rank < k
    pos[rows_sorted[take], rank[take]] = order[take] + lo
    for r in rs:
        if r > 0:
            at = rank == r - 1
            t = np.full(len(indptr) - 1, -np.inf)
            rows_r = rows_sorted[at]
            has_more = (indptr[rows_r + 1] - indptr[rows_r]) > r
            t[rows_r[has_more]] = vals[order[at]][has_more]
            thr[r] = t
    return pos, thr
