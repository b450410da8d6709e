"""Sharded exact search, for label sets that do not fit one device (or one process).

The labels are cut into contiguous shards; each shard is searched on its own (its own
top-``k`` per query, with the filter pairs that fall inside it excluded, renumbered to
the shard) and the per-shard lists are merged. The merge is exact: the global top-``k``
of a query is contained in the union of the shards' top-``k`` lists, because a label
outside its shard's top-``k`` has ``k`` better labels in that shard alone.

* :func:`merge_topk`: the pure merge of per-shard ``(scores, indices, label offset)``.
* :func:`sharded_topk`: one process, shards searched one after the other with
  :func:`~vixml_lib.retrieval.exact_topk` (peak device memory: one shard), or with a FAISS
  ``IndexShards`` (``method="faiss"``; on several GPUs the labels are sharded over them
  with ``index_cpu_to_all_gpus(..., shard=True)``).
* :func:`distributed_topk`: ``torch.distributed``, each rank holding one label shard and
  the same queries; the per-rank top-``k`` lists are all-gathered and merged, so every
  rank ends with the global result. Works with ``gloo`` (CPU) and ``nccl`` (GPU).

Scores and indices follow :mod:`vixml_lib.retrieval`: float32 / int64 ``[n, k]``, rows
sorted by decreasing score, ``(-inf, -1)`` in slots without a label. Ties are broken by
the lower label index, so a merge does not depend on the order of the shards.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .retrieval import _drop_missing, _faiss, _to_numpy_f32, as_exclude_csr, exact_topk

__all__ = ["shard_bounds", "merge_topk", "sharded_topk", "faiss_sharded_index", "distributed_topk"]


def shard_bounds(n_labels: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous ``(start, stop)`` label ranges, sizes differing by at most 1."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    cuts = [(n_labels * r) // n_shards for r in range(n_shards + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray, int]], k: int | None = None,
               block_rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` of the union of per-shard top-k lists.

    Args:
        parts: ``(scores [n, k_s], indices [n, k_s], offset)`` per shard: indices local to
            the shard (``-1``: no label), ``offset`` the shard's first global label.
        k: result width (default: the widest part).
        block_rows: rows merged at once (bounds the temporary memory).

    Returns:
        ``(scores float32 [n, k'], indices int64 [n, k'])`` with global label indices,
        ``k' = min(k, sum k_s)``; each row sorted by decreasing score, ties by label index.
    """
    if not parts:
        raise ValueError("merge_topk needs at least one part")
    n = int(np.asarray(parts[0][0]).shape[0])
    for j, (s, i, _) in enumerate(parts):
        if np.shape(s) != np.shape(i) or np.ndim(s) != 2 or np.shape(s)[0] != n:
            raise ValueError(f"part {j}: scores {np.shape(s)} and indices {np.shape(i)} must both be [{n}, k]")
    width = sum(int(np.shape(s)[1]) for s, _, _ in parts)
    k = min(int(k) if k is not None else max(int(np.shape(s)[1]) for s, _, _ in parts), width)
    scores = np.empty((n, k), dtype=np.float32)
    index = np.empty((n, k), dtype=np.int64)
    for r0 in range(0, n, block_rows):
        r1 = min(r0 + block_rows, n)
        idx = np.concatenate([np.where(np.asarray(i[r0:r1]) >= 0, np.asarray(i[r0:r1], dtype=np.int64) + off, -1)
                              for _, i, off in parts], axis=1)
        sc = np.concatenate([np.asarray(s[r0:r1], dtype=np.float32) for s, _, _ in parts], axis=1)
        sc[idx < 0] = -np.inf
        order = _best_first(sc, idx, k)
        scores[r0:r1] = np.take_along_axis(sc, order, axis=1)
        index[r0:r1] = np.take_along_axis(idx, order, axis=1)
    index[np.isneginf(scores)] = -1
    return scores, index


