"""Tests of vixml_lib.metrics: hand-computed cases, edge cases, and a per-row pure-Python
reference that follows pyxclib's definitions (xclib.evaluation.xc_metrics)."""
import math

import numpy as np
import pytest
import scipy.sparse as sp

from vixml_lib import metrics as M
from vixml_lib.data import formats
from vixml_lib.errors import DataFormatError
from vixml_lib.metrics import topk


def csr(rows, n_labels, dtype=np.float32):
    """rows: list of {label: value} dicts."""
    data, indices, indptr = [], [], [0]
    for r in rows:
        for lab in sorted(r):
            indices.append(lab)
            data.append(r[lab])
        indptr.append(len(indices))
    return sp.csr_matrix((np.asarray(data, dtype=dtype), np.asarray(indices, dtype=np.int32),
                          np.asarray(indptr, dtype=np.int32)), shape=(len(rows), n_labels))


# ----------------------------------------------------------------------------- a hand case
# 4 queries x 6 labels
#   q0: true {0, 2}; scores 0:.9 1:.8 2:.7 3:.1  -> ranking 0, 1, 2, 3   flags@3 [1, 0, 1]
#   q1: true {1, 4}; scores 1:.3 4:.5            -> ranking 4, 1, pad    flags@3 [1, 1, 0]
#   q2: true {};     scores 5:.6                 -> ranking 5, pad, pad  flags@3 [0, 0, 0]
#   q3: true {3};    no prediction               -> pad, pad, pad        flags@3 [0, 0, 0]
TRUE = csr([{0: 1, 2: 1}, {1: 1, 4: 1}, {}, {3: 1}], 6)
PRED = csr([{0: .9, 1: .8, 2: .7, 3: .1}, {1: .3, 4: .5}, {5: .6}, {}], 6)
L2 = 1 / math.log2(3)  # discount of rank 2 (0.6309...); rank 1: 1, rank 3: 1/log2(4) = 0.5
IDCG2 = 1 + L2  # ideal DCG of a row with 2 true labels


def test_topk_indices_pads_with_n_labels():
    top = M.topk_indices(PRED, 3)
    assert top.tolist() == [[0, 1, 2], [4, 1, 6], [5, 6, 6], [6, 6, 6]]


def test_precision_by_hand():
    # P@1 = (1 + 1 + 0 + 0) / 4; P@2 = (1/2 + 2/2 + 0 + 0) / 4; P@3 = (2/3 + 2/3) / 4
    np.testing.assert_allclose(M.precision(PRED, TRUE, 3), [0.5, 0.375, 1 / 3], rtol=1e-12)


def test_ndcg_by_hand():
    # q0: DCG = [1, 1, 1 + 0.5]; n_pos = 2 -> normaliser min(IDCG2, ideal@k) = [1, IDCG2, IDCG2]
    # q1: DCG = [1, 1 + L2, 1 + L2], same normalisers -> [1, 1, 1]
    # q2 (no true label) and q3 (no prediction) contribute 0
    expected = [(1 + 1) / 4, (1 / IDCG2 + 1) / 4, (1.5 / IDCG2 + 1) / 4]
    got = M.ndcg(PRED, TRUE, 3)
    assert got.dtype == np.float32  # as pyxclib
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_recall_by_hand():
    # q0: cumulative hits [1, 1, 2] / 2; q1: [1, 2, 2] / 2; q2: 0 / 1 (no label: denominator 1)
    # q3: 0 / 1
    np.testing.assert_allclose(M.recall(PRED, TRUE, 3), [0.25, 0.375, 0.5], rtol=1e-6)


# training labels: 10 rows; label l occurs in FREQS[l] rows
FREQS = [5, 1, 0, 2, 3, 0]
TRAIN = csr([{l: 1 for l in range(6) if i < FREQS[l]} for i in range(10)], 6)


def weights_by_formula(freqs, n, A=0.6, B=2.6):
    C = (math.log(n) - 1) * (B + 1) ** A
    return [1 + C * (f + B) ** (-A) for f in freqs]


