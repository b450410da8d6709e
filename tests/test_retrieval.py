import numpy as np
import pytest
import scipy.sparse as sp
import torch

from vixml_lib.retrieval import csr_to_topk, exact_topk, faiss_topk, topk_to_csr


def data(n=300, m=1000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, d)).astype(np.float32)
    lab = rng.standard_normal((m, d)).astype(np.float32)
    return q, lab


def brute(q, lab, k, exclude_pairs=None):
    s = q.astype(np.float64) @ lab.astype(np.float64).T
    if exclude_pairs is not None:
        s[exclude_pairs[:, 0], exclude_pairs[:, 1]] = -np.inf
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


def test_exact_matches_bruteforce_across_blocks():
    q, lab = data()
    ref_s, ref_i = brute(q, lab, 10)
    assert len(np.unique(ref_s)) == ref_s.size  # distinct scores
    for bs in (64, 7, 300, 1000):  # 300 % 64, 300 % 7 != 0: ragged last blocks
        s, i = exact_topk(q, lab, 10, block_size=bs, device="cpu")
        assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (300, 10)
        assert np.array_equal(i, ref_i)
        assert np.allclose(s, ref_s, atol=1e-4)
    # label blocking (merging per-block top-k lists) gives the same answer
    for lbs in (100, 333, 3):
        s, i = exact_topk(q, lab, 10, block_size=64, device="cpu", label_block_size=lbs)
        assert np.array_equal(i, ref_i)


def test_exact_accepts_torch_and_half_precision():
    q, lab = data(n=50, m=400)
    ref_s, ref_i = brute(q, lab, 5)
    s, i = exact_topk(torch.from_numpy(q), torch.from_numpy(lab), 5)
    assert np.array_equal(i, ref_i)
    qh, lh = torch.from_numpy(q).to(torch.bfloat16), torch.from_numpy(lab).to(torch.bfloat16)
    s, i = exact_topk(qh, lh, 5, device="cpu")
    ref_h = brute(qh.float().numpy(), lh.float().numpy(), 5)[1]
    assert s.dtype == np.float32
    assert (i == ref_h).mean() > 0.95  # exact on the upcast values up to ties
    s, i = exact_topk(q.astype(np.float16), lab.astype(np.float16), 5, device="cpu")
    assert (i[:, 0] == brute(q.astype(np.float16).astype(np.float32),
                             lab.astype(np.float16).astype(np.float32), 1)[1][:, 0]).mean() > 0.95


def test_k_larger_than_labels():
    q, lab = data(n=4, m=6)
    s, i = exact_topk(q, lab, 50, device="cpu")
    assert s.shape == (4, 6)
    assert np.array_equal(np.sort(i, axis=1), np.tile(np.arange(6), (4, 1)))


def test_exclude_removes_pairs_before_topk():
    q, lab = data(n=40, m=200)
    _, top = brute(q, lab, 3)
    # exclude each row's current best and second-best label, plus a few random pairs
    pairs = np.concatenate([
        np.stack([np.arange(40), top[:, 0]], 1),
        np.stack([np.arange(40), top[:, 1]], 1),
        np.array([[3, 7], [3, 8], [39, 199]]),
    ])
    ref_s, ref_i = brute(q, lab, 10, pairs)
    for excl in (pairs, (pairs[:, 0], pairs[:, 1]),
                 sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(40, 200))):
        s, i = exact_topk(q, lab, 10, block_size=16, label_block_size=64, device="cpu",
                          exclude=excl)
        assert np.array_equal(i, ref_i)
        assert all(top[r, 0] not in i[r] and top[r, 1] not in i[r] for r in range(40))
    # excluding almost everything leaves -1 / -inf slots
    all_but_two = np.array([[0, c] for c in range(2, 200)])
    s, i = exact_topk(q[:1], lab, 5, device="cpu", exclude=all_but_two)
    assert sorted(i[0, :2].tolist()) == [0, 1]
    assert (i[0, 2:] == -1).all() and np.isneginf(s[0, 2:]).all()
    with pytest.raises(ValueError):
        exact_topk(q, lab, 5, device="cpu", exclude=np.array([[40, 0]]))


def test_faiss_flat_identical_to_exact():
    q, lab = data(n=200, m=3000, d=32, seed=3)
    s_e, i_e = exact_topk(q, lab, 20, device="cpu")
    s_f, i_f = faiss_topk(q, lab, 20, index="flat", use_gpu=False)
    assert s_f.dtype == np.float32 and i_f.dtype == np.int64
    assert np.array_equal(i_f, i_e)
    assert np.allclose(s_f, s_e, atol=1e-4)


