"""Extreme multi-label classification metrics, numerically identical to pyxclib.

The reference every XMC paper reports with is ``xclib.evaluation.xc_metrics`` of pyxclib
(K. Dahiya et al., https://github.com/kunaldahiya/pyxclib). This module reproduces its
definitions (with numpy/scipy only, vectorised, without numba), on the top k of each row
as :mod:`vixml_lib.metrics.topk` selects it:

* ``flags[i, j]`` = stored value of the true matrix at (i, topk[i, j]) (not binarised);
* P@k = mean over all rows of ``sum(flags[:, :k]) / k`` (rows without a true label count);
* nDCG@k = mean of ``DCG@k / min(IDCG(n_pos), sum_{j<k} 1/log2(j+2))`` with
  ``n_pos = int32(row sum of true values)``; stored as float32 as pyxclib does;
* inverse propensity (Jain, Prabhu & Varma, KDD 2016):
  ``w_l = 1 + (ln N - 1)(B + 1)^A (N_l + B)^-A`` with ``N_l`` the training frequency of
  label l (defaults A = 0.6, B = 2.6, the Amazon values);
* PSP@k = P@k of the weighted flags divided by P@k of the best achievable ranking (the
  row's true labels sorted by weight x value); PSnDCG@k likewise with nDCG (the
  normaliser ``n`` from the unweighted ``n_pos``); a ratio of means, not a mean of ratios;
* R@k = mean over rows of ``sum(flags[:, :k]) / row sum`` (rows with no label: denominator 1).

The reductions follow pyxclib's array shapes and dtypes so that the floating-point results
match bit for bit (float32 recall, float32 nDCG).

:func:`evaluate` computes everything from one top-k pass; :func:`evaluate_files` reads the
repository files (see :mod:`vixml_lib.data.formats`). Only numpy and scipy are imported.

R@r is reproduced as pyxclib's ``recall(X, Y, k=r)[r - 1]``: pyxclib reduces a float32
(n, r) array, whose last bits depend on r (e.g. its R@1 from ``k=1`` and from ``k=100``
can differ in the 7th digit); the top-r set is found without sorting it (hits whose score
reaches the row's r-th score). Stored duplicate predictions are summed (scipy's canonical
form) before ranking.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..data import formats
from ..errors import DataFormatError
from .topk import PAD_FACTOR, as_csr, labels_at, row_ids, topk_positions

__all__ = [
    "inverse_propensity", "precision", "ndcg", "psprecision", "psndcg",
    "recall", "evaluate", "evaluate_files", "inverse_propensity_from_file",
]


# ----------------------------------------------------------------------------- propensity
def inverse_propensity(train_Y, A: float = 0.6, B: float = 2.6) -> np.ndarray:
    """Inverse propensity weight of every label, from the training label matrix.

    ``w = 1 + C (freq + B)^-A`` with ``C = (ln N - 1)(B + 1)^A`` (Jain et al. 2016), as
    pyxclib's ``compute_inv_propesity`` computes it (same dtypes: the frequencies keep the
    matrix dtype, float32 for the repository files).
    """
    if not sp.issparse(train_Y):
        train_Y = sp.csr_matrix(np.asarray(train_Y))
    num_instances = train_Y.shape[0]
    freqs = np.ravel(np.asarray(train_Y.sum(axis=0)))
    C = (np.log(num_instances) - 1) * np.power(B + 1, A)
    return np.ravel(1.0 + C * np.power(freqs + B, -A))


# ----------------------------------------------------------------------------- setup
def _checked_pair(pred, true) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Both matrices as CSR, with the same shape (else a ValueError naming both shapes)."""
    pred = as_csr(pred, "pred")
    true = as_csr(true, "true")
    if pred.shape != true.shape:
        raise ValueError(
            f"shape mismatch: predictions have shape {pred.shape}, ground truth has "
            f"shape {true.shape}")
    return pred, true


