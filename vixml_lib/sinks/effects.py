"""Retrieval under interventions: label and query embeddings recomputed with an
intervention (:mod:`vixml_lib.sinks.interventions`) on a trained run's test problem,
per-query P@1 / P@5 before and after, and a table with paired bootstrap intervals.

The test problem is the run's own (its :class:`~vixml_lib.training.TrainConfig`, read by
:func:`~vixml_lib.data.inputs.load_training_data`), or for a CPU budget a seeded
sub-problem of it (``max_labels``, ``max_queries``: the shared sub-problem rule); the
before and after numbers of a row always come from the same queries and labels.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .interventions import intervene, parse_intervention
from .placements import placement_template, same_template

log = logging.getLogger(__name__)


@dataclass
class RetrievalScores:
    """Per-query retrieval numbers of one model (under one intervention): ``per_query`` name
    (``P@1``, ``P@5``) -> [n_queries] in percent, the run's ``metrics`` (percent, pyxclib's
    definitions) and the size of the problem."""

    per_query: dict[str, np.ndarray]
    metrics: dict[str, float]
    n_queries: int
    n_labels: int


@dataclass
class InterventionResult:
    """The scores of ``model_name`` under ``intervention`` (its name) and the template the
    prompts were assembled with (``template``), beside the model's own (``own_template``)."""

    model_name: str
    intervention: str
    template: str
    own_template: str
    scores: RetrievalScores
    meta: dict = field(default_factory=dict)


def per_query_precision(indices: np.ndarray, Y: sp.csr_matrix, ks: Sequence[int] = (1, 5)) -> dict[str, np.ndarray]:
    """Per-query ``P@k`` (percent) of ranked label ``indices`` [n, K] (best first; entries
    outside ``0 .. n_labels-1`` are misses) against the truth ``Y`` [n, n_labels]: the
    share of the first ``k`` that are true labels (pyxclib: divided by ``k`` even when a
    query has fewer true labels)."""
    indices = np.asarray(indices)
    n, K = indices.shape
    if n != Y.shape[0]:
        raise ValueError(f"{n} ranked rows for a truth matrix of {Y.shape[0]} queries")
    Y = sp.csr_matrix(Y)
    valid = (indices >= 0) & (indices < Y.shape[1])
    rows = np.repeat(np.arange(n), K)
    hits = np.asarray(Y[rows, np.where(valid, indices, 0).ravel()]).reshape(n, K) > 0
    hits &= valid
    out = {}
    for k in ks:
        if k > K:
            raise ValueError(f"P@{k} needs {k} ranked labels per query, got {K}")
        out[f"P@{k}"] = 100.0 * hits[:, :k].sum(1) / k
    return out


def retrieval_scores(model, data, config, *, ks: Sequence[int] = (1, 5), device=None) -> RetrievalScores:
    """Score ``model`` (as trained, or inside an intervention) as the training loop does
    (:func:`~vixml_lib.training.evaluate_model`: labels and test queries encoded, filter pairs
    excluded before the top k), and per query: ``P@k`` for ``k`` in ``ks`` from the same
    predictions. (A run whose labels are searched through a transform, e.g. PRIME's
    prototypes, is scored here on its plain label embeddings.)"""
    from ..retrieval import csr_to_topk
    from ..training.evaluation import evaluate_model

    metrics, out = evaluate_model(model, data, config, device=device)
    k = min(max(ks), data.n_labels)
    _, indices = csr_to_topk(out["pred"], k)
    return RetrievalScores(per_query_precision(indices, data.Y_tst, [q for q in ks if q <= k]), metrics,
                           int(data.Y_tst.shape[0]), int(data.n_labels))