def test_inverse_propensity_formula():
    w = M.inverse_propensity(TRAIN)
    np.testing.assert_allclose(w, weights_by_formula(FREQS, 10), rtol=1e-6)
    # rarer labels weigh more; other A, B
    assert w[2] > w[1] > w[3] > w[4] > w[0]
    np.testing.assert_allclose(M.inverse_propensity(TRAIN, A=0.5, B=0.4),
                               weights_by_formula(FREQS, 10, 0.5, 0.4), rtol=1e-6)


def test_psprecision_by_hand():
    w = M.inverse_propensity(TRAIN)
    w0, w1, w2, w3, w4, _ = weights_by_formula(FREQS, 10)
    # predicted hits: q0 label 0 at rank 1, label 2 at rank 3; q1 label 4 at 1, label 1 at 2
    num = [(w0 + w4) / 4, (w0 / 2 + (w4 + w1) / 2) / 4, ((w0 + w2) / 3 + (w4 + w1) / 3) / 4]
    # ideal rankings by weight: q0 [w2, w0] (f2 = 0 < f0 = 5), q1 [w1, w4], q3 [w3]
    den = [(w2 + w1 + w3) / 4,
           ((w2 + w0) / 2 + (w1 + w4) / 2 + w3 / 2) / 4,
           ((w2 + w0) / 3 + (w1 + w4) / 3 + w3 / 3) / 4]
    np.testing.assert_allclose(M.psprecision(PRED, TRUE, w, 3), np.divide(num, den), rtol=1e-6)


def test_psndcg_by_hand():
    w = M.inverse_propensity(TRAIN)
    w0, w1, w2, w3, w4, _ = weights_by_formula(FREQS, 10)
    norm2 = [1, IDCG2, IDCG2]  # q0 and q1 (n_pos = 2)
    norm1 = [1, 1, 1]  # q3 (n_pos = 1): min(1, ideal@k)
    q0 = [w0, w0, w0 + 0.5 * w2]
    q1 = [w4, w4 + L2 * w1, w4 + L2 * w1]
    i0 = [w2, w2 + L2 * w0, w2 + L2 * w0]
    i1 = [w1, w1 + L2 * w4, w1 + L2 * w4]
    i3 = [w3, w3, w3]
    expected = [((q0[j] + q1[j]) / norm2[j] / 4)
                / (((i0[j] + i1[j]) / norm2[j] + i3[j] / norm1[j]) / 4) for j in range(3)]
    np.testing.assert_allclose(M.psndcg(PRED, TRUE, w, 3), expected, rtol=1e-6)


def test_filter_removes_correct_top1():
    pairs = np.array([[0, 0], [2, 1]])  # (2, 1) has no stored entry: ignored
    filtered = formats.apply_filter(PRED, pairs)
    assert filtered.nnz == PRED.nnz - 1
    assert 0 not in filtered[0].indices  # eliminated, not a stored zero
    # q0's ranking becomes 1, 2, 3: P@1 = (0 + 1 + 0 + 0) / 4 instead of 0.5
    res = M.evaluate(PRED, TRUE, k=1, recall_k=(), filter_pairs=pairs)
    assert res["P@1"] == pytest.approx(25.0)
    assert M.evaluate(PRED, TRUE, k=1, recall_k=())["P@1"] == pytest.approx(50.0)
    assert PRED.nnz == 7  # the input is left as it was


def test_empty_and_unlabelled_rows():
    true = csr([{}, {}, {1: 1}], 4)
    pred = csr([{}, {0: .5}, {}], 4)
    for fn in (M.precision, M.ndcg, M.recall):
        np.testing.assert_array_equal(fn(pred, true, 5), np.zeros(5))
    assert M.topk_indices(pred, 2).tolist() == [[4, 4], [0, 4], [4, 4]]


