"""Tests of vixml_lib.stats: paired intervals and tests with known answers, seeds, per-query metrics."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats as ss

from vixml_lib import metrics as M
from vixml_lib import stats


# ----------------------------------------------------------------------------- bootstrap: known answers
def test_identical_runs_give_a_zero_width_interval_at_zero():
    a = np.random.default_rng(0).choice([0.0, 20.0, 40.0, 100.0], size=500)
    d, lo, hi = stats.paired_bootstrap(a, a.copy())
    assert (d, lo, hi) == (0.0, 0.0, 0.0)
    assert stats.within_noise(lo, hi)
    assert stats.sign_flip_test(a, a) == 1.0
    assert stats.sign_test(a, a) == {"wins": 0, "losses": 0, "ties": 500, "p": 1.0}


def test_a_constant_shift_is_recovered_exactly():
    b = np.random.default_rng(1).choice([0.0, 20.0, 40.0, 60.0], size=800)
    d, lo, hi = stats.paired_bootstrap(b + 20.0, b)
    assert (d, lo, hi) == (20.0, 20.0, 20.0)
    assert not stats.within_noise(lo, hi)
    d, lo, hi = stats.paired_bootstrap(b - 2.5, b)  # exactly representable: exact again
    assert (d, lo, hi) == (-2.5, -2.5, -2.5)


def test_bootstrap_interval_matches_the_normal_theory_width():
    """Differences ~ N(1, 4): the 95% interval of the mean is about 1 +- 1.96 * 2 / sqrt(n)."""
    rng = np.random.default_rng(2)
    n = 2000
    b = rng.normal(size=n)
    a = b + rng.normal(1.0, 2.0, size=n)
    d, lo, hi = stats.paired_bootstrap(a, b, n_resamples=4000, seed=3)
    se = np.std(a - b, ddof=1) / math.sqrt(n)
    assert d == pytest.approx(np.mean(a - b))
    assert lo == pytest.approx(d - 1.96 * se, abs=0.15 * se)
    assert hi == pytest.approx(d + 1.96 * se, abs=0.15 * se)
    # a higher confidence gives a wider interval, the same seed the same interval
    _, lo99, hi99 = stats.paired_bootstrap(a, b, n_resamples=4000, seed=3, confidence=0.99)
    assert lo99 < lo and hi99 > hi
    assert stats.paired_bootstrap(a, b, n_resamples=4000, seed=3) == (d, lo, hi)


def test_bootstrap_with_a_normaliser_resamples_the_ratio():
    """norm: each draw is sum(a - b) / sum(norm) (scaled by mean(norm)); with norm = 1 it is the plain mean."""
    rng = np.random.default_rng(4)
    a, b = rng.random(300), rng.random(300)
    plain = stats.paired_bootstrap(a, b, seed=5, n_resamples=2000)
    ones = stats.paired_bootstrap(a, b, norm=np.ones(300), seed=5, n_resamples=2000)
    np.testing.assert_allclose(ones, plain, rtol=1e-12)
    norm = rng.random(300) * 2
    d, lo, hi = stats.paired_bootstrap(a, b, norm=norm, seed=5, n_resamples=2000)
    assert d == pytest.approx(np.sum(a - b) / np.sum(norm) * np.mean(norm))
    # the same draws by hand
    idx = np.random.default_rng(5).integers(0, 300, size=(2000, 300))
    by_hand = (a - b)[idx].sum(1) / norm[idx].sum(1) * norm.mean()
    assert (lo, hi) == pytest.approx(tuple(np.quantile(by_hand, [0.025, 0.975])), rel=1e-12)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same length"):
        stats.paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        stats.paired_bootstrap([], [])
    with pytest.raises(ValueError, match="NaN"):
        stats.sign_flip_test([1.0, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_bootstrap([1.0], [0.0], confidence=95)
    with pytest.raises(ValueError, match="norm"):
        stats.paired_bootstrap([1.0, 2.0], [0.0, 0.0], norm=[1.0])


def test_ten_thousand_resamples_of_a_thousand_queries_are_fast():
    import time

    rng = np.random.default_rng(6)
    a, b = rng.random(1000), rng.random(1000)
    t = time.perf_counter()
    stats.paired_bootstrap(a, b, n_resamples=10_000)
    stats.sign_flip_test(a, b, n_resamples=10_000)
    # generous: ~0.3 s here; this guards against a per-resample Python loop (~100x slower), not a speed target
    assert time.perf_counter() - t < 10


# ----------------------------------------------------------------------------- p-values
def test_sign_flip_is_exact_for_small_n_and_matches_scipy():
    # all 10 differences positive: only the all-+ and all-- sign vectors reach |sum| -> p = 2 / 2^10
    assert stats.sign_flip_test(np.ones(10), np.zeros(10)) == 2 / 1024
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.5, 1, 11), rng.normal(0, 1, 11)
    ref = ss.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                              n_resamples=10_000, alternative="two-sided").pvalue  # exact: 2^11 < 10,000
    assert stats.sign_flip_test(a, b) == pytest.approx(ref, rel=1e-12)


def test_sign_flip_p_of_a_strong_effect_is_small_and_of_a_null_effect_uniform():
    rng = np.random.default_rng(8)
    b = rng.normal(size=400)
    assert stats.sign_flip_test(b + rng.normal(0.3, 1, 400), b, n_resamples=2000) < 0.001
    # null: symmetric differences; over 200 seeded draws the p-values spread over (0, 1]
    ps = np.array([stats.sign_flip_test(rng.normal(size=60), np.zeros(60), n_resamples=500, seed=s)
                   for s in range(200)])
    assert 0.03 <= np.mean(ps < 0.05) <= 0.09  # ~5% reject at 5%
    assert 0.4 <= np.median(ps) <= 0.6
    assert ss.kstest(ps, "uniform").pvalue > 0.01


def test_sign_test_by_hand_and_against_scipy():
    # 9 wins, 1 loss, 2 ties: p = 2 * P(K >= 9), K ~ Bin(10, 1/2) = 2 * (10 + 1) / 1024
    a = np.array([1.0] * 9 + [0.0] + [5.0, 5.0])
    b = np.array([0.0] * 9 + [1.0] + [5.0, 5.0])
    out = stats.sign_test(a, b)
    assert out["wins"] == 9 and out["losses"] == 1 and out["ties"] == 2
    assert out["p"] == pytest.approx(22 / 1024, rel=1e-12)
    assert out["p"] == pytest.approx(ss.binomtest(9, 10).pvalue, rel=1e-12)


# ----------------------------------------------------------------------------- seeds
def test_seed_summary_t_interval_by_hand():
    s = stats.seed_summary([10.0, 12.0, 14.0])
    # mean 12, sd 2; Student t with 2 degrees of freedom has the closed-form quantile
    # t_p = (2p - 1) / sqrt(2 p (1 - p)); p = 0.975 -> 4.3027; half width t * sd / sqrt(n)
    t = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)
    half = t * 2 / math.sqrt(3)
    assert s["mean"] == 12.0 and s["std"] == 2.0 and s["n"] == 3
    assert s["lo"] == pytest.approx(12 - half, rel=1e-12) and s["hi"] == pytest.approx(12 + half, rel=1e-12)
    one = stats.seed_summary([7.0])
    assert one["mean"] == 7.0 and math.isnan(one["std"]) and math.isnan(one["lo"])
    with pytest.raises(ValueError, match="at least one"):
        stats.seed_summary([])


# ----------------------------------------------------------------------------- formatting
def test_format_and_within_noise():
    assert stats.format_interval(3.14, 1.2, 5.04, 0.002) == "+3.1 [1.2, 5.0] p=0.002"
    assert stats.format_interval(-0.5, -1.25, 0.3) == "-0.5 [-1.2, 0.3]"
    assert stats.format_interval(2, 1, 3, 0.0001) == "+2.0 [1.0, 3.0] p<0.001"
    assert stats.within_noise(-0.1, 2.0) and stats.within_noise(0.0, 0.0) and not stats.within_noise(0.1, 2.0)


# ----------------------------------------------------------------------------- per-query metrics
def _random_problem(seed, n=300, n_labels=40, density=0.06):
    rng = np.random.default_rng(seed)
    true = sp.random(n, n_labels, density=density, format="csr", random_state=rng, dtype=np.float32)
    true.data[:] = 1
    pred = sp.random(n, n_labels, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    pred = (pred + 0.5 * true).tocsr()  # better than chance
    train = sp.random(2 * n, n_labels, density=density, format="csr", random_state=rng, dtype=np.float32)
    train.data[:] = 1
    return pred, true, M.inverse_propensity(train)


def test_per_query_means_are_evaluates_numbers():
    pred, true, inv = _random_problem(9)
    filt = np.array([[0, int(pred[0].indices[0])], [5, int(pred[5].indices[0])]])
    ref = M.evaluate(pred, true, inv_psp=inv, k=5, filter_pairs=filt)
    pq = stats.per_query_metrics(pred, true, inv_psp=inv, k=5, filter_pairs=filt)
    assert all(v.shape == (300,) for v in pq.values())
    # P@k: averaged as evaluate averages (an (n, k) array along axis 0): bit for bit
    p_cols = np.mean(np.stack([pq[f"P@{j}"] / 100 for j in range(1, 6)], axis=1), axis=0)
    assert [float(v) * 100 for v in p_cols] == [ref[f"P@{j}"] for j in range(1, 6)]
    for j in range(1, 6):
        assert pq[f"P@{j}"].mean() == pytest.approx(ref[f"P@{j}"], rel=1e-13)
        assert float(np.float32(np.mean(pq[f"nDCG@{j}"] / 100))) * 100 == ref[f"nDCG@{j}"]  # float32 as pyxclib
        assert pq[f"PSP@{j}"].mean() == pytest.approx(ref[f"PSP@{j}"], rel=1e-12)
        assert pq[f"PSP@{j}:norm"].mean() == pytest.approx(1.0, rel=1e-12)
    assert "PSP@1" not in stats.per_query_metrics(pred, true, k=5)


def test_compare_runs_on_two_prediction_matrices():
    pred, true, inv = _random_problem(10)
    # the same scores without the boost of the true labels on every second query: clearly worse
    keep = sp.diags((np.arange(300) % 2 == 0).astype(np.float32))
    worse = (pred - 0.5 * (keep @ true)).tocsr()
    worse.eliminate_zeros()
    qa = stats.per_query_metrics(pred, true, inv_psp=inv)
    qb = stats.per_query_metrics(worse, true, inv_psp=inv)
    res = stats.compare_runs(qa, qb, metrics=("P@1", "nDCG@5", "PSP@5", "R@100"), n_resamples=2000)
    assert list(res) == ["P@1", "nDCG@5", "PSP@5"]  # R@100 is not a per-query metric here: skipped
    ev_a, ev_b = M.evaluate(pred, true, inv_psp=inv), M.evaluate(worse, true, inv_psp=inv)
    for m, c in res.items():
        assert c.diff == pytest.approx(ev_a[m] - ev_b[m], abs=1e-5)  # nDCG: evaluate rounds to float32
        assert c.lo <= c.diff <= c.hi and c.n_queries == 300
        assert c.p < 0.01 and not c.within_noise  # the noisy scores are clearly worse
        assert str(c) == stats.format_interval(c.diff, c.lo, c.hi, c.p)
        assert c.as_dict()["within_noise"] is False
    same = stats.compare_runs(qa, qa, n_resamples=500)
    assert all(c.within_noise and c.diff == 0 and c.p == 1.0 for c in same.values())
