"""Mini-batch construction: random batches and NGAME-style clustered (hard-negative) batches.

NGAME (Dahiya et al., WSDM 2023) makes in-batch negatives hard by building each batch
from whole clusters of similar training queries: after a warm-up with random batches, the
query embeddings are clustered into small *balanced* clusters (DeepXML-style recursive
balanced 2-means), and batches are formed by shuffling the clusters and concatenating
whole clusters. Clusters are recomputed every few epochs and their size grows (doubles) on
a schedule. ViXML warms up 10 epochs for encoders and 4 for decoders, with clusters of 16
(``/work/shared/METHOD.md``, "Hard negatives (NGAME)").

Typical epoch loop::

    sched = ClusterSchedule.for_backbone("encoder", batch_size=2048)
    clusters = None
    for epoch in range(n_epochs):
        if sched.needs_refresh(epoch):
            emb = encode_all_training_queries()          # [n, d], normalised
            clusters = balanced_clusters(emb, sched.cluster_size_at(epoch), seed=seed + epoch)
        if sched.use_clusters(epoch):
            batches = clustered_batches(clusters, 2048, generator=seed + epoch)
        else:
            batches = random_batches(n, 2048, generator=seed + epoch)

Randomness comes only from the ``seed`` / ``generator`` arguments, so a run is
reproducible.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "ClusterSchedule",
    "balanced_clusters",
    "clustered_batches",
    "random_batches",
]

def _rng(generator) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None or isinstance(generator, (int, np.integer)):
        return np.random.default_rng(generator)
    raise TypeError(
        f"generator must be a numpy Generator, an int seed or None, got {type(generator).__name__}"
    )


def random_batches(
    n: int,
    batch_size: int,
    generator: np.random.Generator | int | None = None,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Shuffle ``range(n)`` and cut it into batches of ``batch_size`` (int64 arrays).

    The last batch is smaller when ``batch_size`` does not divide ``n`` (dropped with
    ``drop_last``). ``generator``: a ``numpy.random.Generator`` or an int seed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    perm = _rng(generator).permutation(int(n)).astype(np.int64)
    batches = [perm[i:i + batch_size] for i in range(0, int(n), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def clustered_batches(
    clusters: Sequence[np.ndarray],
    batch_size: int,
    generator: np.random.Generator | int | None = None,
    drop_last: bool = False,
    shuffle_within: bool = True,
) -> list[np.ndarray]:
    """NGAME batches: shuffle the clusters, then pack whole clusters into batches.

    Clusters are taken in a random order (clusters smaller than the most common size,
    i.e. the remainder cluster, last) and appended to the current batch as long as it
    stays within ``batch_size``; a cluster that would overflow starts the next batch. A
    cluster is never split (unless it is itself larger than ``batch_size``, in which case
    it is cut into ``batch_size`` pieces). With equal clusters whose size divides
    ``batch_size`` every batch has exactly ``batch_size`` items (the last may be smaller).
    Every index in ``clusters`` appears in exactly one batch.

    Args:
        clusters: index arrays, e.g. from :func:`balanced_clusters`.
        batch_size: maximum batch size.
        generator: ``numpy.random.Generator`` or int seed.
        drop_last: drop a last batch smaller than ``batch_size``.
        shuffle_within: shuffle the items inside each batch (order only; membership is
            unchanged).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = _rng(generator)
    clusters = [np.asarray(c, dtype=np.int64).ravel() for c in clusters]
    clusters = [c for c in clusters if c.size]
    if not clusters:
        return []
    # Shuffle; clusters smaller than the common size (the remainder cluster) go last so
    # that, when the cluster size divides batch_size, all batches but the last are full.
    order = rng.permutation(len(clusters))
    common = int(np.bincount([c.size for c in clusters]).argmax())
    order = np.concatenate([order[[clusters[i].size >= common for i in order]],
                            order[[clusters[i].size < common for i in order]]])
    sizes = np.array([clusters[i].size for i in order], dtype=np.int64)
    flat = np.concatenate([clusters[i] for i in order])
    # Greedy packing, a loop over clusters (not points): n / cluster_size iterations.
    cuts = [0]
    fill = 0
    pos = 0
    for s in sizes.tolist():
        if fill and fill + s > batch_size:
            cuts.append(pos)
            fill = 0
        while s > batch_size:  # oversized cluster: emit full pieces
            pos += batch_size
            s -= batch_size
            cuts.append(pos)
        fill += s
        pos += s
    if cuts[-1] != pos:
        cuts.append(pos)
    batches = [flat[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    if shuffle_within:
        batches = [b[rng.permutation(b.size)] for b in batches]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def _source(embeddings, device):
    """``(x, device)``: the embeddings as a 2-D float tensor, in their own dtype and where
    they are (a numpy array or memory map is shared, not loaded or copied), and the compute
    device (default: the tensor's)."""
    import torch

    if isinstance(embeddings, torch.Tensor):
        t = embeddings.detach()
    else:
        arr = np.asarray(embeddings)
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        if any(s < 0 for s in arr.strides):
            arr = np.ascontiguousarray(arr)
        with warnings.catch_warnings():  # read-only memory maps are only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(arr)
    if t.dim() != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    return t, (torch.device(device) if device is not None else t.device)


class _Rows:
    """Fills the working matrix: the rows of the source in a layout ``order``, float32,
    L2-normalised (when asked), zero for padding ids (``>= n``); one block of rows at a
    time, gathered where the source lives and normalised on the compute device."""

    def __init__(self, x, n: int, normalize: bool, block_rows: int):
        self.x, self.n, self.normalize = x, n, normalize
        # a block's temporaries stay ~16 MB each, however wide the rows
        self.block_rows = max(1, min(int(block_rows), (1 << 22) // max(1, x.shape[1])))

    def fill(self, xw, order) -> None:
        """``xw[i] = row(order[i])`` for every layout position, block by block."""
        import torch

        pads = order >= self.n  # fewer than cluster_size of them
        src = torch.where(pads, 0, order).to(self.x.device)
        for a in range(0, order.numel(), self.block_rows):
            xb = torch.index_select(self.x, 0, src[a:a + self.block_rows])
            xb = xb.to(device=xw.device, dtype=torch.float32)
            if self.normalize:
                torch.nn.functional.normalize(xb, dim=1, out=xw[a:a + self.block_rows])
            else:
                xw[a:a + self.block_rows] = xb
        xw[pads] = 0.0


def _segment_sum(rows, seg_of_row, seg_start):
    """Sums of the consecutive runs of ``rows`` ([m, d]); ``seg_of_row`` is each row's run
    id (non-decreasing) and ``seg_start`` the first row of each (non-empty) run."""
    import torch

    if rows.device.type == "cpu":  # numpy's reduceat: fast and free of thread overhead
        return torch.from_numpy(np.add.reduceat(rows.numpy(), seg_start.numpy(), axis=0))
    out = torch.zeros(seg_start.numel(), rows.shape[1], dtype=rows.dtype, device=rows.device)
    return out.scatter_add_(0, seg_of_row.unsqueeze(1).expand(-1, rows.shape[1]), rows)


def _argsort_rows_desc(grid):
    """Per-row argsort by decreasing value ([r, w] -> int64 [r, w])."""
    import torch

    if grid.device.type == "cpu":  # numpy's row-wise sort is much faster on CPU
        return torch.from_numpy(np.argsort(-grid.numpy(), axis=1))
    return torch.sort(grid, dim=1, descending=True).indices


def _split_level(xw, order, node_chunks, n: int, cs: int, n_iter: int, tol: float, rng: np.random.Generator):
    """One level of the balanced 2-means tree, all nodes at once (see :func:`balanced_clusters`).

    ``xw`` [n_pad, d]: the working rows in layout order; ``order`` [n_pad]: layout position
    -> point id (>= n: padding); ``node_chunks`` [nodes]: each node's number of ``cs``-chunks.
    Returns ``order`` and ``node_chunks`` of the next level (each node split in two, its
    rows in rank order); ``xw`` is left for the caller to refill."""
    import torch

    dev = xw.device
    n_pad, d = xw.shape
    nc = n_pad // cs
    n_nodes = node_chunks.numel()
    node_start = torch.cumsum(node_chunks, 0) - node_chunks  # in chunks
    chunk_node = torch.repeat_interleave(torch.arange(n_nodes, device=dev), node_chunks)
    row_node = chunk_node.repeat_interleave(cs)  # [n_pad]
    node_rows = node_chunks * cs
    node_row_start = node_start * cs
    offs = torch.arange(n_pad, device=dev) - torch.index_select(node_row_start, 0, row_node)
    width = int(node_rows.max())
    slot = row_node * width + offs  # layout row -> cell of the [n_nodes, width] grid
    del row_node, offs
    is_pad = order >= n
    real = _segment_sum((~is_pad).view(nc, cs).sum(1, keepdim=True), chunk_node,
                        node_start).view(-1)
    left = (node_chunks // 2) * cs  # rows going left, per node
    rank_is_left = torch.arange(width, device=dev).unsqueeze(0) < left.unsqueeze(1)

    # Seeds: two distinct random real members of each node.
    real_np = real.cpu().numpy()
    r0 = (rng.random(n_nodes) * real_np).astype(np.int64)
    r1 = (r0 + 1 + (rng.random(n_nodes) * np.maximum(real_np - 1, 1)).astype(np.int64)) \
        % np.maximum(real_np, 1)
    c0 = xw[node_row_start + torch.from_numpy(r0).to(dev)]
    c1 = xw[node_row_start + torch.from_numpy(r1).to(dev)]
    xc = xw.view(nc, cs, d)
    node_sum = _segment_sum(xc.sum(dim=1), chunk_node, node_start)
    side = None
    ranks = None
    grid = torch.full((n_nodes * width,), float("-inf"), device=dev)
    for _ in range(max(1, int(n_iter))):
        direction = c0 - c1  # [n_nodes, d]
        p = torch.einsum("cjd,cd->cj", xc, direction[chunk_node]).reshape(n_pad)
        grid.index_copy_(0, slot, p.masked_fill_(is_pad, float("-inf")))
        del p
        ranks = _argsort_rows_desc(grid.view(n_nodes, width))  # rank -> in-node offset
        side_grid = torch.empty(n_nodes, width, dtype=torch.bool, device=dev)
        side_grid.scatter_(1, ranks, rank_is_left)
        new_side = torch.index_select(side_grid.view(-1), 0, slot)  # True = left
        changed = n_pad if side is None else int(torch.count_nonzero(new_side != side))
        side = new_side
        lsum = torch.bmm(side.view(nc, 1, cs).to(torch.float32), xc).view(nc, d)
        left_sum = _segment_sum(lsum, chunk_node, node_start)
        c0 = torch.nn.functional.normalize(left_sum, dim=1)
        c1 = torch.nn.functional.normalize(node_sum - left_sum, dim=1)
        if changed <= tol * n:
            break
    # New layout: each node's rows in rank order (left part first, pads last).
    valid = ranks < node_rows.unsqueeze(1)
    order = torch.index_select(order, 0, torch.masked_select(node_row_start.unsqueeze(1) + ranks, valid))
    child = torch.stack([node_chunks // 2, node_chunks - node_chunks // 2], dim=1).reshape(-1)
    return order, child[child > 0]


def balanced_clusters(
    embeddings,
    cluster_size: int,
    seed: int | None = 0,
    n_iter: int = 10,
    tol: float = 1e-4,
    normalize: bool = True,
    device=None,
    block_rows: int = 1 << 16,
) -> list[np.ndarray]:
    """Partition the rows of ``embeddings`` into balanced clusters of ``cluster_size``.

    Recursive balanced 2-means (the DeepXML / NGAME clustering), processed one tree
    level at a time for all nodes at once. Each node with more than ``cluster_size``
    points is split in two by spherical 2-means under a size constraint: two random
    members seed the centroids ``c0, c1``; every member is projected on ``c0 - c1``
    (its cosine similarity to ``c0`` minus that to ``c1``), the members are ranked by
    that projection and the top ``L`` go left, the rest right; the centroids become the
    normalised means of the two halves and this repeats up to ``n_iter`` times, stopping
    early once at most a fraction ``tol`` of the points change side. ``L`` is half the
    node's ``cluster_size``-chunks (rounded down), so every cluster has exactly
    ``cluster_size`` points except one holding the remainder ``n mod cluster_size``,
    which is returned last.

    Implementation: a working copy of the (normalised) embeddings is kept in "node
    order" (each node a contiguous run of whole ``cluster_size`` chunks, padded with
    zero rows to a multiple of ``cluster_size``), so that projections and half-sums are
    batched matrix products over chunks, without gathering rows. The layout itself is an
    index vector; at the start of each tree level the working copy is refilled from the
    embeddings in the new layout, block by block, over the old one (rather than permuted
    into a second copy). Per level: ``O(n d)`` per iteration plus an ``O(n log n)`` sort;
    ``ceil(log2(n / cluster_size))`` levels. No Python loop over points or nodes.

    Memory, linear in ``n``: the embeddings stay where they are (a numpy array or memory
    map is read in place, one block of ``block_rows`` rows at a time, also when the
    computation runs on a GPU); ONE float32 working copy on the compute device
    (``4 n d`` bytes, e.g. 18 GB for 2.2M x 2048 -- on a GPU when there is one); and
    ``O(n)`` indices, ~150 bytes per point at the widest level (index vectors, the sort).

    Args:
        embeddings: ``[n, d]`` numpy array (memory maps welcome) or torch tensor (any
            float dtype).
        cluster_size: target cluster size (>= 1).
        seed: seed of the random centroid initialisation; the result is deterministic
            for a seed on a given device.
        n_iter: maximum 2-means iterations per split.
        tol: early-stop threshold (fraction of points that switched side).
        normalize: cluster by cosine similarity (rows L2-normalised); False uses raw
            inner products.
        device: torch device for the computation (default: the tensor's device, CPU
            for numpy input). Training passes its device: ``"cuda"`` makes million-point
            clusterings fast.
        block_rows: rows per block when filling the working copy (at most ``2^22 / d``).

    Returns:
        list of int64 numpy index arrays that partition ``range(n)``.
    """
    import torch

    if cluster_size < 1:
        raise ValueError(f"cluster_size must be >= 1, got {cluster_size}")
    x, dev = _source(embeddings, device)
    n = x.shape[0]
    if n == 0:
        return []
    cs = int(cluster_size)
    if n <= cs:
        return [np.arange(n, dtype=np.int64)]
    rng = np.random.default_rng(seed)
    nc = -(-n // cs)  # chunks
    rows = _Rows(x, n, normalize, block_rows)
    order = torch.arange(nc * cs, device=dev)  # layout position -> point id (>= n: pad)
    xw = torch.empty(nc * cs, x.shape[1], dtype=torch.float32, device=dev)  # the one working copy

    # Nodes are runs of whole chunks in layout order; pads always sit at a node's end.
    node_chunks = torch.tensor([nc], dtype=torch.long, device=dev)
    while bool((node_chunks > 1).any()):
        rows.fill(xw, order)  # the level's layout, written over the previous one
        order, node_chunks = _split_level(xw, order, node_chunks, n, cs, n_iter, tol, rng)
    del xw

    lay = order.view(nc, cs).cpu().numpy()
    full = lay.max(axis=1) < n
    clusters = [row for row in lay[full]]
    for row in lay[~full]:
        clusters.append(row[row < n])
    return [c.astype(np.int64, copy=False) for c in clusters]


@dataclass
class ClusterSchedule:
    """When to use clustered batches, when to re-cluster and with which cluster size.

    Epochs are 0-based. Random batches are used for ``epoch < warmup_epochs``; from then
    on batches are built from clusters, recomputed at ``warmup_epochs`` and every
    ``refresh_every`` epochs after it, and also whenever the cluster size changes. The
    cluster size starts at ``cluster_size`` and doubles at each epoch in
    ``double_at``, capped at ``batch_size // 2`` (a batch holds at least two clusters)
    when ``batch_size`` is given, and at ``max_cluster_size`` when given.

    ViXML / NGAME settings (METHOD.md): warm-up 10 epochs for encoders, 4 for decoders,
    initial cluster size 16. ``refresh_every`` (default 5) and ``double_at`` (default:
    never) are not given there; pick them per run.
    """

    warmup_epochs: int = 10
    refresh_every: int = 5
    cluster_size: int = 16
    double_at: tuple[int, ...] = ()
    batch_size: int | None = None
    max_cluster_size: int | None = None

    def __post_init__(self):
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {self.refresh_every}")
        if self.cluster_size < 1:
            raise ValueError(f"cluster_size must be >= 1, got {self.cluster_size}")
        self.double_at = tuple(sorted(int(e) for e in self.double_at))

    @classmethod
    def for_backbone(cls, kind: Literal["encoder", "decoder"], **kwargs) -> ClusterSchedule:
        """The METHOD.md warm-up for an ``"encoder"`` (10 epochs) or ``"decoder"`` (4)."""
        warm = {"encoder": 10, "decoder": 4}
        if kind not in warm:
            raise ValueError(f"kind must be 'encoder' or 'decoder', got {kind!r}")
        kwargs.setdefault("warmup_epochs", warm[kind])
        return cls(**kwargs)

    @property
    def cap(self) -> int | None:
        caps = []
        if self.batch_size is not None:
            caps.append(max(1, int(self.batch_size) // 2))
        if self.max_cluster_size is not None:
            caps.append(max(1, int(self.max_cluster_size)))
        return min(caps) if caps else None

    def use_clusters(self, epoch: int) -> bool:
        """True when ``epoch``'s batches are built from clusters."""
        return epoch >= self.warmup_epochs

    def cluster_size_at(self, epoch: int) -> int:
        """Cluster size in force at ``epoch`` (doubling and cap applied)."""
        doublings = sum(1 for e in self.double_at if e <= epoch)
        size = self.cluster_size * (2 ** doublings)
        cap = self.cap
        return min(size, cap) if cap is not None else size

    def needs_refresh(self, epoch: int) -> bool:
        """True when the clusters must be (re)computed at the start of ``epoch``."""
        if not self.use_clusters(epoch):
            return False
        if (epoch - self.warmup_epochs) % self.refresh_every == 0:
            return True
        return epoch > self.warmup_epochs and (
            self.cluster_size_at(epoch) != self.cluster_size_at(epoch - 1))

    def plan(self, epoch: int) -> dict:
        """``{"epoch", "clustered", "refresh", "cluster_size"}`` for logging."""
        return {
            "epoch": epoch,
            "clustered": self.use_clusters(epoch),
            "refresh": self.needs_refresh(epoch),
            "cluster_size": self.cluster_size_at(epoch) if self.use_clusters(epoch) else None,
        }