class _Setup:
    """Inputs checked and put in the form the vectorised code needs, plus the (pred
    position -> true value) join, computed once."""

    def __init__(self, pred, true):
        pred, true = _checked_pair(pred, true)
        if pred.shape[0] == 0:
            raise ValueError("cannot evaluate an empty set of queries (0 rows)")
        if not pred.has_canonical_format:
            pred = pred.copy()
            pred.sum_duplicates()  # sorts the indices; duplicate entries are summed
        if not true.has_canonical_format:
            true = true.copy()
            true.sum_duplicates()
        if pred.nnz and np.issubdtype(pred.dtype, np.floating) and np.isnan(pred.data).any():
            raise ValueError("prediction scores contain NaN")
        self.pred, self.true = pred, true
        self.n, self.n_labels = true.shape
        self._hits = None

    def hits(self):
        """The predictions that are true labels: (sorted keys row * (n_labels + 1) + label,
        true values, rows, scores)."""
        if self._hits is None:
            self._hits = _join(self.pred, self.true)
        return self._hits

    def flags(self, labels: np.ndarray) -> np.ndarray:
        """True value at each top-k label (0 for padding and wrong predictions);
        ``labels`` as from :func:`labels_at` (padding = n_labels)."""
        keys, hv, _, _ = self.hits()
        if keys.size == 0:
            return np.zeros(labels.shape, dtype=self.true.dtype)
        q = np.arange(self.n, dtype=np.int64)[:, None] * (self.n_labels + 1) + labels
        idx = np.searchsorted(keys, q)
        np.minimum(idx, keys.size - 1, out=idx)
        return np.where(keys[idx] == q, hv[idx], 0).astype(self.true.dtype, copy=False)

    def row_sums(self) -> np.ndarray:
        """(n, 1) row sums of the true matrix, in its dtype (as scipy's .sum(axis=1))."""
        return np.asarray(self.true.sum(axis=1))

    def ndcg_norm(self, k: int) -> np.ndarray:
        total_pos = np.asarray(self.row_sums(), dtype=np.int32)
        max_pos = max(np.max(total_pos), k)
        cums = np.cumsum(1 / np.log2(np.arange(1, max_pos + 1) + 1))
        return cums[total_pos - 1]

    def ideal_flags(self, inv_psp: np.ndarray, k: int) -> np.ndarray:
        """Weighted flags of the best achievable propensity-scored ranking: each row's
        weight x value of its true labels, sorted descending, padded with 0."""
        true = self.true
        indptr = true.indptr.astype(np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        indptr = indptr - lo
        w = true.data[lo:hi].astype(np.float64) * inv_psp[true.indices[lo:hi]]
        counts = np.diff(indptr)
        m = int(counts.max())
        out = np.zeros((self.n, k), dtype=np.float64)
        if m == 0:
            return out
        kk = min(k, m)
        n_pads = self.n * m - true.nnz
        if n_pads <= PAD_FACTOR * true.nnz + (1 << 16):
            D = np.insert(-w, np.repeat(indptr[1:], m - counts), np.inf).reshape(self.n, m)
            if m > kk:
                D = np.partition(D, kk - 1, axis=1)[:, :kk]
            top = -np.sort(D, axis=1)
            top[np.isinf(top) & (top < 0)] = 0.0  # padding
            out[:, :kk] = top
        else:
            pos, _ = topk_positions(indptr, w, k)
            ok = pos >= 0
            out[ok] = w[pos[ok]]
        return out


def _join(pred: sp.csr_matrix, true: sp.csr_matrix):
    """The predictions that are true labels, as (sorted keys row * (n_labels + 1) + label, true
    values, rows, scores), from scipy's element-wise product (a C merge of the sorted
    rows) of the true pattern with the scores. Scores of exactly 0 would vanish from the
    product: then the product carries positions instead."""
    n, n_labels = true.shape
    if pred.nnz == 0 or true.nnz == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, np.zeros(0, dtype=true.dtype), e, np.zeros(0, dtype=np.float64)
    if pred.dtype in (np.float32, np.float64) and not np.any(pred.data == 0):
        carrier = pred
        by_position = False
    else:
        dt = np.int32 if pred.nnz < 2**31 - 1 else np.int64
        carrier = sp.csr_matrix(
            (np.arange(1, pred.nnz + 1, dtype=dt), pred.indices, pred.indptr),
            shape=pred.shape, copy=False)
        by_position = True
    pattern = sp.csr_matrix((np.ones(true.nnz, dtype=carrier.dtype), true.indices, true.indptr),
                            shape=true.shape, copy=False)
    both = sp.csr_matrix(pattern.multiply(carrier))
    both.sort_indices()
    rows = row_ids(both.indptr)
    keys = rows * (n_labels + 1) + both.indices  # stride n_labels + 1: padding never matches
    scores = pred.data[both.data.astype(np.int64) - 1] if by_position else both.data
    if np.all(true.data == 1):
        hit_val = np.ones(keys.size, dtype=true.dtype)
    else:  # look the hits' values up in the true matrix
        t_keys = row_ids(true.indptr) * (n_labels + 1) + true.indices
        hit_val = true.data[np.searchsorted(t_keys, keys)]
    return keys, hit_val, rows, scores


# ----------------------------------------------------------------------------- pyxclib's reductions
def _precision_from_flags(flags: np.ndarray, k: int) -> np.ndarray:
    deno = 1 / (np.arange(k) + 1)
    return np.ravel(np.mean(np.multiply(np.cumsum(flags, axis=-1), deno), axis=0))


def _ndcg_from_flags(flags: np.ndarray, norm: np.ndarray, k: int) -> np.ndarray:
    dcg = np.cumsum(np.multiply(flags, 1 / np.log2(np.arange(k) + 2)), axis=-1)
    out = np.zeros((1, k), dtype=np.float32)
    ideal = 0
    for j in range(k):
        ideal += 1 / np.log2(j + 1 + 1)
        out[0, j] = np.mean(np.multiply(dcg[:, j].reshape(-1, 1), 1 / np.minimum(norm, ideal)))
    return np.ravel(out)


def _recall_denominator(setup: _Setup) -> np.ndarray:
    deno = setup.row_sums()
    deno[deno == 0] = 1
    return 1 / deno


def _recall_from_flags(flags: np.ndarray, inv_deno: np.ndarray) -> np.ndarray:
    return np.ravel(np.mean(np.multiply(np.cumsum(flags, axis=-1), inv_deno), axis=0))


def _ext_weights(inv_psp, n_labels: int) -> np.ndarray:
    inv_psp = np.ravel(np.asarray(inv_psp, dtype=np.float64))
    if inv_psp.size != n_labels:
        raise ValueError(
            f"inv_psp has {inv_psp.size} weights but the matrices have {n_labels} labels")
    return np.hstack([inv_psp, np.zeros(1)])


def _topk_flags(setup: _Setup, k: int):
    """Top-k labels (padding = n_labels) and their flags."""
    pos, _ = topk_positions(setup.pred.indptr, setup.pred.data, k)
    labels = labels_at(setup.pred, pos)
    return labels, setup.flags(labels)


def _psp_from_flags(wflags: np.ndarray, ideal: np.ndarray, k: int) -> np.ndarray:
    """PSP@1..k: P@k of the weighted flags over P@k of the best achievable ones."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _precision_from_flags(wflags, k) / _precision_from_flags(ideal, k)


def _psndcg_from_flags(wflags: np.ndarray, ideal: np.ndarray, norm: np.ndarray, k: int) -> np.ndarray:
    """PSnDCG@1..k: nDCG@k of the weighted flags over nDCG@k of the best achievable ones."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _ndcg_from_flags(wflags, norm, k) / _ndcg_from_flags(ideal, norm, k)


# ----------------------------------------------------------------------------- public metrics
def precision(pred, true, k: int = 5) -> np.ndarray:
    """P@1..P@k (fractions)."""
    s = _Setup(pred, true)
    _, flags = _topk_flags(s, k)
    return _precision_from_flags(flags, k)


def ndcg(pred, true, k: int = 5) -> np.ndarray:
    """nDCG@1..nDCG@k (float32, as pyxclib)."""
    s = _Setup(pred, true)
    _, flags = _topk_flags(s, k)
    return _ndcg_from_flags(flags, s.ndcg_norm(k), k)


def psprecision(pred, true, inv_psp, k: int = 5) -> np.ndarray:
    """Propensity-scored PSP@1..PSP@k."""
    s = _Setup(pred, true)
    w = _ext_weights(inv_psp, s.n_labels)
    labels, flags = _topk_flags(s, k)
    return _psp_from_flags(np.multiply(w[labels], flags), s.ideal_flags(w, k), k)


def psndcg(pred, true, inv_psp, k: int = 5) -> np.ndarray:
    """Propensity-scored PSnDCG@1..PSnDCG@k (float32, as pyxclib)."""
    s = _Setup(pred, true)
    w = _ext_weights(inv_psp, s.n_labels)
    labels, flags = _topk_flags(s, k)
    return _psndcg_from_flags(np.multiply(w[labels], flags), s.ideal_flags(w, k), s.ndcg_norm(k), k)


def recall(pred, true, k: int = 5) -> np.ndarray:
    """R@1..R@k (float32, as pyxclib)."""
    s = _Setup(pred, true)
    _, flags = _topk_flags(s, k)
    return _recall_from_flags(flags, _recall_denominator(s))


def _recall_at(setup: _Setup, thr: np.ndarray, r: int, inv_deno: np.ndarray) -> float:
    """R@r only, without sorting the top r: the hits whose score reaches the row's r-th
    score. Reproduces pyxclib's float32 reduction of the (n, r) recall curve."""
    keys, hv, hrows, scores = setup.hits()
    n = setup.n
    num = np.zeros(n, dtype=setup.true.dtype)
    if keys.size:
        in_r = scores >= thr[hrows]
        num = np.bincount(hrows[in_r], weights=hv[in_r], minlength=n).astype(setup.true.dtype)
    col = np.multiply(num.reshape(-1, 1), inv_deno)  # (n, 1), dtype as pyxclib's product
    if r == 1:
        return float(np.mean(col, axis=0)[0])
    # numpy reduces axis 0 of an (n, r >= 2) array row by row; mirror that order
    two = np.zeros((n, 2), dtype=col.dtype)
    two[:, 0] = col[:, 0]
    return float(np.mean(two, axis=0)[0])


def evaluate(pred, true, inv_psp=None, k: int = 5, recall_k=(100,),
             filter_pairs=None) -> dict[str, float]:
    """All metrics, in percent: ``P@1..k``, ``nDCG@1..k``, with ``inv_psp`` also
    ``PSP@1..k`` and ``PSnDCG@1..k``, then ``R@r`` for each r in ``recall_k``.

    ``filter_pairs`` ((n, 2) row/label pairs, see :func:`formats.read_filter`) are removed
    from the predictions first. One top-k selection serves every metric.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    recall_k = tuple(int(r) for r in (recall_k or ()))
    if any(r < 1 for r in recall_k):
        raise ValueError(f"recall cut-offs must be >= 1, got {recall_k}")
    pred, true = _checked_pair(pred, true)
    if filter_pairs is not None and len(filter_pairs):
        pred = formats.apply_filter(pred, filter_pairs)
    s = _Setup(pred, true)
    w = None if inv_psp is None else _ext_weights(inv_psp, s.n_labels)

    pos, thr = topk_positions(s.pred.indptr, s.pred.data, k, rs=recall_k)
    labels = labels_at(s.pred, pos)
    flags = s.flags(labels)
    out: dict[str, float] = {}
    for j, v in enumerate(_precision_from_flags(flags, k)):
        out[f"P@{j + 1}"] = float(v) * 100
    norm = s.ndcg_norm(k)
    for j, v in enumerate(_ndcg_from_flags(flags, norm, k)):
        out[f"nDCG@{j + 1}"] = float(v) * 100
    if w is not None:
        wflags = np.multiply(w[labels], flags)
        ideal = s.ideal_flags(w, k)
        for j, v in enumerate(_psp_from_flags(wflags, ideal, k)):
            out[f"PSP@{j + 1}"] = float(v) * 100
        for j, v in enumerate(_psndcg_from_flags(wflags, ideal, norm, k)):
            out[f"PSnDCG@{j + 1}"] = float(v) * 100
    if recall_k:
        inv_deno = _recall_denominator(s)
        for r in recall_k:
            out[f"R@{r}"] = _recall_at(s, thr[r], r, inv_deno) * 100
    return out


def inverse_propensity_from_file(train_path: str | Path, A: float = 0.6, B: float = 2.6):
    """(number of labels, inverse propensity weights) of a training ``X_Y`` file."""
    train = formats.read_xy(train_path)
    return train.shape[1], inverse_propensity(train, A=A, B=B)


def evaluate_files(true_path: str | Path, pred_path: str | Path,
                   train_path: str | Path | None = None,
                   filter_path: str | Path | None = None, A: float = 0.6, B: float = 2.6,
                   k: int = 5, recall_k=(100,)) -> dict[str, float]:
    """:func:`evaluate` on repository files: ``true_path`` (``tst_X_Y.txt``), ``pred_path``
    (sparse ``.npz`` scores), optional ``train_path`` (``trn_X_Y.txt``; enables the
    propensity-scored metrics, its label count must match) and ``filter_path``."""
    from concurrent.futures import ThreadPoolExecutor

    # numpy and file reads release the GIL: the training file (the largest) is parsed in a
    # second thread while the ground truth, predictions and filter are read here
    with ThreadPoolExecutor(max_workers=1) as pool:
        train_job = None if train_path is None else pool.submit(
            lambda: inverse_propensity_from_file(train_path, A, B))
        true = formats.read_xy(true_path)
        pred = formats.read_predictions(pred_path)
        if pred.shape != true.shape:
            raise ValueError(
                f"shape mismatch: predictions {pred_path} have shape {pred.shape}, ground "
                f"truth {true_path} has shape {true.shape}")
        if filter_path is not None:
            pairs = formats.read_filter(filter_path, shape=true.shape)
            pred = formats.apply_filter(pred, pairs, copy=False)  # pred is ours: no copy
        inv_psp = None
        if train_job is not None:
            n_train_labels, inv_psp = train_job.result()
            if n_train_labels != true.shape[1]:
                raise DataFormatError(
                    train_path, f"header declares {n_train_labels} labels but "
                                f"{true.shape[1]} were expected (the labels of {true_path})",
                    line=1)
    return evaluate(pred, true, inv_psp=inv_psp, k=k, recall_k=recall_k)