def _best_first(sc: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Column order of each row's ``k`` best: decreasing score, ties by lower label, empty
    slots last. One uint64 key per entry (order-preserving bits of ``-score``, then the
    label), so a partition plus a sort of ``k`` keys replaces a full sort of the row."""
    if idx.size and int(idx.max()) >= 2**32 - 1:  # labels do not fit the key: full sort
        return np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -sc), axis=1)[:, :k]
    bits = (-(sc + np.float32(0.0))).view(np.uint32)  # + 0.0: -0.0 and 0.0 get one key
    bits = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))  # float order -> unsigned order
    key = (bits.astype(np.uint64) << np.uint64(32)) | np.where(idx < 0, 2**32 - 1, idx).astype(np.uint64)
    if key.shape[1] > k:
        part = np.argpartition(key, k - 1, axis=1)[:, :k]
        return np.take_along_axis(part, np.argsort(np.take_along_axis(key, part, axis=1), axis=1), axis=1)
    return np.argsort(key, axis=1)


def sharded_topk(queries, labels, k: int, n_shards: int, exclude=None, device=None, method: str = "exact",
                 use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` over ``n_shards`` contiguous label shards, merged (equal to the
    unsharded search, ties aside).

    ``method="exact"``: each shard with :func:`~vixml_lib.retrieval.exact_topk` on
    ``device``, so only one shard's labels sit on the device at a time. ``method="faiss"``:
    a FAISS ``IndexShards`` (:func:`faiss_sharded_index`). ``exclude``: filter pairs with
    GLOBAL label ids (any form :func:`~vixml_lib.retrieval.as_exclude_csr` takes); each
    shard gets those inside it, renumbered."""
    n, m = len(queries), len(labels)
    k_out = min(int(k), m)
    excl = as_exclude_csr(exclude, n, m)
    if method == "faiss":
        index = faiss_sharded_index(labels, n_shards, use_gpu=use_gpu)
        extra = int(np.diff(excl.indptr).max()) if excl is not None and excl.nnz else 0
        dist, idx = index.search(_to_numpy_f32(queries, "queries"), min(k_out + extra, m))
        return _drop_missing(dist.astype(np.float32, copy=False), idx.astype(np.int64, copy=False),
                             excl if extra else None, k_out)
    if method != "exact":
        raise ValueError(f"method must be 'exact' or 'faiss', got {method!r}")
    parts = []
    for a, b in shard_bounds(m, n_shards):
        if b > a:
            ex = excl[:, a:b] if excl is not None else None
            s, i = exact_topk(queries, labels[a:b], k_out, device=device, exclude=ex)
            parts.append((s, i, a))
    return merge_topk(parts, k_out)


def faiss_sharded_index(labels, n_shards: int, use_gpu: bool | None = None):
    """A FAISS inner-product index over ``labels`` split into shards that are searched in
    parallel and merged by FAISS: ``IndexShards`` of ``n_shards`` ``IndexFlatIP`` (CPU),
    or, with GPUs (``use_gpu`` None = when FAISS sees more than one), the flat index
    sharded over all of them (``index_cpu_to_all_gpus`` with ``shard=True``)."""
    faiss = _faiss()
    lx = _to_numpy_f32(labels, "labels")
    d = lx.shape[1]
    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu is None:
        use_gpu = ngpu > 1
    if use_gpu:
        if ngpu == 0:
            raise RuntimeError("use_gpu=True but this FAISS build sees no GPU")
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(d), co=options)
        index.add(lx)
        return index
    index = faiss.IndexShards(d, True, True)  # threaded, successive ids
    for a, b in shard_bounds(lx.shape[0], n_shards):
        sub = faiss.IndexFlatIP(d)
        sub.add(lx[a:b])
        index.add_shard(sub)
    return index


def distributed_topk(queries, label_shard, k: int, label_offset: int, n_labels: int, exclude=None, device=None,
                     group=None, block_rows: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` with the labels sharded over the ranks of a ``torch.distributed``
    group: this rank holds labels ``label_offset : label_offset + len(label_shard)`` of
    ``n_labels`` (e.g. from :func:`shard_bounds`) and every rank passes the same queries.

    Each rank searches its shard, excluding the filter pairs whose label it holds
    (``exclude`` has GLOBAL label ids; each rank keeps its own), then the per-rank
    top-``k`` lists ``[n, k]`` (scores and global indices) are all-gathered and merged
    with :func:`merge_topk`, ``block_rows`` queries at a time (so the gathered lists take
    ``world x block_rows x k x 12`` bytes). Every rank returns the same global result.
    A collective: every rank of ``group`` must call it with the same queries and ``k``.
    """
    import torch.distributed as dist

    n, m_local = len(queries), len(label_shard)
    k_out = min(int(k), int(n_labels))
    excl = as_exclude_csr(exclude, n, n_labels)
    local_ex = excl[:, label_offset:label_offset + m_local] if excl is not None else None
    comm = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" \
        else torch.device("cpu")
    world = dist.get_world_size(group)
    scores = np.empty((n, k_out), dtype=np.float32)
    index = np.empty((n, k_out), dtype=np.int64)
    for r0 in range(0, n, block_rows):
        r1 = min(r0 + block_rows, n)
        s = np.full((r1 - r0, k_out), -np.inf, dtype=np.float32)
        i = np.full((r1 - r0, k_out), -1, dtype=np.int64)
        if m_local:
            ex = local_ex[r0:r1] if local_ex is not None else None
            ls, li = exact_topk(queries[r0:r1], label_shard, k_out, device=device, exclude=ex)
            s[:, :ls.shape[1]], i[:, :li.shape[1]] = ls, np.where(li >= 0, li + label_offset, -1)
        st, it = torch.from_numpy(s).to(comm), torch.from_numpy(i).to(comm)
        all_s = [torch.empty_like(st) for _ in range(world)]
        all_i = [torch.empty_like(it) for _ in range(world)]
        dist.all_gather(all_s, st, group=group)
        dist.all_gather(all_i, it, group=group)
        parts = [(a.cpu().numpy(), b.cpu().numpy(), 0) for a, b in zip(all_s, all_i)]
        scores[r0:r1], index[r0:r1] = merge_topk(parts, k_out)
    return scores, index
