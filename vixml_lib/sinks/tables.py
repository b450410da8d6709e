"""Tables of the sink measurements (plain-value rows, ready for ``report.table`` and
``save_metrics``): the placements, a summary per (model, placement), the per-layer mass,
the strongest receivers, and the retrieval results of the trained runs beside their sinks."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..runs import PipelineFolder
from .items import read_run_summary
from .measure import SinkMeasurement
from .metrics import RECEIVER_CATEGORIES, TARGETS
from .placements import PLACEMENT_NOTES, placement_template


def _later(values: np.ndarray) -> np.ndarray:
    """The later half of the layers (last axis)."""
    return values[..., values.shape[-1] // 2:]


def placement_rows(model, placements: Sequence[str]) -> list[dict]:
    """One row per placement: its template for ``model`` and what it puts where."""
    return [{"placement": p, "template": placement_template(model, p).describe(), "note": PLACEMENT_NOTES.get(p, "")}
            for p in placements]


def summary_rows(measurements: Sequence[SinkMeasurement]) -> list[dict]:
    """One row per (model, placement): mass on position 0 / images / EOS averaged over all
    layers and over the later half of the layers (mean over items, heads, layers), what
    sits at position 0, the largest norm ratio of position 0 over the layer outputs
    (:meth:`SinkMeasurement.position0_norm_ratio`), and the most frequent strongest
    receiver over (item, layer) pairs."""
    rows = []
    for m in measurements:
        row = {"model": m.model_name, "placement": m.placement, "position 0": m.position0_kind()}
        for t in TARGETS:
            lm = m.layer_mass(t)
            ok = ~np.isnan(lm).any(1)
            row[f"{t} mass"] = float(lm[ok].mean()) if ok.any() else None
            row[f"{t} mass (later layers)"] = float(_later(lm[ok]).mean()) if ok.any() else None
        row["pos0 norm ratio (peak)"] = float(np.nanmax(m.position0_norm_ratio()[1:]))
        _, cats = m.strongest_receivers()
        names, counts = np.unique(cats, return_counts=True)
        row["strongest receiver"] = str(names[counts.argmax()])
        row["n_items"] = m.n_items
        rows.append(row)
    return rows


def layer_rows(measurements: Sequence[SinkMeasurement], targets: Sequence[str] = TARGETS) -> list[dict]:
    """Tidy rows (model, placement, target, layer, mean, std, q25, q75, n_items) of the
    per-layer mass, for tables and exports."""
    rows = []
    for m in measurements:
        for t in targets:
            s = m.layer_summary(t)
            for layer in range(m.n_layers):
                stats = {k: (None if np.isnan(s[k][layer]) else float(s[k][layer]))
                         for k in ("mean", "std", "q25", "q75")}
                rows.append({"model": m.model_name, "placement": m.placement, "target": t, "layer": layer + 1,
                             **stats, "n_items": s["n_items"]})
    return rows


def receiver_rows(measurements: Sequence[SinkMeasurement], later_only: bool = False) -> list[dict]:
    """Per (model, placement): the percentage of (item, layer) pairs whose strongest
    receiver falls in each category (:func:`~vixml_lib.sinks.metrics.receiver_categories`)."""
    rows = []
    for m in measurements:
        _, c = m.strongest_receivers()
        if later_only:
            c = _later(c)
        row = {"model": m.model_name, "placement": m.placement}
        row.update({k: round(100.0 * float(np.mean(c == k)), 1) for k in RECEIVER_CATEGORIES})
        rows.append(row)
    return rows


def _sink_columns(trained: SinkMeasurement | None, untrained: SinkMeasurement | None) -> dict[str, Any]:
    """The sink columns of one :func:`retrieval_comparison` row."""
    cols: dict[str, Any] = {}
    summaries = {tag: summary_rows([m])[0] for tag, m in (("trained", trained), ("untrained", untrained))
                 if m is not None}
    for tag, s in summaries.items():
        cols[f"pos0 mass later ({tag})"] = s["pos0 mass (later layers)"]
        cols[f"image mass ({tag})"] = s["images mass"]
    if trained is not None:
        cols["position 0"] = trained.position0_kind()
        cols["strongest receiver"] = summaries["trained"]["strongest receiver"]
    return cols


def retrieval_comparison(run_dir: str | Path, trained_runs: Mapping[str, str],
                         measurements: Sequence[SinkMeasurement] = ()) -> list[dict]:
    """The ``text_image`` vs ``image_text`` retrieval results of the training runs
    (``trained_runs``: placement -> run name) beside the sink measurements of the trained
    model under its own template (``model_name`` = run name, ``meta["own"]``) and of the
    untrained model under the same placement (only when both have as many layers: a run
    trained with ``num_layers`` is compared with an untrained model cut alike). A missing
    run gives a ``missing`` row."""
    rows = []
    for placement, name in trained_runs.items():
        row: dict[str, Any] = {"placement": placement, "run": name}
        try:
            summary = read_run_summary(run_dir, name)
        except FileNotFoundError:
            row["status"] = f"missing ({PipelineFolder(run_dir).train_run(name).path})"
            rows.append(row)
            continue
        final = summary.get("final", {})
        row.update({"status": "ok", "template": summary.get("template"), "P@1": final.get("P@1"),
                    "P@5": final.get("P@5")})
        trained = next((m for m in measurements if m.model_name == name and m.meta.get("own")), None)
        untrained = next((m for m in measurements if m.model_name == "untrained" and m.placement == placement), None)
        if trained is not None and untrained is not None and trained.n_layers != untrained.n_layers:
            row["note"] = f"untrained model has {untrained.n_layers} layers, the run {trained.n_layers}: not set beside"
            untrained = None
        row.update(_sink_columns(trained, untrained))
        rows.append(row)
    return rows
