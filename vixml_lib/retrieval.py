"""Top-k label retrieval by maximum inner product search (MIPS).

Prediction in ViXML is MIPS of each (normalised) query embedding against all label
embeddings; the top-k labels form the prediction. Three pieces:

* :func:`exact_topk`: blocked matrix product + ``torch.topk`` on CPU or GPU. Labels stay
  resident on the device; queries stream through in blocks (and labels in blocks too
  when the score tile would be too big), so memory stays bounded for 10^6 labels.
  Filter-label pairs can be excluded before the top-k is taken.
* :func:`faiss_topk`: the same with FAISS (``IndexFlatIP`` exact, or ``IndexIVFFlat``
  approximate), CPU or GPU.
* :func:`topk_to_csr`: the ``[n, n_labels]`` sparse prediction matrix the metrics
  consume (``vixml_lib.metrics.evaluate``).

All functions return ``(scores float32 [n, k], indices int64 [n, k])`` numpy arrays with
each row sorted by decreasing score. Slots that hold no label (``k`` larger than the
number of labels left after exclusion, or FAISS IVF probing too few lists) have index
``-1`` and score ``-inf``; :func:`topk_to_csr` drops them.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from .blocked_topk import cpu_topk, default_cpu_blocks, torch_topk

__all__ = ["exact_topk", "faiss_topk", "topk_to_csr", "csr_to_topk", "as_exclude_csr"]


# --------------------------------------------------------------------------- helpers
def _to_numpy_f32(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [n, d] matrix, got shape {x.shape}")
    return x


def as_exclude_csr(exclude, n_rows: int, n_labels: int) -> sp.csr_matrix | None:
    """Normalise the ``exclude`` argument to a boolean ``[n_rows, n_labels]`` CSR matrix.

    Accepts ``None``; a scipy sparse matrix (its non-zero pattern); an int array of
    shape ``[P, 2]`` of ``(row, label)`` pairs (e.g. the filter-labels file as read by
    ``numpy.loadtxt``); or a ``(rows, labels)`` tuple of two equal-length arrays.
    Pairs outside the matrix raise ``ValueError``.
    """
    if exclude is None:
        return None
    if sp.issparse(exclude):
        m = sp.csr_matrix(exclude, dtype=bool)
        if m.shape != (n_rows, n_labels):
            raise ValueError(f"exclude matrix has shape {m.shape}, expected {(n_rows, n_labels)}")
        m.eliminate_zeros()
        return m
    if isinstance(exclude, tuple) and len(exclude) == 2:
        rows, cols = (np.asarray(a, dtype=np.int64).ravel() for a in exclude)
        if rows.shape != cols.shape:
            raise ValueError("exclude=(rows, labels) needs two arrays of equal length")
    else:
        pairs = np.asarray(exclude, dtype=np.int64)
        if pairs.size == 0:
            pairs = pairs.reshape(0, 2)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"exclude pairs must have shape [P, 2], got {pairs.shape}")
        rows, cols = pairs[:, 0], pairs[:, 1]
    bad = (rows < 0) | (rows >= n_rows) | (cols < 0) | (cols >= n_labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"exclude pair {i} = ({rows[i]}, {cols[i]}) lies outside the "
            f"{n_rows} x {n_labels} score matrix"
        )
    m = sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, cols)), shape=(n_rows, n_labels))
    m.sum_duplicates()
    return m


def _check_search(query_dim: int, label_dim: int, k: int) -> None:
    """Inputs every search shares: vectors of one dimension, k >= 1."""
    if query_dim != label_dim:
        raise ValueError(f"dimension mismatch: queries {query_dim}, labels {label_dim}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _auto_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- exact
def exact_topk(
    queries,
    labels,
    k: int,
    block_size: int | None = None,
    device=None,
    exclude=None,
    label_block_size: int | None = None,
    compute_dtype: torch.dtype | None = None,
    max_tile_elems: int = 1 << 27,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` labels by inner product, blocked, on CPU or GPU.

    Scores are ``queries @ labels.T`` (pass normalised vectors for cosine similarity),
    computed one tile of ``block_size`` queries x ``label_block_size`` labels at a time
    with a running top-``k`` per query, so memory stays bounded for 10^6 labels (kernels:
    :mod:`vixml_lib.blocked_topk`). On the CPU each tile is one BLAS GEMM into a reused
    buffer followed by a threshold filter (only scores above a query's current ``k``-th
    best are merged), as fast as FAISS ``IndexFlatIP`` (``benchmarks/bench_retrieval.py``).
    On a GPU the labels are moved to the device once and each tile goes through
    ``torch.topk``.

    Args:
        queries: ``[n, d]`` numpy array (a memory map is fine) or torch tensor (float32 /
            float16 / bfloat16).
        labels: ``[m, d]`` same. On the CPU, non-float32 labels are converted one tile at
            a time (no float32 copy of the whole matrix).
        k: labels per query; ``min(k, m)`` columns are returned.
        block_size: queries per block (default: CPU, a tile of about the last-level cache;
            GPU 4096).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (default: CUDA if available).
        exclude: (query row, label) pairs whose score is set to ``-inf`` *before* the
            top-k, so filtered labels never take a top-k slot (the XMC filter-labels
            convention). See :func:`as_exclude_csr` for the accepted forms.
        label_block_size: labels per tile (default: CPU ``max(8192, 4 k)``; GPU all the
            labels unless a tile would exceed ``max_tile_elems``).
        compute_dtype: dtype of the matrix product on GPU; default float32 (half inputs
            are upcast so that scores keep float32 resolution and ties stay rare).
            ``torch.bfloat16`` / ``torch.float16`` trade exactness for speed on GPU; the
            CPU always computes in float32.
        max_tile_elems: bound on the size of one GPU score tile (elements).

    Returns:
        ``(scores float32 [n, k'], indices int64 [n, k'])`` numpy arrays, ``k' = min(k,
        m)``, rows sorted by decreasing score. Slots left without a label (every
        remaining label excluded) have index ``-1`` and score ``-inf``. The order of
        exactly tied scores is unspecified.
    """
    q, lab = _as_matrix(queries, "queries"), _as_matrix(labels, "labels")
    _check_search(q.shape[1], lab.shape[1], k)
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n, m = q.shape[0], lab.shape[0]
    k_out = min(int(k), m)
    dev = _auto_device(device)
    excl = as_exclude_csr(exclude, n, m)
    scores_out = np.empty((n, k_out), dtype=np.float32)
    index_out = np.empty((n, k_out), dtype=np.int64)
    if n == 0 or m == 0:
        return scores_out, index_out
    if dev.type == "cpu":
        b, w = default_cpu_blocks(n, m, k_out)
        cpu_topk(q, lab, k_out, block_size or b, label_block_size or w, excl, scores_out, index_out)
        return scores_out, index_out
    block_size = block_size or 4096
    if label_block_size is None:
        label_block_size = max(k_out, max_tile_elems // max(1, min(block_size, n)))
    torch_topk(q, lab, k_out, block_size, label_block_size, excl, dev, compute_dtype or torch.float32,
               scores_out, index_out)
    return scores_out, index_out


def _as_matrix(x, name: str):
    """A 2-D float numpy array (memory maps kept as they are) or tensor; ints become float32."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
    elif not x.is_floating_point():
        x = x.float()
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [n, d] matrix, got shape {tuple(x.shape)}")
    return x


# --------------------------------------------------------------------------- faiss
def _faiss():
    try:
        import faiss  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "faiss is needed for faiss_topk: install faiss-cpu (pip install '.[cpu]') or "
            "faiss-gpu (conda)"
        ) from err
    return faiss


def faiss_topk(
    queries,
    labels,
    k: int,
    index: Literal["flat", "ivf"] = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    use_gpu: bool | None = None,
    exclude=None,
    seed: int = 0,
    max_train_points: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` labels by inner product with FAISS.

    Args:
        queries, labels: ``[n, d]`` / ``[m, d]`` arrays or tensors (converted to float32).
        k: labels per query (``min(k, m)`` returned).
        index: ``"flat"`` -- ``IndexFlatIP``, exact; ``"ivf"`` -- ``IndexIVFFlat`` with
            inner-product metric: ``nlist`` lists (default ``~4 sqrt(m)``) learned by
            k-means on the labels, ``nprobe`` lists searched per query (default
            ``max(1, nlist // 16)``). ``nprobe == nlist`` is exact.
        use_gpu: run on GPU; ``None`` = when the FAISS build has GPUs available
            (faiss-gpu limits ``k`` and ``nprobe`` to 2048).
        exclude: filter pairs as in :func:`exact_topk`. FAISS cannot mask inside the
            search, so each query fetches ``k +`` (its number of excluded labels) results
            and the excluded ones are dropped; the result matches exact search with
            ``exclude``.
        seed: k-means seed for the IVF training.
        max_train_points: subsample the labels to at most this many for IVF training
            (default: ``256 * nlist``, FAISS's own cap).

    Returns:
        ``(scores float32 [n, k'], indices int64 [n, k'])``; missing results (IVF with
        few probes) are index ``-1``, score ``-inf``.
    """
    faiss = _faiss()
    qx = _to_numpy_f32(queries, "queries")
    lx = _to_numpy_f32(labels, "labels")
    _check_search(qx.shape[1], lx.shape[1], k)
    n, d = qx.shape
    m = lx.shape[0]
    k_out = min(int(k), m)
    excl = as_exclude_csr(exclude, n, m)
    if n == 0 or m == 0:
        return np.empty((n, k_out), np.float32), np.empty((n, k_out), np.int64)

    search_index = _faiss_index(faiss, lx, index, nlist, nprobe, use_gpu, seed, max_train_points)
    extra = int(np.diff(excl.indptr).max()) if excl is not None and excl.nnz else 0
    dist, idx = search_index.search(qx, min(k_out + extra, m))
    return _drop_missing(dist.astype(np.float32, copy=False), idx.astype(np.int64, copy=False),
                         excl if extra else None, k_out)


def _faiss_index(faiss, lx: np.ndarray, index: str, nlist, nprobe, use_gpu, seed: int, max_train_points):
    """A FAISS inner-product index over the labels ``lx`` [m, d] (flat, or IVF trained on a
    sample), moved to the GPU when asked (or when ``use_gpu`` is None and one is there)."""
    m, d = lx.shape
    if index == "flat":
        cpu_index = faiss.IndexFlatIP(d)
    elif index == "ivf":
        nlist = int(nlist) if nlist else max(1, min(m, int(4 * np.sqrt(m))))
        if nlist > m:
            raise ValueError(f"nlist ({nlist}) cannot exceed the number of labels ({m})")
        quantizer = faiss.IndexFlatIP(d)
        cpu_index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        cpu_index.cp.seed = int(seed)
        cap = max_train_points if max_train_points is not None else 256 * nlist
        train = lx
        if m > cap:
            rs = np.random.default_rng(seed)
            train = lx[np.sort(rs.choice(m, size=cap, replace=False))]
        cpu_index.train(train)
        cpu_index.nprobe = int(nprobe) if nprobe else max(1, nlist // 16)
    else:
        raise ValueError(f"index must be 'flat' or 'ivf', got {index!r}")

    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    has_gpu = ngpu > 0 and hasattr(faiss, "StandardGpuResources")
    if use_gpu is None:
        use_gpu = has_gpu
    if not use_gpu:
        cpu_index.add(lx)
        return cpu_index
    if not has_gpu:
        raise RuntimeError("use_gpu=True but this FAISS build sees no GPU")
    search_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu_index)
    search_index.add(lx)
    if index == "ivf":
        if hasattr(faiss, "GpuParameterSpace"):
            faiss.GpuParameterSpace().set_index_parameter(search_index, "nprobe", cpu_index.nprobe)
        else:  # pragma: no cover
            search_index.nprobe = cpu_index.nprobe
    return search_index


def _drop_missing(dist: np.ndarray, idx: np.ndarray, excl: sp.csr_matrix | None, k: int):
    """Mark FAISS's empty slots and the excluded pairs as (-inf, -1), move them to the end
    of each row (stable: FAISS's order otherwise) and keep the first ``k`` columns."""
    missing = idx < 0
    if excl is not None:
        missing |= _is_excluded(excl, idx)
    dist = np.where(missing, np.float32(-np.inf), dist)
    idx = np.where(missing, -1, idx)
    if excl is not None or missing.any():
        o = np.argsort(missing, axis=1, kind="stable")
        dist = np.take_along_axis(dist, o, axis=1)
        idx = np.take_along_axis(idx, o, axis=1)
    return np.ascontiguousarray(dist[:, :k]), np.ascontiguousarray(idx[:, :k])


def _is_excluded(excl: sp.csr_matrix, idx: np.ndarray) -> np.ndarray:
    """Boolean mask: is ``(row, idx[row, j])`` a stored pair of ``excl``? (vectorised)."""
    m = excl.shape[1]
    excl = excl.tocsr()
    excl.sort_indices()
    ex_rows = np.repeat(np.arange(excl.shape[0], dtype=np.int64), np.diff(excl.indptr))
    ex_keys = ex_rows * m + excl.indices.astype(np.int64)  # sorted
    if ex_keys.size == 0:
        return np.zeros(idx.shape, dtype=bool)
    rows = np.arange(idx.shape[0], dtype=np.int64)[:, None]
    keys = rows * m + np.where(idx >= 0, idx, 0)
    pos = np.minimum(np.searchsorted(ex_keys, keys), ex_keys.size - 1)
    return (ex_keys[pos] == keys) & (idx >= 0)


# --------------------------------------------------------------------------- csr
def topk_to_csr(scores, indices, n_labels: int) -> sp.csr_matrix:
    """``[n, n_labels]`` float32 CSR prediction matrix from top-k scores and indices.

    Entry ``(i, indices[i, j])`` holds ``scores[i, j]``; slots with index ``< 0`` or a
    non-finite score are dropped. Scores are stored as they are (zero or negative scores
    are kept as explicit entries; do not call ``eliminate_zeros`` on the result if
    such scores matter). Duplicate indices in a row raise ``ValueError``.
    """
    s = np.asarray(scores, dtype=np.float32)
    i = np.asarray(indices, dtype=np.int64)
    if s.shape != i.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and indices {i.shape} must be equal 2-D shapes")
    n, k = s.shape
    if i.size and int(i.max()) >= n_labels:
        raise ValueError(f"label index {int(i.max())} >= n_labels ({n_labels})")
    keep = (i >= 0) & np.isfinite(s)
    counts = keep.sum(axis=1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    cols = i[keep]
    data = s[keep]
    m = sp.csr_matrix((data, cols, indptr), shape=(n, int(n_labels)))
    m.has_canonical_format = False
    before = m.nnz
    m.sum_duplicates()
    if m.nnz != before:
        raise ValueError("indices contain a label twice in the same row")
    # sum_duplicates sorted the column indices; the data stays the original scores
    return m


def csr_to_topk(pred: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`topk_to_csr`: each row's ``k`` highest stored entries.

    Rows with fewer than ``k`` entries are padded with index ``-1`` / score ``-inf``.
    """
    m = sp.csr_matrix(pred)
    n = m.shape[0]
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    index = np.full((n, k), -1, dtype=np.int64)
    counts = np.diff(m.indptr)
    if m.nnz == 0 or k == 0:
        return scores, index
    row = np.repeat(np.arange(n, dtype=np.int64), counts)
    # sort entries by (row, -score), then take the first k of each row
    order = np.lexsort((-m.data.astype(np.float64), row))
    # rows stay grouped as in the CSR layout, so position t of the sorted entries has
    # rank t - indptr[row] inside its row
    rank = np.arange(m.nnz, dtype=np.int64) - np.repeat(m.indptr[:-1], counts)
    sel = rank < k
    scores[row[sel], rank[sel]] = m.data[order][sel]
    index[row[sel], rank[sel]] = m.indices[order][sel]
    return scores, index
