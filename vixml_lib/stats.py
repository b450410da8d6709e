"""How sure is a difference? Paired intervals and tests over test queries, and spread over seeds.

Two runs evaluated on the same test queries give, per query i, metric values ``a_i`` and
``b_i`` (P@k, nDCG@k, PSP@k: :func:`per_query_metrics`). Their difference of means
``d = mean_i (a_i - b_i)`` is what a results table reports; the questions are how much it
would move with another sample of queries, and whether it could be 0.

- :func:`paired_bootstrap`: percentile bootstrap interval of ``d`` (Efron & Tibshirani,
  "An Introduction to the Bootstrap", 1993, ch. 13; the paired form of Koehn, "Statistical
  Significance Tests for Machine Translation Evaluation", EMNLP 2004): draw n queries with
  replacement R times, recompute ``d`` on each draw, take the ``(1 - c)/2`` and
  ``(1 + c)/2`` quantiles. For a ratio-of-means metric (PSP@k divides by the mean of the
  best achievable ranking) pass the per-query normaliser: each draw then computes
  ``sum(a - b) / sum(norm)`` on the same queries.
- :func:`sign_flip_test`: paired permutation test. Under H0 (the two runs are
  exchangeable per query) each ``d_i`` is as likely to be ``-d_i``; the two-sided p-value is
  ``P(|mean(s * d)| >= |mean(d)|)`` over random signs s, estimated as
  ``(1 + hits) / (1 + R)`` (Phipson & Smyth 2010), exact (all ``2^n`` sign vectors) when
  ``2^n <= R``.
- :func:`sign_test`: the binomial test on the number of queries where a beats b (ties
  dropped), ``p = P(|K - m/2| >= |k - m/2|)``, K ~ Binomial(m, 1/2).
- :func:`seed_summary`: mean, standard deviation (ddof 1) and Student-t interval
  ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)`` over seeds (small n).
- :class:`Comparison` and :func:`compare_runs`: one line per metric,
  ``"+3.1 [1.2, 5.0] p=0.002"`` (difference, interval, p-value); "within noise" means the
  interval contains 0 (:attr:`Comparison.within_noise`).

Everything is vectorised numpy in chunks of resamples, seeded (``numpy.random.default_rng``),
so the same call gives the same interval; 10,000 resamples x 1,000 queries take a fraction of
a second. Values are in the units given (percent, as :func:`vixml_lib.metrics.evaluate`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import product

import numpy as np

__all__ = ["per_query_metrics", "paired_bootstrap", "sign_flip_test", "sign_test", "seed_summary", "Comparison",
           "compare_runs", "format_interval", "within_noise"]

_CHUNK = 1 << 22  # resample x query cells per chunk (32 MiB of int64 indices)


# ----------------------------------------------------------------------------- per-query values
def per_query_metrics(pred, true, inv_psp=None, k: int = 5, filter_pairs=None) -> dict[str, np.ndarray]:
    """Per-query P@1..k, nDCG@1..k and (with ``inv_psp``) PSP@1..k in percent, (n,) arrays each.

    Computed with :mod:`vixml_lib.metrics.xmc`'s own top-k, flags and normalisers, so the
    mean over queries is :func:`~vixml_lib.metrics.evaluate`'s number: bit for bit for P@k
    when the columns are averaged as evaluate does (``np.mean((n, k) array, axis=0)``),
    for nDCG@k after evaluate's float32 rounding, to ~1e-15 relative for PSP@k.
    PSP@k is a ratio of means (weighted hits over those of the best achievable ranking), so
    its per-query value is the query's weighted P@k divided by the mean ideal one, and
    ``"PSP@j:norm"`` holds each query's ideal over that mean (mean 1): pass it as ``norm``
    to :func:`paired_bootstrap` to resample the denominator too.
    """
    from .data import formats
    from .metrics.topk import labels_at, topk_positions
    from .metrics.xmc import _checked_pair, _ext_weights, _Setup

    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pred, true = _checked_pair(pred, true)
    if filter_pairs is not None and len(filter_pairs):
        pred = formats.apply_filter(pred, filter_pairs)
    s = _Setup(pred, true)
    pos, _ = topk_positions(s.pred.indptr, s.pred.data, k)
    labels = labels_at(s.pred, pos)
    flags = s.flags(labels)  # (n, k) true value at each of the top k
    deno = 1 / (np.arange(k) + 1)
    prec = np.multiply(np.cumsum(flags, axis=-1), deno)  # (n, k): evaluate's P@j is prec.mean(axis=0)[j - 1]
    out = {f"P@{j + 1}": prec[:, j] * 100 for j in range(k)}
    norm = s.ndcg_norm(k)  # (n, 1)
    dcg = np.cumsum(np.multiply(flags, 1 / np.log2(np.arange(k) + 2)), axis=-1)
    ideal = 0
    for j in range(k):  # the same accumulation as metrics.xmc._ndcg_from_flags
        ideal += 1 / np.log2(j + 1 + 1)
        out[f"nDCG@{j + 1}"] = np.ravel(np.multiply(dcg[:, j].reshape(-1, 1), 1 / np.minimum(norm, ideal))) * 100
    if inv_psp is not None:
        w = _ext_weights(inv_psp, s.n_labels)
        num = np.multiply(np.cumsum(np.multiply(w[labels], flags), axis=-1), deno)  # (n, k)
        best = np.multiply(np.cumsum(s.ideal_flags(w, k), axis=-1), deno)  # (n, k)
        mean_best = np.mean(best, axis=0)  # (k,)
        with np.errstate(divide="ignore", invalid="ignore"):
            for j in range(k):
                out[f"PSP@{j + 1}"] = num[:, j] / mean_best[j] * 100
                out[f"PSP@{j + 1}:norm"] = best[:, j] / mean_best[j]
    return out


# ----------------------------------------------------------------------------- checks
def _paired(a, b, norm=None) -> tuple[np.ndarray, np.ndarray | None]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired per-query values must be two 1-D arrays of the same length, got shapes "
                         f"{a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no queries: the per-query arrays are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-query values contain NaN or infinity")
    if norm is not None:
        norm = np.asarray(norm, dtype=np.float64)
        if norm.shape != a.shape:
            raise ValueError(f"norm has shape {norm.shape}, the per-query values {a.shape}")
        if not np.isfinite(norm).all() or norm.sum() <= 0:
            raise ValueError("norm must be finite with a positive sum")
    return a - b, norm


def _check_level(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


# ----------------------------------------------------------------------------- paired tests
def paired_bootstrap(a, b, norm=None, n_resamples: int = 10_000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(d, lo, hi)``: the mean difference ``d = mean(a - b)`` and its percentile bootstrap
    interval at ``confidence`` (``n_resamples`` draws of the queries, seeded).

    With ``norm`` (per-query normaliser of a ratio-of-means metric) each draw computes
    ``mean(a - b) / mean(norm)`` on the drawn queries, times ``mean(norm)`` of all queries
    (so the full sample gives ``d``). Identical runs give ``(0, 0, 0)``; a constant shift c
    gives ``(c, c, c)``."""
    d, norm = _paired(a, b, norm)
    _check_level(confidence, n_resamples)
    n = d.size
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    step = max(1, _CHUNK // n)
    for s in range(0, n_resamples, step):
        idx = rng.integers(0, n, size=(min(step, n_resamples - s), n))  # (r, n) queries drawn
        if norm is None:
            stats[s:s + len(idx)] = d[idx].mean(axis=1)
        else:
            stats[s:s + len(idx)] = d[idx].sum(axis=1) / norm[idx].sum(axis=1) * norm.mean()
    est = float(d.mean()) if norm is None else float(d.sum() / norm.sum() * norm.mean())
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, (1 + confidence) / 2])
    return est, float(lo), float(hi)


