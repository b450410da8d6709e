"""Run against run, with intervals: trained run folders -> per-query metrics -> paired
bootstrap intervals and sign-flip p-values (:mod:`vixml_lib.stats`), and spread over seeds.

Two runs are compared on the test queries both evaluated (same dataset, sub-problem and
evaluation sample); a run's per-query values come from its saved predictions, scored with the
filter pairs and propensities of its own configuration, so their means are the run's
reported metrics.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .runs import TrainFolder
from .stats import compare_runs, format_interval, per_query_metrics, seed_summary

__all__ = ["per_query_of_run", "compare_folders", "comparison_rows", "seed_difference_rows"]

METRICS = ("P@1", "P@5", "PSP@1", "PSP@5")


def per_query_of_run(folder: str | Path, cache: dict | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``(per-query metrics, dataset rows of the evaluated test queries)`` of a finished run
    (it must have saved its predictions: ``save_embeddings``)."""
    from .data import formats
    from .data.inputs import load_labels
    from .training.config import load_train_config

    run = TrainFolder(folder)
    if not run.predictions.is_file():
        raise FileNotFoundError(f"{run.predictions}: no saved predictions (train with save_embeddings=True)")
    config = load_train_config(run.config)
    key = (config.data_dir, config.encoding, config.seed, config.max_labels, config.eval_max_queries, config.A,
           config.B)
    cache = {} if cache is None else cache
    if key not in cache:
        cache[key] = load_labels(config)
    labels = cache[key]
    pred = formats.read_predictions(run.predictions)
    if pred.shape != labels.Y_tst.shape:
        raise ValueError(f"{run.predictions}: shape {pred.shape}, but the run's test problem is {labels.Y_tst.shape}")
    values = per_query_metrics(pred, labels.Y_tst, labels.inv_psp, k=config.k, filter_pairs=labels.filter_tst)
    return values, labels.items_tst


def compare_folders(a: str | Path, b: str | Path, metrics: Sequence[str] = METRICS, cache: dict | None = None,
                    n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Run ``a`` minus run ``b`` on each metric, over the test queries both evaluated:
    :class:`vixml_lib.stats.Comparison` per metric."""
    cache = {} if cache is None else cache
    va, items_a = per_query_of_run(a, cache)
    vb, items_b = per_query_of_run(b, cache)
    if not np.array_equal(items_a, items_b):
        raise ValueError(f"{a} and {b} evaluated different test queries ({len(items_a)} and {len(items_b)}): "
                         "compare runs of the same sub-problem and evaluation sample")
    return compare_runs(va, vb, metrics=metrics, n_resamples=n_resamples, seed=seed)


def comparison_rows(folders: Mapping[str, str | Path], pairs: Sequence[Sequence[str]],
                    metrics: Sequence[str] = METRICS, n_resamples: int = 10_000) -> list[dict[str, Any]]:
    """One row per pair ``(a, b)`` of run names (``folders``: name -> run folder): each metric's
    ``a - b`` as ``"+3.1 [1.2, 5.0] p=0.002"`` (95% paired bootstrap interval over test
    queries, sign-flip p-value) and whether it is within noise (the interval contains 0)."""
    cache: dict = {}
    rows = []
    for a, b in pairs:
        res = compare_folders(folders[a], folders[b], metrics, cache, n_resamples)
        rows.append({"run": a, "minus": b, "queries": next(iter(res.values())).n_queries if res else 0,
                     **{m: str(c) for m, c in res.items()},
                     "within noise": ", ".join(m for m, c in res.items() if c.within_noise) or "-"})
    return rows


def seed_difference_rows(by_seed: Mapping[str, Mapping[int, str | Path]], pairs: Sequence[Sequence[str]],
                         metrics: Sequence[str] = METRICS) -> list[dict[str, Any]]:
    """Over seeds: for each pair ``(a, b)``, the per-seed difference of each metric's mean
    (``by_seed``: run name -> seed -> run folder), summarised as mean [t-interval] over seeds."""
    cache: dict = {}
    rows = []
    for a, b in pairs:
        seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
        diffs = {m: [] for m in metrics}
        for s in seeds:
            va, _ = per_query_of_run(by_seed[a][s], cache)
            vb, _ = per_query_of_run(by_seed[b][s], cache)
            for m in metrics:
                if m in va and m in vb:
                    diffs[m].append(float(np.mean(va[m]) - np.mean(vb[m])))
        row: dict[str, Any] = {"run": a, "minus": b, "seeds": len(seeds)}
        for m, d in diffs.items():
            if d:
                sm = seed_summary(d)
                row[m] = format_interval(sm["mean"], sm["lo"], sm["hi"]) if len(d) > 1 else f"{sm['mean']:+.1f}"
        rows.append(row)
    return rows