def test_evaluate_keys_percent_and_consistency():
    w = M.inverse_propensity(TRAIN)
    res = M.evaluate(PRED, TRUE, inv_psp=w, k=3, recall_k=(2, 3))
    assert list(res) == ["P@1", "P@2", "P@3", "nDCG@1", "nDCG@2", "nDCG@3",
                         "PSP@1", "PSP@2", "PSP@3", "PSnDCG@1", "PSnDCG@2", "PSnDCG@3",
                         "R@2", "R@3"]
    for name, fn in [("P", M.precision), ("nDCG", M.ndcg), ("R", M.recall)]:
        vals = fn(PRED, TRUE, 3)
        for j in range(3):
            key = f"{name}@{j + 1}"
            if key in res:
                assert res[key] == float(vals[j]) * 100
    for name, fn in [("PSP", M.psprecision), ("PSnDCG", M.psndcg)]:
        vals = fn(PRED, TRUE, w, 3)
        for j in range(3):
            assert res[f"{name}@{j + 1}"] == float(vals[j]) * 100
    assert "PSP@1" not in M.evaluate(PRED, TRUE, k=3)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 6\).*\(4, 7\)"):
        M.evaluate(PRED, sp.csr_matrix((4, 7), dtype=np.float32))
    with pytest.raises(ValueError, match="inv_psp"):
        M.evaluate(PRED, TRUE, inv_psp=np.ones(5))


def test_ties_give_a_valid_ranking():
    # equal scores: any order is acceptable, but the top-k must hold the k best scores
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 4, size=(50, 30)).astype(np.float32) + 1  # many ties, no zero
    pred = sp.csr_matrix(dense)
    top = M.topk_indices(pred, 5)
    best = -np.sort(-dense, axis=1)[:, :5]
    np.testing.assert_array_equal(np.take_along_axis(dense, top, axis=1), best)
    assert all(len(set(r)) == 5 for r in top.tolist())
    # rows of unequal length with ties
    dense[::3, 10:] = 0
    pred = sp.csr_matrix(dense)
    top = M.topk_indices(pred, 25)
    for i in range(50):
        stored = dense[i][dense[i] > 0]
        want = -np.sort(-stored)[:25]
        got = [dense[i, j] for j in top[i] if j < 30]
        np.testing.assert_array_equal(got, want)
        assert all(j == 30 for j in top[i][len(want):])


def test_zero_scores_are_candidates():
    # an explicitly stored 0 score is a prediction like any other (pyxclib: stored entries)
    pred = sp.csr_matrix((np.array([0.0, -1.0], np.float32), np.array([1, 2]), np.array([0, 2])),
                         shape=(1, 4))
    true = csr([{1: 1}], 4)
    assert M.topk_indices(pred, 3).tolist() == [[1, 2, 4]]
    res = M.evaluate(pred, true, k=2, recall_k=(1,))
    assert res["P@1"] == 100.0 and res["R@1"] == 100.0


# ----------------------------------------------------------------------------- reference
def reference(pred, true, inv_psp, K, R):
    """Straightforward per-row implementation of pyxclib's definitions."""
    n, L = true.shape
    pred, true = pred.tocsr(), true.tocsr()
    w = list(inv_psp) + [0.0]
    P, N, Rc = np.zeros(K), np.zeros(K), np.zeros(R)
    psp_num, psp_den, psn_num, psn_den = np.zeros(K), np.zeros(K), np.zeros(K), np.zeros(K)
    disc = [1 / math.log2(j + 2) for j in range(max(K, R))]
    counts = [int(sum(true.data[true.indptr[i]:true.indptr[i + 1]])) for i in range(n)]
    max_pos = max(max(counts), K)
    idcg = np.cumsum([1 / math.log2(j + 2) for j in range(max_pos)])
    for i in range(n):
        tv = {int(l): float(v) for l, v in zip(true.indices[true.indptr[i]:true.indptr[i + 1]],
                                               true.data[true.indptr[i]:true.indptr[i + 1]])}
        s, e = pred.indptr[i], pred.indptr[i + 1]
        ranked = sorted(zip(pred.data[s:e], pred.indices[s:e]), key=lambda t: -t[0])
        top = [int(l) for _, l in ranked][:max(K, R)]
        top += [L] * (max(K, R) - len(top))
        flags = [tv.get(l, 0.0) for l in top]
        ideal = sorted((w[l] * v for l, v in tv.items()), reverse=True)[:K]
        ideal += [0.0] * (K - len(ideal))
        n_norm = idcg[counts[i] - 1]  # counts 0 -> last element (as pyxclib's [-1])
        total = sum(tv.values())
        for k in range(1, K + 1):
            P[k - 1] += sum(flags[:k]) / k
            norm = min(n_norm, sum(disc[:k]))
            N[k - 1] += sum(f * d for f, d in zip(flags[:k], disc)) / norm
            psp_num[k - 1] += sum(f * w[l] for f, l in zip(flags[:k], top)) / k
            psp_den[k - 1] += sum(ideal[:k]) / k
            psn_num[k - 1] += sum(f * w[l] * d for f, l, d in zip(flags[:k], top, disc)) / norm
            psn_den[k - 1] += sum(v * d for v, d in zip(ideal[:k], disc)) / norm
        for r in range(1, R + 1):
            Rc[r - 1] += sum(flags[:r]) / (total if total != 0 else 1)
    return {"P": P / n, "nDCG": N / n, "PSP": psp_num / psp_den, "PSnDCG": psn_num / psn_den,
            "R": Rc / n}


