"""Results of an ablation grid: one row per cell and backbone (metrics, seconds, status),
saved as ``ablations/results.{csv,json}`` of the pipeline run folder, shown as a table, a
per-factor effect table and a bar chart."""
from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io_utils import atomic_open, read_json, write_json
from ..runs import PipelineFolder
from .grid import DEFAULT_FACTORS, Cell, backbone_kind, expand_grid

#: the metrics of the results table (percent)
METRICS = ("P@1", "P@5", "nDCG@5", "PSP@5")


def _describe(cell: Cell, settings: Mapping) -> str:
    """The cell's template as the backbone renders it (its preset's and its own template overrides)."""
    from ..models import MODEL_PRESETS

    preset = MODEL_PRESETS.get(settings.get("model", ""))
    overrides = {**(preset.template_overrides if preset else {}),
                 **dict(dict(settings.get("model_overrides") or {}).get("template_overrides") or {})}
    try:
        return cell.describe(**overrides)
    except (TypeError, ValueError):  # an invalid override: the cell's run reports it
        return cell.describe()


def cell_row(backbone: str, settings: Mapping, cell: Cell | None, run_dir: Path, out: Path | None,
             seed: int | None = None) -> dict:
    described = _describe(cell, settings) if cell is not None else ""
    row = {"backbone": backbone, "model": settings.get("model"), "kind": cell.kind if cell else None,
           "cell": cell.name if cell else "*", "seed": seed, "template": described,
           "images": cell.images if cell else None, "reference": cell.reference if cell else None}
    row.update({f: v for f, v in (cell.factors if cell else {}).items() if f != "images"})
    row.update({m: None for m in METRICS})
    row.update(train_s=None, eval_s=None, wall_s=None, status="pending", error="",
               aliases=", ".join(cell.aliases) if cell else "",
               out_dir=str(out.relative_to(run_dir)) if out is not None else "")
    return row


def describe_grid(backbones: Mapping[str, Mapping[str, Any]], factors: Mapping[str, Sequence] | None = None,
                  fixed: Mapping[str, Any] | None = None) -> list[dict]:
    """One row per cell the grid trains for each backbone (kind, template, aliases), before training."""
    rows = []
    for name, settings in backbones.items():
        try:
            kind = backbone_kind(settings)
            cells = expand_grid(factors, kind=kind, fixed=fixed)
        except Exception as e:  # noqa: BLE001 - shown here, reported again by run_grid
            rows.append({"backbone": name, "cell": "*", "error": short_error(e)})
            continue
        rows.extend(cell_row(name, settings, c, Path("."), None) for c in cells)
    keep = ("backbone", "kind", "cell", "template", "images", "reference", "aliases", "error")
    return [{k: r[k] for k in keep if k in r} for r in rows]


def short_error(e: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(e).split())
    msg = msg if len(msg) <= limit else msg[: limit - 3] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def save_results(rows: Sequence[Mapping[str, Any]], run_dir: str | Path,
                 spec: Mapping | None = None) -> dict[str, Path]:
    """Write the rows as the run folder's ablation ``results.csv`` and (with the grid's
    ``spec``) ``results.json``, atomically."""
    run = PipelineFolder(run_dir)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    paths = {"csv": run.ablation_results("csv"), "json": run.ablation_results("json")}
    with atomic_open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    write_json(paths["json"], {"rows": [dict(r) for r in rows], **({"grid": dict(spec)} if spec else {})})
    return paths


def load_results(run_dir: str | Path) -> list[dict]:
    """The rows of the grid's ``results.json`` in a pipeline run folder."""
    return read_json(PipelineFolder(run_dir).ablation_results("json"))["rows"]


def results_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None):
    """The rows as a notebook table (``report.table``), the main columns first."""
    from ..report import table

    columns = columns or ("backbone", "cell", "template", "images", *METRICS, "train_s", "eval_s", "status",
                          "error", "aliases")
    return table([{c: r.get(c) for c in columns} for r in rows])