def test_faiss_ivf_full_probe_equals_exact_and_exclude():
    q, lab = data(n=100, m=2000, d=16, seed=4)
    s_e, i_e = exact_topk(q, lab, 10, device="cpu")
    s_v, i_v = faiss_topk(q, lab, 10, index="ivf", nlist=16, nprobe=16, use_gpu=False)
    assert np.array_equal(i_v, i_e)
    # partial probing is approximate but still returns valid, sorted results
    s_a, i_a = faiss_topk(q, lab, 10, index="ivf", nlist=16, nprobe=2, use_gpu=False)
    assert (i_a >= -1).all() and (np.diff(s_a, axis=1) <= 1e-6).all()
    pairs = np.stack([np.arange(100), i_e[:, 0]], 1)
    s_x, i_x = exact_topk(q, lab, 10, device="cpu", exclude=pairs)
    s_fx, i_fx = faiss_topk(q, lab, 10, exclude=pairs, use_gpu=False)
    assert np.array_equal(i_fx, i_x)
    assert np.array_equal(i_fx[:, :9], i_e[:, 1:])


def test_topk_to_csr_round_trip():
    q, lab = data(n=30, m=100)
    s, i = exact_topk(q, lab, 7, device="cpu")
    m = topk_to_csr(s, i, 100)
    assert sp.isspmatrix_csr(m) and m.shape == (30, 100) and m.nnz == 30 * 7
    assert m.dtype == np.float32
    for r in range(30):
        assert m[r, i[r, 0]] == s[r, 0]
    s2, i2 = csr_to_topk(m, 7)
    assert np.array_equal(i2, i) and np.array_equal(s2, s)
    # invalid slots are dropped; explicit zero / negative scores are kept
    s[0, 5:] = -np.inf
    i[0, 5:] = -1
    s[1, 0] = 0.0
    m = topk_to_csr(s, i, 100)
    assert m.getrow(0).nnz == 5 and m.getrow(1).nnz == 7
    s3, i3 = csr_to_topk(m, 7)
    assert (i3[0, 5:] == -1).all()
    with pytest.raises(ValueError):
        topk_to_csr(np.zeros((1, 2)), np.array([[3, 3]]), 10)
    with pytest.raises(ValueError):
        topk_to_csr(np.zeros((1, 2)), np.array([[3, 10]]), 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_exact_on_cuda_matches_cpu():
    q, lab = data(n=500, m=5000, d=64, seed=5)
    s_c, i_c = exact_topk(q, lab, 10, device="cpu")
    s_g, i_g = exact_topk(q, lab, 10, device="cuda", block_size=128)
    assert (i_g == i_c).mean() > 0.999
    assert np.allclose(s_g, s_c, atol=1e-4)


def test_cpu_threshold_filter_paths_equal_bruteforce():
    # k=5 over tiles of 64 labels: the first tile of each query block is merged in
    # doubling column ranges (20, 40, 64), later tiles through the threshold filter
    q, lab = data(n=70, m=1000, d=16, seed=7)
    ref_s, ref_i = brute(q, lab, 5)
    for bs, lbs in ((16, 64), (70, 1000), (1, 3), (33, 999)):
        s, i = exact_topk(q, lab, 5, block_size=bs, label_block_size=lbs, device="cpu")
        assert np.array_equal(i, ref_i), (bs, lbs)
        assert np.allclose(s, ref_s, atol=1e-5)
    # scores that grow with the label index: every range beats the running threshold, so
    # each one takes the dense path (too many survivors)
    grow = np.zeros((300, 4), np.float32)
    grow[:, 0] = np.linspace(0, 1, 300)
    grow[:, 1] = np.random.default_rng(0).standard_normal(300) * 1e-3
    qg = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], np.float32)
    s, i = exact_topk(qg, grow, 7, block_size=2, label_block_size=40, device="cpu")
    assert np.array_equal(i, brute(qg, grow, 7)[1])


def test_half_precision_labels_are_converted_one_tile_at_a_time(tmp_path):
    import tracemalloc

    q, lab = data(n=20, m=60_000, d=32, seed=8)
    np.save(tmp_path / "lbl.npy", lab.astype(np.float16))
    mm = np.load(tmp_path / "lbl.npy", mmap_mode="r")
    ref = exact_topk(q, mm.astype(np.float32), 10, device="cpu")
    tracemalloc.start()
    got = exact_topk(q, mm, 10, device="cpu", label_block_size=4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(got[1], ref[1]) and np.allclose(got[0], ref[0], atol=1e-6)
    assert peak < 60_000 * 32 * 4 / 4  # far below one float32 copy of the labels (7.7 MB)


def test_exact_and_faiss_give_identical_top100_sets():
    q, lab = data(n=300, m=20_000, d=64, seed=9)
    s_e, i_e = exact_topk(q, lab, 100, device="cpu")
    s_f, i_f = faiss_topk(q, lab, 100, use_gpu=False)
    same = np.all(np.sort(i_e, axis=1) == np.sort(i_f, axis=1), axis=1)
    # a row may differ only by a float32 tie at the 100th place
    ref_s = brute(q[~same], lab, 101)[0] if (~same).any() else np.zeros((0, 101))
    assert np.all(ref_s[:, 99] - ref_s[:, 100] < 1e-5)
    assert same.mean() > 0.99
    assert np.allclose(s_e, s_f, atol=1e-5)
