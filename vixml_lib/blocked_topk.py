"""The blocked exact top-k kernels behind :func:`vixml_lib.retrieval.exact_topk`.

Both kernels walk the score matrix ``S = Q L^T`` ([n, m]) in tiles of ``b`` queries x
``w`` labels, so memory stays bounded for 10^6 labels, and keep a running top-``k`` per
query that equals the top-``k`` of the whole row when the last tile is done.

* :func:`cpu_topk` (CPU): one GEMM per tile into a preallocated float32 buffer, then a
  *threshold filter*: with ``t_i`` the query's current ``k``-th best score, only the
  entries ``S_ij > t_i`` can enter its top-``k``, and after the first tile these are few
  (for ``m`` labels seen so far, about ``k / m`` of a tile). The filter is one vectorised
  comparison and a ``flatnonzero``; the few survivors are merged with the running top-``k``
  by a small ``torch.topk`` over ``k + max survivors`` columns. A tile whose survivors are
  too many (the first one of each query block, where ``t_i = -inf``) takes the dense
  ``torch.topk`` instead. FAISS's ``IndexFlatIP`` does the same with a per-query heap
  (``faiss/utils/distances.cpp``); here every step is a numpy / torch array operation.
* :func:`torch_topk` (GPU, or CPU on request): ``torch.topk`` of each tile and a running
  merge, all on the device.

Labels need not be float32 or resident: a float16 array or memory map is converted one
label tile at a time into a reused float32 buffer (``O(w d)`` extra memory, not
``O(m d)``). Excluded (query, label) pairs are set to ``-inf`` in the tile before the
selection, so they never take a slot.

Both return ``(scores float32 [n, k], indices int64 [n, k])`` with rows sorted by
decreasing score and ``(-inf, -1)`` in slots that hold no label.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["cpu_topk", "torch_topk", "l3_cache_bytes", "default_cpu_blocks"]


def l3_cache_bytes(default: int = 32 << 20) -> int:
    """Size of the last-level CPU cache (Linux sysfs), or ``default`` when unknown."""
    best = 0
    for idx in range(8):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{idx}/"
        try:
            with open(base + "level") as f:
                level = int(f.read())
            with open(base + "size") as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        size = int(text.rstrip("KMG")) * mult
        if level >= 2 and size > best:
            best = size
    return best or default


def default_cpu_blocks(n: int, m: int, k: int) -> tuple[int, int]:
    """``(query block, label block)`` for :func:`cpu_topk`.

    Label block ``w = max(16384, 4 k)`` (capped at ``m``); query block ``b`` so that a
    score tile holds about twice the last-level cache, and at least 1024 queries: BLAS
    needs tiles of ~10^7 scores to run at full speed (on a 2-core EPYC with a 32 MiB L3,
    1024 x 16384 tiles ran ~1.4x faster than 512 x 8192 ones), and the tile is read
    once more by the threshold filter, right after the GEMM wrote it."""
    w = min(max(m, 1), max(16384, 4 * k))
    tile = 2 * l3_cache_bytes() // 4  # floats
    b = min(max(n, 1), max(1024, tile // w))
    return int(b), int(w)


def _as_f32(x, buf: np.ndarray | None = None) -> np.ndarray:
    """``x`` (numpy / memmap / torch, any float dtype) as a C-contiguous float32 array,
    written into ``buf`` (same shape) when given and a conversion is needed."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x if x.dtype in (torch.float16, torch.float32, torch.float64) else x.float()).numpy()
    if x.dtype == np.float32 and x.flags.c_contiguous:
        return x
    if buf is None:
        return np.ascontiguousarray(x, dtype=np.float32)
    buf[...] = x
    return buf