def random_case(rng, n, L, nnz_choices, true_max=6, values=(1.0,)):
    """Distinct scores everywhere (no ties); rows with 0 entries included."""
    counts = rng.choice(nnz_choices, size=n)
    total = int(counts.sum())
    scores = (rng.permutation(total) + 1).astype(np.float64) / (total + 1)
    rows, cols = [], []
    for i, c in enumerate(counts):
        cols.extend(rng.choice(L, size=c, replace=False))
        rows.extend([i] * c)
    pred = sp.csr_matrix((scores.astype(np.float32), (rows, cols)), shape=(n, L))
    tr, tc, tv = [], [], []
    for i in range(n):
        c = rng.integers(0, true_max + 1)
        labs = rng.choice(L, size=c, replace=False)
        tr.extend([i] * c)
        tc.extend(labs)
        tv.extend(rng.choice(values, size=c))
    true = sp.csr_matrix((np.asarray(tv, np.float32), (tr, tc)), shape=(n, L))
    # some true labels among the predictions, so that metrics are not all 0
    boost = 2.0 + rng.permutation(true.nnz).astype(np.float32) / true.nnz
    pred = pred + sp.csr_matrix((boost, true.indices, true.indptr), shape=(n, L)).multiply(
        rng.random((n, L)) < 0.5)
    pred = sp.csr_matrix(pred)
    pred.eliminate_zeros()
    pred.sort_indices()
    return pred, true


