"""Sharded exact search: merge_topk, sharded_topk (exact / FAISS IndexShards), and the
torch.distributed version with 2 gloo processes, all equal to single-process search."""
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vixml_lib.retrieval import exact_topk
from vixml_lib.sharded import distributed_topk, merge_topk, shard_bounds, sharded_topk


def data(n=120, m=1000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((m, d)).astype(np.float32)


def filter_pairs(q, lab, seed=1):
    """Each query's best label, a random label, and for query 0 all labels but three."""
    _, top = exact_topk(q, lab, 1, device="cpu")
    rng = np.random.default_rng(seed)
    n, m = len(q), len(lab)
    pairs = [np.stack([np.arange(n), top[:, 0]], 1), np.stack([np.arange(n), rng.integers(0, m, n)], 1),
             np.array([[0, c] for c in range(3, m)])]
    return np.unique(np.concatenate(pairs), axis=0)


def test_shard_bounds_cover_the_labels():
    assert shard_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(2, 4) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    with pytest.raises(ValueError):
        shard_bounds(5, 0)


def test_merge_topk_by_hand():
    # shard A holds labels 0..2, shard B labels 3..5 (offset 3); -1: an empty slot
    a = (np.array([[0.9, 0.5], [0.2, -np.inf]], np.float32), np.array([[2, 0], [1, -1]]), 0)
    b = (np.array([[0.7, 0.6], [0.3, 0.2]], np.float32), np.array([[1, 0], [2, 0]]), 3)
    s, i = merge_topk([a, b], k=3)
    assert i.tolist() == [[2, 4, 3], [5, 1, 3]]  # row 1: tie 0.2 broken by the lower label (1 < 3)
    assert np.allclose(s, [[0.9, 0.7, 0.6], [0.3, 0.2, 0.2]])
    s2, i2 = merge_topk([b, a], k=3)  # shard order does not matter
    assert np.array_equal(i2, i) and np.array_equal(s2, s)
    s, i = merge_topk([a], k=5)  # k capped at the total width; empty slots stay (-inf, -1)
    assert i.tolist() == [[2, 0], [1, -1]] and np.isneginf(s[1, 1])
    with pytest.raises(ValueError, match="part 1"):
        merge_topk([a, (np.zeros((2, 2)), np.zeros((2, 3)), 0)])


@pytest.mark.parametrize("n_shards", [1, 2, 3, 7, 150])
def test_sharded_topk_equals_unsharded_with_filter_pairs(n_shards):
    q, lab = data()
    pairs = filter_pairs(q, lab)
    ref_s, ref_i = exact_topk(q, lab, 10, device="cpu", exclude=pairs)
    assert (ref_i[0, 3:] == -1).all()  # query 0 keeps only three labels
    s, i = sharded_topk(q, lab, 10, n_shards, exclude=pairs, device="cpu")  # 150 shards of < 10 labels
    assert np.array_equal(i, ref_i)
    assert np.allclose(s, ref_s, atol=1e-5)
    assert not any(set(map(tuple, np.stack([np.repeat(np.arange(120), 10), i.ravel()], 1))) & set(map(tuple, pairs)))


def test_faiss_index_shards_equal_exact():
    pytest.importorskip("faiss")
    q, lab = data(seed=2)
    pairs = filter_pairs(q, lab, seed=3)
    ref_s, ref_i = exact_topk(q, lab, 10, device="cpu", exclude=pairs)
    s, i = sharded_topk(q, lab, 10, 3, exclude=pairs, method="faiss", use_gpu=False)
    assert np.array_equal(i, ref_i)
    assert np.allclose(s, ref_s, atol=1e-5)
    with pytest.raises(ValueError, match="exact' or 'faiss"):
        sharded_topk(q, lab, 10, 3, method="ivf")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str, k: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        q, lab = data(n=130, m=1001, seed=5)
        pairs = filter_pairs(q, lab, seed=6)
        a, b = shard_bounds(len(lab), world)[rank]
        s, i = distributed_topk(q, lab[a:b], k, a, len(lab), exclude=pairs, device="cpu", block_rows=50)
        np.savez(f"{out}/rank{rank}.npz", s=s, i=i)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("k", [10, 600])  # 600 > a rank's 500 labels: ranks pad their lists
def test_distributed_topk_two_gloo_processes_equal_one_process(tmp_path, k):
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path), k), nprocs=2, join=True)
    q, lab = data(n=130, m=1001, seed=5)
    ref_s, ref_i = exact_topk(q, lab, k, device="cpu", exclude=filter_pairs(q, lab, seed=6))
    for rank in (0, 1):  # every rank holds the global result
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert np.array_equal(got["i"], ref_i)
        assert np.allclose(got["s"], ref_s, atol=1e-5)


def test_merge_topk_breaks_ties_by_label_like_a_full_sort():
    # integer scores: many ties, some empty slots; the result equals a lexsort of everything
    rng = np.random.default_rng(4)
    parts = []
    for off in (0, 50, 120):
        s = rng.integers(-3, 4, (40, 12)).astype(np.float32)
        i = np.stack([rng.permutation(50)[:12] for _ in range(40)])
        s[rng.random(s.shape) < 0.1] = -np.inf
        i[np.isneginf(s)] = -1
        s[0, 0] = -0.0  # signed zero ties with 0.0
        parts.append((s, i, off))
    got_s, got_i = merge_topk(parts, k=15)
    all_s = np.concatenate([p[0] for p in parts], axis=1)
    all_i = np.concatenate([np.where(p[1] >= 0, p[1] + p[2], -1) for p in parts], axis=1)
    order = np.lexsort((np.where(all_i < 0, 10**9, all_i), -all_s), axis=1)[:, :15]
    assert np.array_equal(got_i, np.take_along_axis(all_i, order, axis=1))
    assert np.array_equal(got_s, np.take_along_axis(all_s, order, axis=1))