def _exclusions(excl: sp.csr_matrix | None, q0: int, q1: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows in the block, label columns)`` of the excluded pairs of queries ``q0:q1``."""
    if excl is None:
        return None
    sub = excl[q0:q1].tocoo()
    return (sub.row.astype(np.int64), sub.col.astype(np.int64)) if sub.nnz else None


def _mask_tile(tile: np.ndarray, ex, l0: int, l1: int) -> None:
    if ex is not None:
        rows, cols = ex
        sel = (cols >= l0) & (cols < l1)
        tile[rows[sel], cols[sel] - l0] = -np.inf


def _topk_rows(s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best of ``(s, i)`` ([b, c] -> [b, k]), sorted by decreasing score.

    numpy's sorts (SIMD on x86) are ~10x faster than ``torch.topk`` on such narrow rows."""
    if s.shape[1] > 4 * k:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        s, i = np.take_along_axis(s, part, axis=1), np.take_along_axis(i, part, axis=1)
    order = np.argsort(-s, axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def _merge_hits(tile: np.ndarray, c0: int, c1: int, l0: int, best_s: np.ndarray, best_i: np.ndarray, k: int,
                flag_buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge the columns ``c0:c1`` of ``tile`` (labels ``l0 + c``) into the running top-``k``:
    only the scores above each row's current ``k``-th best (the survivors) take part."""
    b, width = tile.shape[0], c1 - c0
    flags = flag_buf[:b * width].reshape(b, width)
    np.greater(tile[:, c0:c1], best_s[:, -1:], out=flags)
    hit = np.flatnonzero(flags)
    if hit.size == 0:
        return best_s, best_i
    if hit.size > b * width // 4:  # too many survivors: the dense top-k of these columns
        if width <= 16 * k:  # narrow (a first range): numpy's partition, no thread pool
            ts, ti = tile[:, c0:c1], np.broadcast_to(np.arange(l0 + c0, l0 + c1), (b, width))
        else:
            top = torch.topk(torch.from_numpy(tile[:, c0:c1]), min(k, width), dim=1, sorted=False)
            ts, ti = top.values.numpy(), top.indices.numpy() + (l0 + c0)
        return _topk_rows(np.concatenate([best_s, ts], axis=1), np.concatenate([best_i, ti], axis=1), k)
    rows = hit // width
    cols = hit - rows * width + c0
    counts = np.bincount(rows, minlength=b)
    first = np.cumsum(counts) - counts  # where each row's survivors start in `hit`
    cand_s = np.full((b, k + int(counts.max())), -np.inf, dtype=np.float32)
    cand_i = np.full(cand_s.shape, -1, dtype=np.int64)
    cand_s[:, :k], cand_i[:, :k] = best_s, best_i
    pos = k + np.arange(hit.size) - first[rows]
    cand_s[rows, pos] = tile[rows, cols]
    cand_i[rows, pos] = cols + l0
    return _topk_rows(cand_s, cand_i, k)


def _column_steps(width: int, k: int, first: bool) -> list[tuple[int, int]]:
    """Column ranges of a tile to merge one after the other: the whole tile, or, for a
    query block's first tile (no threshold yet), ranges doubling from ``4 k`` columns, so
    that each range has about ``k`` survivors per row instead of all of them."""
    if not first:
        return [(0, width)]
    steps, c0, c1 = [], 0, min(width, 4 * k)
    while c0 < width:
        steps.append((c0, c1))
        c0, c1 = c1, min(width, 2 * c1)
    return steps


def cpu_topk(queries, labels, k: int, block_size: int, label_block_size: int,
             excl: sp.csr_matrix | None, scores_out: np.ndarray, index_out: np.ndarray) -> None:
    """Exact top-``k`` on the CPU (see the module docstring), written into ``scores_out`` /
    ``index_out`` ([n, k]). ``queries`` [n, d], ``labels`` [m, d]: numpy arrays, memory
    maps or CPU tensors; ``k <= m``."""
    n, m, d = queries.shape[0], labels.shape[0], labels.shape[1]
    b, w = max(1, min(block_size, n)), max(1, min(label_block_size, m))
    tile_buf = np.empty(b * w, dtype=np.float32)  # one score tile, reused
    flag_buf = np.empty(b * w, dtype=bool)
    lab_f32 = _as_f32(labels) if m <= w else None  # one tile of labels: convert once
    lab_buf = None if lab_f32 is not None else np.empty((w, d), dtype=np.float32)
    for q0 in range(0, n, b):
        q1 = min(q0 + b, n)
        qb = _as_f32(queries[q0:q1])  # [bq, d]
        ex = _exclusions(excl, q0, q1)
        best_s = np.full((q1 - q0, k), -np.inf, dtype=np.float32)
        best_i = np.full((q1 - q0, k), -1, dtype=np.int64)
        for l0 in range(0, m, w):
            l1 = min(l0 + w, m)
            lb = lab_f32 if lab_f32 is not None else _as_f32(labels[l0:l1], lab_buf[:l1 - l0])
            tile = tile_buf[:(q1 - q0) * (l1 - l0)].reshape(q1 - q0, l1 - l0)
            np.matmul(qb, lb.T, out=tile)  # [bq, wl], one BLAS call
            _mask_tile(tile, ex, l0, l1)
            for c0, c1 in _column_steps(l1 - l0, k, first=l0 == 0):
                best_s, best_i = _merge_hits(tile, c0, c1, l0, best_s, best_i, k, flag_buf)
        best_i[np.isneginf(best_s)] = -1
        scores_out[q0:q1], index_out[q0:q1] = best_s, best_i


def torch_topk(queries, labels, k: int, block_size: int, label_block_size: int, excl: sp.csr_matrix | None,
               device: torch.device, dtype: torch.dtype, scores_out: np.ndarray, index_out: np.ndarray) -> None:
    """Exact top-``k`` with ``torch.topk`` per tile on ``device`` (labels resident there, in
    ``dtype``), written into ``scores_out`` / ``index_out``."""
    n, m = queries.shape[0], labels.shape[0]
    lab = _to_device(labels, device, dtype)
    lbs = max(1, int(label_block_size))
    label_blocks = [(a, min(a + lbs, m)) for a in range(0, m, lbs)]
    for q0 in range(0, n, block_size):
        q1 = min(q0 + block_size, n)
        qb = _to_device(queries[q0:q1], device, dtype)
        ex = _exclusions(excl, q0, q1)
        if ex is not None:
            ex = tuple(torch.from_numpy(a).to(device) for a in ex)
        best_s, best_i = _block_topk(qb, lab, label_blocks, k, ex)
        scores_out[q0:q1] = best_s.cpu().numpy()
        index_out[q0:q1] = best_i.cpu().numpy()


def _to_device(x, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=dtype, non_blocking=True)


def _block_topk(qb: torch.Tensor, lab: torch.Tensor, label_blocks: list[tuple[int, int]], k: int,
                exclude: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of one query block ``qb`` [b, d] over the labels ``lab`` [m, d], one label
    block at a time with a running merge (none when one block holds every label);
    ``exclude``: (rows, cols) set to -inf first. Index -1 where the score is -inf."""
    best_s = best_i = None
    for l0, l1 in label_blocks:
        s = (qb @ lab[l0:l1].T).float()
        if exclude is not None:
            rows, cols = exclude
            sel = (cols >= l0) & (cols < l1)
            s[rows[sel], cols[sel] - l0] = float("-inf")
        bs, bi = torch.topk(s, min(k, l1 - l0), dim=1, largest=True, sorted=True)
        bi = bi + l0
        if best_s is None:
            best_s, best_i = bs, bi
        else:  # merge the running top-k with this label block's
            best_s, pos = torch.topk(torch.cat([best_s, bs], dim=1), min(k, best_s.shape[1] + bs.shape[1]), dim=1)
            best_i = torch.cat([best_i, bi], dim=1).gather(1, pos)
        del s
    best_i = torch.where(torch.isneginf(best_s), torch.full_like(best_i, -1), best_i)
    return best_s, best_i