@pytest.mark.parametrize("case", ["varying", "uniform", "skewed", "weighted", "blocks"])
def test_against_reference(case, monkeypatch):
    rng = np.random.default_rng(
        {"varying": 0, "uniform": 1, "skewed": 2, "weighted": 4, "blocks": 5}[case])
    K, R = 5, 12
    if case == "blocks":  # rows processed in many small blocks
        monkeypatch.setattr(topk, "_BLOCK", 64)
        pred, true = random_case(rng, 90, 40, [0, 1, 3, 7, 15, 30])
    elif case == "varying":
        pred, true = random_case(rng, 80, 40, [0, 1, 3, 7, 15, 30])
    elif case == "uniform":
        pred, true = random_case(rng, 60, 50, [20])
        pred = M_uniform(pred, 20)
    elif case == "skewed":  # one very long row: the global-sort path
        pred, true = random_case(rng, 40, 3000, [0, 2, 6])
        pred = sp.vstack([pred, sp.csr_matrix(rng.random((1, 3000)).astype(np.float32) + 3)])
        # ... whose true labels are many too: the ideal ranking takes the sort path as well
        long_true = np.sort(rng.choice(3000, size=2000, replace=False))
        true = sp.vstack([true, sp.csr_matrix((np.ones(2000), (np.zeros(2000, int), long_true)),
                                              shape=(1, 3000))]).tocsr().astype(np.float32)
        pred = sp.csr_matrix(pred)
    else:  # non-binary true values
        pred, true = random_case(rng, 70, 30, [0, 4, 9, 25], values=(1.0, 2.0, 0.5))
    inv = M.inverse_propensity(sp.csr_matrix(rng.random((200, true.shape[1])) < 0.05))
    ref = reference(pred, true, inv, K, R)
    tol = dict(rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(M.precision(pred, true, K), ref["P"], **tol)
    np.testing.assert_allclose(M.ndcg(pred, true, K), ref["nDCG"], **tol)
    np.testing.assert_allclose(M.psprecision(pred, true, inv, K), ref["PSP"], **tol)
    np.testing.assert_allclose(M.psndcg(pred, true, inv, K), ref["PSnDCG"], **tol)
    np.testing.assert_allclose(M.recall(pred, true, R), ref["R"], **tol)
    res = M.evaluate(pred, true, inv_psp=inv, k=K, recall_k=(1, 3, R))
    for name in ("P", "nDCG", "PSP", "PSnDCG"):
        np.testing.assert_allclose([res[f"{name}@{j}"] / 100 for j in range(1, K + 1)],
                                   ref[name], **tol)
    for r in (1, 3, R):
        np.testing.assert_allclose(res[f"R@{r}"] / 100, ref["R"][r - 1], **tol)
        # identical (bit for bit) to the full recall curve, as pyxclib reduces it
        assert res[f"R@{r}"] == float(M.recall(pred, true, r)[r - 1]) * 100
    # the ranking itself
    top = M.topk_indices(pred, K)
    for i in range(pred.shape[0]):
        s, e = pred.indptr[i], pred.indptr[i + 1]
        want = [int(l) for _, l in sorted(zip(pred.data[s:e], pred.indices[s:e]),
                                          key=lambda t: -t[0])][:K]
        assert top[i].tolist() == want + [pred.shape[1]] * (K - len(want))


def M_uniform(pred, m):
    """Keep exactly m stored entries a row (rows with fewer get small extra scores)."""
    rows = []
    L = pred.shape[1]
    for i in range(pred.shape[0]):
        s, e = pred.indptr[i], pred.indptr[i + 1]
        d = dict(zip(pred.indices[s:e].tolist(), pred.data[s:e].tolist()))
        j = 0
        while len(d) < m:
            if j not in d:
                d[j] = 1e-3 * (i * L + j + 1) / (pred.shape[0] * L)
            j += 1
        rows.append(dict(sorted(d.items(), key=lambda t: -t[1])[:m]))
    out = csr(rows, L)
    assert np.all(np.diff(out.indptr) == m)
    return out


def test_unsorted_prediction_indices():
    rng = np.random.default_rng(7)
    pred, true = random_case(rng, 30, 20, [0, 5, 12])
    shuffled = pred.copy()
    for i in range(pred.shape[0]):
        s, e = pred.indptr[i], pred.indptr[i + 1]
        p = rng.permutation(e - s)
        shuffled.indices[s:e] = pred.indices[s:e][p]
        shuffled.data[s:e] = pred.data[s:e][p]
    shuffled.has_sorted_indices = False
    assert M.evaluate(shuffled, true) == M.evaluate(pred, true)


def test_evaluate_files(tmp_path):
    w_train = TRAIN
    formats.write_xy(tmp_path / "tst_X_Y.txt", TRUE)
    formats.write_xy(tmp_path / "trn_X_Y.txt", w_train)
    formats.write_predictions(tmp_path / "P.npz", PRED)
    formats.write_filter(tmp_path / "filter.txt", [[0, 0]])
    got = M.evaluate_files(tmp_path / "tst_X_Y.txt", tmp_path / "P.npz",
                           train_path=tmp_path / "trn_X_Y.txt",
                           filter_path=tmp_path / "filter.txt", k=3, recall_k=(2,))
    want = M.evaluate(PRED, TRUE, inv_psp=M.inverse_propensity(TRAIN), k=3, recall_k=(2,),
                      filter_pairs=np.array([[0, 0]]))
    assert got == want
    assert got["P@1"] == pytest.approx(25.0)
    # a training file with another number of labels
    formats.write_xy(tmp_path / "bad_trn.txt", sp.csr_matrix((3, 7), dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"bad_trn.txt:1: .*7 labels.*6"):
        M.evaluate_files(tmp_path / "tst_X_Y.txt", tmp_path / "P.npz",
                         train_path=tmp_path / "bad_trn.txt")
    # predictions of another shape
    formats.write_predictions(tmp_path / "P2.npz", sp.csr_matrix((4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        M.evaluate_files(tmp_path / "tst_X_Y.txt", tmp_path / "P2.npz")


def test_no_heavy_imports():
    import subprocess
    import sys
    code = ("import sys, vixml_lib.metrics, vixml_lib.data.formats; "
            "print(any(m in sys.modules for m in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