def intervention_data(run, *, max_labels: int | None = None, max_queries: int | None = None,
                      data_dir: str | None = None):
    """``(config, data)``: the test problem of the trained ``run``
    (:class:`~vixml_lib.sinks.items.TrainedRun`), its ``TrainConfig`` with the overrides
    given (a seeded sub-problem: ``max_labels`` labels and the test queries with one of
    them, at most ``max_queries`` of those; ``data_dir`` where the dataset now lives)."""
    from ..data.inputs import load_training_data

    if run.config is None:
        raise FileNotFoundError(f"{run.folder}: the run has no saved TrainConfig (config.yaml)")
    changes: dict[str, Any] = {}
    if max_labels is not None:
        changes["max_labels"] = int(max_labels)
    if max_queries is not None:
        changes["eval_max_queries"] = int(max_queries)
    if data_dir is not None:
        changes["data_dir"] = str(data_dir)
    config = dataclasses.replace(run.config, **changes)
    return config, load_training_data(config, run.model)


def run_interventions(model, data, config, interventions: Sequence[str], *, model_name: str,
                      device=None, progress=None) -> list[InterventionResult]:
    """:func:`retrieval_scores` of ``model`` as it is (``none``, always first) and under each
    of ``interventions`` (names, see :mod:`~vixml_lib.sinks.interventions`); a placement that
    is the model's own template is skipped."""
    own = model.template.name
    names = ["none", *[str(s) for s in interventions if str(s) != "none"]]
    out = []
    for name in names:
        iv = parse_intervention(name)
        if iv.kind == "placement" and same_template(placement_template(model, iv.placement), model.template):
            log.info("%s: %s is the model's own template, skipped", model_name, name)
            continue
        with intervene(model, name) as iv:
            template = iv.placement or own
            if progress is not None:
                progress(f"{model_name}: {name} ({template})")
            scores = retrieval_scores(model, data, config, device=device)
        out.append(InterventionResult(model_name, name, template, own, scores, {"kind": iv.kind}))
    return out


def _delta_columns(before: np.ndarray, after: np.ndarray, metric: str, n_boot: int, seed: int) -> dict[str, Any]:
    from ..stats import paired_bootstrap

    diff, low, high = paired_bootstrap(after, before, n_resamples=n_boot, seed=seed)  # mean(after - before)
    return {f"{metric} before": float(before.mean()), f"{metric} after": float(after.mean()),
            f"Δ{metric}": diff, f"Δ{metric} 95% low": low, f"Δ{metric} 95% high": high}


def intervention_rows(results: Sequence[InterventionResult], *, metrics: Sequence[str] = ("P@1", "P@5"),
                      n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per (model, intervention other than ``none``): the template used, P@1 / P@5
    before (the model as it is, same queries) and after, and the mean per-query difference
    with its 95 % paired bootstrap interval over the test queries."""
    base = {r.model_name: r for r in results if r.intervention == "none"}
    rows = []
    for r in results:
        if r.intervention == "none":
            continue
        b = base.get(r.model_name)
        if b is None:
            raise ValueError(f"no 'none' result of {r.model_name!r} to compare {r.intervention!r} with")
        row = {"model": r.model_name, "trained template": r.own_template, "intervention": r.intervention,
               "template used": r.template}
        for m in metrics:
            row.update(_delta_columns(b.scores.per_query[m], r.scores.per_query[m], m, n_boot, seed))
        row.update({"n queries": r.scores.n_queries, "n labels": r.scores.n_labels})
        rows.append(row)
    return rows


def baseline_rows(results: Sequence[InterventionResult]) -> list[dict]:
    """One row per model as it is: P@1 / P@5 on the intervention problem, beside the
    metrics that the evaluation computes from the same top-k (they agree unless scores tie)."""
    rows = []
    for r in results:
        if r.intervention != "none":
            continue
        row = {"model": r.model_name, "template": r.own_template, "n queries": r.scores.n_queries,
               "n labels": r.scores.n_labels}
        row.update({f"{m} (per query)": float(v.mean()) for m, v in r.scores.per_query.items()})
        row.update({f"{m} (metrics)": r.scores.metrics.get(m) for m in ("P@1", "P@5")})
        rows.append(row)
    return rows