def sign_flip_test(a, b, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired permutation (sign-flip) test of ``mean(a - b) = 0``.

    Exact when ``2^n <= n_resamples`` (all sign vectors), else ``(1 + hits) / (1 + R)`` over
    R random sign vectors. Differences are compared with a relative tolerance of 1e-9, so
    that sums equal in exact arithmetic count as reaching the observed one. All-zero
    differences give p = 1."""
    d, _ = _paired(a, b)
    _check_level(0.5, n_resamples)
    n = d.size
    observed = abs(d.sum())
    tol = 1e-9 * max(np.abs(d).sum(), 1e-300)
    if n <= 20 and 2 ** n <= n_resamples:  # exact: every sign vector once
        signs = np.array(list(product((1.0, -1.0), repeat=n)))  # (2^n, n)
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    step = max(1, _CHUNK // n)
    for s in range(0, n_resamples, step):
        r = min(step, n_resamples - s)
        signs = rng.integers(0, 2, size=(r, n), dtype=np.int8) * 2 - 1  # (r, n) in {-1, 1}
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_resamples)


def sign_test(a, b) -> dict:
    """Binomial sign test: ``{"wins", "losses", "ties", "p"}``; p two-sided (scipy's
    ``binomtest``), 1.0 when every query ties."""
    from scipy.stats import binomtest

    d, _ = _paired(a, b)
    wins, losses = int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0))
    m = wins + losses
    p = 1.0 if m == 0 else float(binomtest(wins, m, 0.5, alternative="two-sided").pvalue)
    return {"wins": wins, "losses": losses, "ties": int(d.size - m), "p": p}


# ----------------------------------------------------------------------------- seeds
def seed_summary(values, confidence: float = 0.95) -> dict:
    """Mean, standard deviation (ddof 1) and Student-t interval over seeds (one value per seed).

    ``{"mean", "std", "n", "lo", "hi"}``; with one seed std, lo and hi are NaN (no spread
    can be estimated)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("seed_summary needs at least one value")
    if not np.isfinite(v).all():
        raise ValueError(f"seed values contain NaN or infinity: {v.tolist()}")
    _check_level(confidence, 1)
    mean = float(v.mean())
    if v.size == 1:
        return {"mean": mean, "std": math.nan, "n": 1, "lo": math.nan, "hi": math.nan}
    std = float(v.std(ddof=1))
    half = float(t.ppf((1 + confidence) / 2, v.size - 1)) * std / math.sqrt(v.size)
    return {"mean": mean, "std": std, "n": int(v.size), "lo": mean - half, "hi": mean + half}


# ----------------------------------------------------------------------------- reporting
def within_noise(lo: float, hi: float) -> bool:
    """The rule: a difference is within noise when its interval contains 0."""
    return bool(lo <= 0 <= hi)


def format_interval(diff: float, lo: float, hi: float, p: float | None = None, digits: int = 1) -> str:
    """``"+3.1 [1.2, 5.0] p=0.002"`` (signed difference, interval, p-value if given;
    ``p<0.001`` below that)."""
    text = f"{diff:+.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    if p is not None:
        text += " p<0.001" if p < 0.001 else f" p={p:.3f}"
    return text


@dataclass(frozen=True)
class Comparison:
    """Run a minus run b on one metric: difference, bootstrap interval and sign-flip p-value."""

    metric: str
    diff: float
    lo: float
    hi: float
    p: float
    n_queries: int
    confidence: float = 0.95

    @property
    def within_noise(self) -> bool:
        return within_noise(self.lo, self.hi)

    def __str__(self) -> str:
        return format_interval(self.diff, self.lo, self.hi, self.p)

    def as_dict(self) -> dict:
        return {**asdict(self), "within_noise": self.within_noise, "text": str(self)}


def compare_runs(a: dict, b: dict, metrics=("P@1", "P@5", "nDCG@5", "PSP@5"), n_resamples: int = 10_000,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, Comparison]:
    """Each metric of two runs' :func:`per_query_metrics` (same queries): a - b with its
    paired bootstrap interval (PSP with its normaliser resampled) and sign-flip p-value.
    Metrics missing from either run are skipped (e.g. PSP without propensities)."""
    out = {}
    for m in metrics:
        if m not in a or m not in b:
            continue
        diff, lo, hi = paired_bootstrap(a[m], b[m], norm=a.get(f"{m}:norm"), n_resamples=n_resamples,
                                        confidence=confidence, seed=seed)
        p = sign_flip_test(a[m], b[m], n_resamples=n_resamples, seed=seed)
        out[m] = Comparison(m, diff, lo, hi, p, int(np.asarray(a[m]).size), confidence)
    return out
