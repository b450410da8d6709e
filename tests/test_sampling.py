import numpy as np
import pytest
import torch

from vixml_lib.sampling import (
    ClusterSchedule,
    balanced_clusters,
    clustered_batches,
    random_batches,
)


def blobs(n_blobs, size, d=32, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_blobs, d))
    x = np.repeat(centers, size, axis=0) + noise * rng.standard_normal((n_blobs * size, d))
    label = np.repeat(np.arange(n_blobs), size)
    perm = rng.permutation(len(x))
    return x[perm].astype(np.float32), label[perm]


def assert_partition(parts, n):
    allidx = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    assert allidx.dtype == np.int64
    assert len(allidx) == n
    assert np.array_equal(np.sort(allidx), np.arange(n))


def test_random_batches_cover_every_index_once():
    b = random_batches(103, 10, generator=0)
    assert [len(x) for x in b] == [10] * 10 + [3]
    assert_partition(b, 103)
    assert len(random_batches(103, 10, generator=0, drop_last=True)) == 10
    assert all(np.array_equal(x, y) for x, y in zip(b, random_batches(103, 10, generator=0)))
    assert not np.array_equal(b[0], random_batches(103, 10, generator=1)[0])


@pytest.mark.parametrize("n,cs", [(512, 16), (1000, 16), (37, 8), (100, 1), (5, 16), (33, 16)])
def test_clusters_are_balanced_partition(n, cs):
    x = np.random.default_rng(1).standard_normal((n, 12)).astype(np.float32)
    cl = balanced_clusters(x, cs, seed=3)
    assert_partition(cl, n)
    sizes = [len(c) for c in cl]
    assert all(s == cs for s in sizes[:-1])
    assert sizes[-1] == (n % cs or min(cs, n))  # only the last one may be smaller
    assert len(cl) == -(-n // cs)


def test_blobs_of_cluster_size_are_recovered():
    x, label = blobs(64, 16)
    for seed in range(3):
        cl = balanced_clusters(x, 16, seed=seed)
        assert len(cl) == 64
        assert all(len(np.unique(label[c])) == 1 for c in cl)
    # blobs of 8 with clusters of 16: each cluster holds two whole blobs
    x, label = blobs(32, 8, seed=2)
    cl = balanced_clusters(x, 16, seed=0)
    assert all(np.all(np.bincount(label[c]) % 8 == 0) for c in cl)


def test_clusters_beat_random_grouping():
    # Looser structure: clusters are much tighter than random groups.
    x, _ = blobs(40, 25, noise=0.5, seed=4)
    cl = balanced_clusters(x, 16, seed=0)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)

    def mean_sim(groups):
        return np.mean([(xn[g] @ xn[g].T).mean() for g in groups if len(g) == 16])

    rand = random_batches(len(x), 16, generator=0)
    assert mean_sim(cl) > mean_sim(rand) + 0.3


def test_clustering_is_deterministic_and_accepts_torch():
    x = np.random.default_rng(5).standard_normal((300, 16)).astype(np.float32)
    a = balanced_clusters(x, 16, seed=7)
    b = balanced_clusters(x, 16, seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    c = balanced_clusters(torch.from_numpy(x).to(torch.bfloat16), 16, seed=7)
    assert_partition(c, 300)
    d = balanced_clusters(torch.from_numpy(x), 16, seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a, d))


def test_clustered_batches_keep_clusters_whole():
    clusters = [np.arange(i * 16, (i + 1) * 16) for i in range(20)] + [np.arange(320, 325)]
    batches = clustered_batches(clusters, 64, generator=0)
    assert_partition(batches, 325)
    assert all(len(b) <= 64 for b in batches)
    assert sum(len(b) == 64 for b in batches) >= 4
    cluster_of = np.repeat(np.arange(21), [16] * 20 + [5])
    where = {}
    for bi, b in enumerate(batches):
        for c in np.unique(cluster_of[b]):
            where.setdefault(c, set()).add(bi)
    assert all(len(v) == 1 for v in where.values())  # no cluster is split
    again = clustered_batches(clusters, 64, generator=0)
    assert all(np.array_equal(p, q) for p, q in zip(batches, again))
    other = clustered_batches(clusters, 64, generator=1)
    assert not all(np.array_equal(p, q) for p, q in zip(batches, other))
    # a cluster bigger than the batch is cut, still covering every index once
    big = clustered_batches([np.arange(100), np.arange(100, 110)], 32, generator=0)
    assert_partition(big, 110)
    assert max(len(b) for b in big) <= 32


def test_epoch_of_clustered_batches_covers_every_index():
    x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    cl = balanced_clusters(x, 16, seed=0)
    batches = clustered_batches(cl, 128, generator=3)
    assert_partition(batches, 1000)
    assert all(len(b) == 128 for b in batches[:-1])