def factor_effects(rows: Sequence[Mapping[str, Any]], factors: Sequence[str] | None = None,
                   metric: str = "P@1") -> list[dict]:
    """Mean ``metric`` per backbone, factor and level over the finished cells where the
    factor matters (e.g. ``order`` only over cells with images) and over the seeds, with the
    number of cells and the difference to the factor's first level. With several seeds that
    difference comes with a 95% t-interval over seeds (each seed's level mean minus the first
    level's mean) and "within noise" says whether the interval contains 0."""
    factors = list(factors or DEFAULT_FACTORS)
    out = []
    done = [r for r in rows if r.get("status") in ("ok", "reused") and r.get(metric) is not None]
    for backbone in dict.fromkeys(r["backbone"] for r in done):
        mine = [r for r in done if r["backbone"] == backbone]
        for f in factors:
            levels: dict[Any, dict[Any, list[float]]] = {}  # level -> seed -> the cells' values
            for r in mine:
                if r.get(f) is not None and r.get(f) != "":
                    levels.setdefault(r[f], {}).setdefault(r.get("seed"), []).append(float(r[metric]))
            if len(levels) >= 2:
                first = next(iter(levels.values()))
                out.extend(_effect_row(backbone, f, level, by_seed, first, metric) for level, by_seed in levels.items())
    return out


def _effect_row(backbone: str, factor: str, level, by_seed: dict, first: dict, metric: str) -> dict:
    """One level of a factor: its mean, and its per-seed difference to the first level."""
    from ..stats import format_interval, seed_summary

    values = [v for vs in by_seed.values() for v in vs]
    diffs = [float(np.mean(by_seed[s]) - np.mean(first[s])) for s in by_seed if s in first]
    row = {"backbone": backbone, "factor": factor, "level": level, f"mean {metric}": round(float(np.mean(values)), 2),
           "cells": len(next(iter(by_seed.values()))), "seeds": len(by_seed),
           "vs first level": round(float(np.mean(diffs)), 2) if diffs else None}
    if len(diffs) > 1 and by_seed is not first:
        sm = seed_summary(diffs)
        row["interval (seeds)"] = format_interval(sm["mean"], sm["lo"], sm["hi"])
        row["within noise"] = bool(sm["lo"] <= 0 <= sm["hi"])
    return row


def plot_grid(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("P@1", "PSP@5"), axes=None):
    """Horizontal grouped bars, one panel per metric: every cell (y) for every backbone
    (colour). The paper's template of each backbone is starred; failed cells read ``failed``
    in red. The metric axis is zoomed on the values (it need not start at 0). Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    cells = list(dict.fromkeys(r["cell"] for r in rows if r.get("cell") != "*"))
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    if axes is None:
        height = 1.5 + 0.22 * max(1, len(cells)) * max(1, len(backbones))
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 2, height), sharey=True, squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    height = 0.8 / max(1, len(backbones))
    y = np.arange(len(cells))
    by = {(r["backbone"], r["cell"]): r for r in rows}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, metrics):
        values = [r.get(metric) for r in rows if r.get(metric) is not None]
        lo = max(0.0, min(values) - 5) if values else 0.0
        hi = min(100.0, max(values) + 3) if values else 100.0
        for j, b in enumerate(backbones):
            pos = y + (j - (len(backbones) - 1) / 2) * height
            vals = [by.get((b, c), {}).get(metric) for c in cells]
            ax.barh(pos, [(v - lo) if v is not None else 0 for v in vals], left=lo, height=height,
                    color=colours[j % len(colours)], label=b)
            for p, c, v in zip(pos, cells, vals):
                r = by.get((b, c))
                if r is None:
                    continue
                if r.get("status") == "failed":
                    ax.text(lo, p, " failed", color="red", va="center", fontsize=7)
                elif r.get("reference") and v is not None:
                    ax.plot([v], [p], marker="*", color="black", markersize=8)
        ax.set_xlim(lo, hi)
        ax.set_yticks(y, cells, fontsize=8)
        ax.set(xlabel=f"{metric} (%)", title=f"{metric} per prompt template")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_ylim(len(cells) - 0.5, -0.5)  # first cell on top (axes share y)
    axes[0].legend(fontsize=8, title="* paper's template", title_fontsize=7)
    fig.tight_layout()
    return fig