def test_schedule_values_per_epoch():
    s = ClusterSchedule.for_backbone("encoder", refresh_every=3, double_at=(16, 19, 25),
                                     batch_size=64)
    assert s.warmup_epochs == 10
    assert ClusterSchedule.for_backbone("decoder").warmup_epochs == 4
    assert [s.use_clusters(e) for e in (0, 9, 10, 11)] == [False, False, True, True]
    refresh = [e for e in range(30) if s.needs_refresh(e)]
    # at warm-up end, every 3 epochs after it, and when the size changes (16, 19, 25)
    assert refresh == [10, 13, 16, 19, 22, 25, 28]
    sizes = [s.cluster_size_at(e) for e in (10, 15, 16, 18, 19, 24, 25, 40)]
    assert sizes == [16, 16, 32, 32, 32, 32, 32, 32]  # capped at batch_size // 2 = 32
    s2 = ClusterSchedule(warmup_epochs=2, refresh_every=5, double_at=(4,))
    assert [e for e in range(12) if s2.needs_refresh(e)] == [2, 4, 7]
    assert s2.cluster_size_at(3) == 16 and s2.cluster_size_at(4) == 32
    assert s2.plan(1) == {"epoch": 1, "clustered": False, "refresh": False, "cluster_size": None}
    assert s2.plan(4)["refresh"] and s2.plan(4)["cluster_size"] == 32
    with pytest.raises(ValueError):
        ClusterSchedule(refresh_every=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_balanced_clusters_on_cuda():
    x, label = blobs(64, 16)
    cl = balanced_clusters(torch.from_numpy(x).cuda(), 16, seed=0)
    assert_partition(cl, len(x))
    assert all(len(np.unique(label[c])) == 1 for c in cl)
    cl = balanced_clusters(x[:1000], 16, seed=0, device="cuda")
    assert_partition(cl, 1000)


# sha256 (first 16 hex digits) of the clusters, in order and with their in-cluster order,
# computed with the balanced_clusters of commit 1393737 (before the working copy became
# index-only): the rewrite must give the same clusters for the same seed on the CPU.
HEAD_REFERENCE = {
    (37, 8, 6, 0, True): "8a174043075dee37",
    (100, 16, 12, 3, True): "31f7a4f6e5eabb50",
    (1000, 16, 12, 7, True): "9a026dd3d7f2ad72",
    (1000, 16, 12, 7, False): "a7cb18852e6b0854",
    (4099, 32, 20, 1, True): "b9e7027cc3df7a70",
    (700, 1, 5, 2, True): "38c90a74cf7a53b7",
    (5000, 64, 8, 11, True): "ea61624e17d05144",
    (333, 10, 9, 5, True): "5f319af6c0a5a144",
}


def clusters_digest(clusters) -> str:
    import hashlib

    return hashlib.sha256(b"".join(c.astype("<i8").tobytes() + b"|" for c in clusters)).hexdigest()[:16]


@pytest.mark.parametrize("case", sorted(HEAD_REFERENCE))
def test_clusters_identical_to_the_reference(case):
    n, cs, d, seed, normalize = case
    x = np.random.default_rng(1000 + n).standard_normal((n, d)).astype(np.float32)
    assert clusters_digest(balanced_clusters(x, cs, seed=seed, normalize=normalize)) == HEAD_REFERENCE[case]
    # small blocks (the working copy is filled block by block) change nothing
    cl = balanced_clusters(x, cs, seed=seed, normalize=normalize, block_rows=7, device="cpu")
    assert clusters_digest(cl) == HEAD_REFERENCE[case]


def test_the_smallest_reference_in_full():
    x = np.random.default_rng(1037).standard_normal((37, 6)).astype(np.float32)
    assert [c.tolist() for c in balanced_clusters(x, 8, seed=0)] == [
        [21, 14, 17, 16, 22, 4, 12, 26], [36, 18, 32, 15, 25, 1, 13, 3], [11, 31, 34, 35, 27, 0, 7, 9],
        [24, 2, 19, 20, 23, 28, 6, 33], [30, 29, 8, 5, 10]]


def test_clusters_of_a_float16_memory_map(tmp_path):
    # read in place, block by block: the same clusters as the upcast array
    x = np.random.default_rng(3).standard_normal((2000, 24)).astype(np.float16)
    np.save(tmp_path / "emb.npy", x)
    mm = np.load(tmp_path / "emb.npy", mmap_mode="r")
    a = balanced_clusters(mm, 16, seed=4, block_rows=300)
    b = balanced_clusters(x.astype(np.float32), 16, seed=4)
    assert clusters_digest(a) == clusters_digest(b)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        balanced_clusters(np.zeros(5), 2)
