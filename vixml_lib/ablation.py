"""Prompt-template ablations: a declarative grid of templates, trained for several backbones.

The grid is a dict of factor lists over the arguments of :func:`prompt.make_template`
(``text_prefix``, ``image_prefix``, ``eos``, ``order``, ``bos``, ...) plus ``images``
(image slots in the template AND image features in the model)::

    cells = expand_grid({"order": ["text_image", "image_text"], "text_prefix": [True, False],
                         "image_prefix": [True, False], "eos": [True, False], "images": [True, False]},
                        kind="decoder")

Every combination is assembled into its template, and combinations whose template is
identical (without images, ``order`` and ``image_prefix`` change nothing) are collapsed
into ONE cell: the first combination in grid order, named by the factors that matter for
it (``img1-text_image-tp1-ip0-eos1``, ``img0-tp1-eos0``), the others kept as its
``aliases``. The default grid (:data:`DEFAULT_FACTORS`) has 32 combinations and 20 cells
per model kind (16 with images, 4 without).

:func:`run_grid` trains every cell for every backbone through :func:`training.train`
into ``<run_dir>/ablations/<backbone>/<cell>/``. A backbone is a model preset plus its
own settings (any :class:`~vixml_lib.training.TrainConfig` field: batch size, lr,
``model_overrides`` such as ``num_layers``), on top of a shared schedule. Caches are
shared by construction: the token cache (per backbone tokenizer and ``max_len``) is
built by the first cell and reused by the others, the image feature cache is only read,
and GGUF backbones are de-quantised once per process (``models.clear_backbone_cache``).
A cell whose run already finished with the same settings is read back from its
``metrics.json`` (nothing is loaded or trained), so re-running a grid takes seconds and a
killed grid goes on from the cell it was in (``train`` resumes that one's checkpoint). A cell that raises is reported in the
results (status ``failed``, the error type and message; traceback logged and written to
``error.txt`` in its folder) and the grid goes on. Results (one row per cell and backbone:
P@1, P@5, nDCG@5, PSP@5, train and eval seconds, status) are written after every cell to
``<run_dir>/ablations/results.csv`` and ``results.json`` (atomically).
"""
from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import itertools
import logging
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from .io_utils import atomic_open, read_json, write_json
from .prompt import PromptTemplate, make_template

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FACTORS",
    "METRICS",
    "Cell",
    "expand_grid",
    "backbone_kind",
    "describe_grid",
    "cell_config",
    "run_grid",
    "results_table",
    "save_results",
    "load_results",
    "factor_effects",
    "plot_grid",
]

#: the paper's prompt ablation: 2^5 = 32 combinations, 20 distinct templates per model kind
DEFAULT_FACTORS: dict[str, list] = {
    "images": [True, False],
    "order": ["text_image", "image_text"],
    "text_prefix": [True, False],
    "image_prefix": [True, False],
    "eos": [True, False],
}
#: the metrics of the results table (percent)
METRICS = ("P@1", "P@5", "nDCG@5", "PSP@5")

_ABBREV = {"text_prefix": "tp", "image_prefix": "ip", "eos": "eos", "bos": "bos", "images": "img"}
_TEMPLATE_ARGS = {p for p in inspect.signature(make_template).parameters if p not in ("kind", "name", "fields")}
_TEMPLATE_FIELDS = {f.name for f in dataclasses.fields(PromptTemplate)} - {"segments", "name"}
_NOT_TRAIN_SETTINGS = ("kind",)  # backbone settings that are not TrainConfig fields


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Cell:
    """One distinct template of a grid for one model kind.

    ``template``: the :func:`make_template` arguments (``kind`` and ``name`` included), as
    ``TrainConfig.template`` takes them; ``factors``: the factor values of the cell, ``None``
    for a factor that does not change its template; ``aliases``: the names of the other
    combinations that assemble the same template.
    """

    name: str
    kind: str
    template: dict
    images: bool
    factors: dict
    aliases: tuple[str, ...] = ()
    reference: bool = False  # the paper's template for this kind (with or without images)

    def prompt_template(self, **overrides) -> PromptTemplate:
        """The :class:`PromptTemplate` (``overrides``: its fields, e.g. ``eos_token``)."""
        t = make_template(**self.template)
        return dataclasses.replace(t, **overrides) if overrides else t

    def describe(self, **overrides) -> str:
        return self.prompt_template(**overrides).describe()


def _value_name(factor: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{_ABBREV.get(factor, factor)}{int(value)}"
    if factor == "order":
        return str(value)
    text = re.sub(r"[^A-Za-z0-9_.]+", "_", str(value)).strip("_") or "empty"
    return f"{_ABBREV.get(factor, factor)}={text}"


def _combination_name(combo: Mapping[str, Any], factors: Sequence[str]) -> str:
    return "-".join(_value_name(f, combo[f]) for f in factors) or "default"


def _template_key(kind: str, args: Mapping[str, Any]) -> tuple:
    d = make_template(**{**args, "kind": kind}).to_dict()
    d.pop("name")
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def _reference_keys(kind: str) -> set[tuple]:
    if kind == "encoder":
        args = [dict(order="image_text", text_prefix=False, image_prefix=False, eos=True, images=i) for i in (True, False)]
    else:
        args = [dict(order="text_image", text_prefix=True, image_prefix=True, eos=True, images=i) for i in (True, False)]
    return {_template_key(kind, a) for a in args}


def expand_grid(factors: Mapping[str, Sequence] | None = None, kind: str = "decoder",
                fixed: Mapping[str, Any] | None = None) -> list[Cell]:
    """The distinct cells of a factor grid for one model kind (``decoder`` | ``encoder``).

    ``factors``: factor -> list of levels (default :data:`DEFAULT_FACTORS`); a factor is
    an argument of :func:`prompt.make_template` or ``images``. ``fixed``: arguments of
    ``make_template`` shared by every cell (e.g. ``{"bos": False}``, or ``{"images":
    False}`` for a text-only grid). Without an ``images`` factor or fixed value, images are on.
    Combinations are enumerated in the order of ``factors`` (the first factor varies
    slowest); identical templates collapse into the first one, the others become its aliases.
    """
    factors = dict(DEFAULT_FACTORS if factors is None else factors)
    fixed = dict(fixed or {})
    if kind not in ("decoder", "encoder"):
        raise ValueError(f"kind must be 'decoder' or 'encoder', got {kind!r}")
    for where, names in (("factor", factors), ("fixed setting", fixed)):
        unknown = sorted(set(names) - _TEMPLATE_ARGS - _TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(f"unknown grid {where}(s) {unknown}; valid: "
                             f"{', '.join(sorted(_TEMPLATE_ARGS | _TEMPLATE_FIELDS))}")
    both = sorted(set(factors) & set(fixed))
    if both:
        raise ValueError(f"{both} given both as factors and as fixed settings")
    for f, levels in factors.items():
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or len(levels) == 0:
            raise ValueError(f"factor {f!r} needs a non-empty list of levels, got {levels!r}")
        if len(set(map(repr, levels))) != len(levels):
            raise ValueError(f"factor {f!r} lists a level twice: {list(levels)}")
    if "images" not in factors:
        fixed.setdefault("images", True)
    names = list(factors)
    combos = [dict(zip(names, values)) for values in itertools.product(*(factors[f] for f in names))]
    keys = [_template_key(kind, {**fixed, **c}) for c in combos]

    def relevant(combo: dict, key: tuple) -> list[str]:
        """The factors for which another level changes this combination's template."""
        return [f for f in names
                if any(_template_key(kind, {**fixed, **combo, f: v}) != key for v in factors[f] if v != combo[f])]

    groups: dict[tuple, list[dict]] = {}
    for combo, key in zip(combos, keys):
        groups.setdefault(key, []).append(combo)
    reference = _reference_keys(kind)
    cells, taken = [], set()
    for key, members in groups.items():
        first = members[0]
        matters = relevant(first, key)
        name = _combination_name(first, matters)
        if name in taken:  # only with interacting factors: fall back to the full combination
            name = _combination_name(first, names)
        taken.add(name)
        images = bool({**fixed, **first}.get("images", True)) and {**fixed, **first}.get("order") != "text_only"
        template = {**fixed, **first, "kind": kind, "name": name}
        cells.append(Cell(
            name=name, kind=kind, template=template, images=images,
            factors={f: (first[f] if f in matters else None) for f in names},
            aliases=tuple(_combination_name(c, names) for c in members[1:]),
            reference=key in reference,
        ))
    return cells


# --------------------------------------------------------------------------- backbones


def backbone_kind(settings: Mapping[str, Any]) -> str:
    """``encoder`` or ``decoder`` for a backbone's settings: its ``kind`` setting, else the
    ``kind`` of its ``model_overrides``, else the preset's, else the backbone's config."""
    from .models import MODEL_PRESETS, RANDOM_BACKBONES, detect_kind

    kind = settings.get("kind") or dict(settings.get("model_overrides") or {}).get("kind")
    preset = MODEL_PRESETS.get(settings.get("model", "minilm-vixml"))
    if kind in (None, "auto") and preset is not None:
        kind = preset.kind
    if kind in ("encoder", "decoder"):
        return kind
    if kind not in (None, "auto"):
        raise ValueError(f"kind must be encoder or decoder, got {kind!r}")
    if preset is None:
        raise ValueError(f"unknown model preset {settings.get('model')!r}")
    name = dict(settings.get("model_overrides") or {}).get("backbone", preset.backbone)
    if name in RANDOM_BACKBONES:
        return detect_kind(RANDOM_BACKBONES[name][0]())
    from transformers import AutoConfig

    from .pretrained import resolve

    src = resolve(name)
    return detect_kind(AutoConfig.from_pretrained(src.path, **src.kwargs()))


def cell_config(cell: Cell, settings: Mapping[str, Any], out_dir: str | Path, **common):
    """The :class:`TrainConfig` of one cell: ``common`` settings (data_dir, schedule, ...),
    then the backbone's ``settings``, then the cell's template and images (which replace a
    ``template`` / ``use_images`` of the backbone's settings)."""
    from .config import config_from_dict
    from .training import TrainConfig

    values = {**common, **{k: v for k, v in settings.items() if k not in _NOT_TRAIN_SETTINGS}}
    values.update(template=dict(cell.template), use_images=cell.images, out_dir=str(out_dir))
    return config_from_dict(TrainConfig, values, source=f"cell {cell.name}")


def describe_grid(backbones: Mapping[str, Mapping[str, Any]], factors: Mapping[str, Sequence] | None = None,
                  fixed: Mapping[str, Any] | None = None) -> list[dict]:
    """One row per cell the grid trains for each backbone (kind, template, aliases), before training."""
    rows = []
    for name, settings in backbones.items():
        try:
            kind = backbone_kind(settings)
            cells = expand_grid(factors, kind=kind, fixed=fixed)
        except Exception as e:  # noqa: BLE001 - shown here, reported again by run_grid
            rows.append({"backbone": name, "cell": "*", "error": _short_error(e)})
            continue
        rows.extend(_row(name, settings, c, Path("."), None) for c in cells)
    keep = ("backbone", "kind", "cell", "template", "images", "reference", "aliases", "error")
    return [{k: r[k] for k in keep if k in r} for r in rows]


# --------------------------------------------------------------------------- the runner


def _finished_summary(config) -> dict | None:
    """The saved summary of a finished run of exactly this config, or None."""
    from .training import config_key

    out = Path(config.out_dir)
    try:
        state = read_json(out / "checkpoint" / "state.json")
        if state.get("config") != config_key(config) or int(state.get("epoch", 0)) < config.epochs:
            return None
        return read_json(out / "metrics.json")
    except (OSError, ValueError):
        return None


_KEEP = ("all", "model", "none")


def _prune_checkpoint(out: Path, keep: str) -> None:
    """Drop what a finished cell no longer needs: ``model`` keeps the trained weights and
    ``state.json``, ``none`` only ``state.json`` (what a re-run needs to reuse the cell)."""
    ckpt = out / "checkpoint"
    if keep == "all" or not ckpt.is_dir():
        return
    for p in ckpt.iterdir():
        if p.name == "state.json" or (keep == "model" and p.name in ("model", "clusters.npz")):
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _short_error(e: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(e).split())
    msg = msg if len(msg) <= limit else msg[: limit - 3] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _describe(cell: Cell, settings: Mapping) -> str:
    """The cell's template as the backbone renders it (its preset's and its own template overrides)."""
    from .models import MODEL_PRESETS

    preset = MODEL_PRESETS.get(settings.get("model", ""))
    overrides = {**(preset.template_overrides if preset else {}),
                 **dict(dict(settings.get("model_overrides") or {}).get("template_overrides") or {})}
    try:
        return cell.describe(**overrides)
    except (TypeError, ValueError):  # an invalid override: the cell's run reports it
        return cell.describe()


def _row(backbone: str, settings: Mapping, cell: Cell | None, run_dir: Path, out: Path | None) -> dict:
    described = _describe(cell, settings) if cell is not None else ""
    row = {"backbone": backbone, "model": settings.get("model"), "kind": cell.kind if cell else None,
           "cell": cell.name if cell else "*", "template": described, "images": cell.images if cell else None,
           "reference": cell.reference if cell else None}
    row.update({f: v for f, v in (cell.factors if cell else {}).items() if f != "images"})
    row.update({m: None for m in METRICS})
    row.update(train_s=None, eval_s=None, wall_s=None, status="pending", error="",
               aliases=", ".join(cell.aliases) if cell else "",
               out_dir=str(out.relative_to(run_dir)) if out is not None else "")
    return row


def run_grid(run_dir: str | Path, backbones: Mapping[str, Mapping[str, Any]],
             factors: Mapping[str, Sequence] | None = None, *, fixed: Mapping[str, Any] | None = None,
             keep_checkpoints: str = "model", progress: bool = True, train_progress: bool = False,
             **common) -> list[dict]:
    """Train every cell of the grid for every backbone; return the result rows.

    ``backbones``: name -> settings (``model``: a preset of ``models.MODEL_PRESETS``; any
    other :class:`TrainConfig` field, e.g. ``batch_size``, ``lr``, ``model_overrides``;
    optional ``kind`` when the preset does not say). ``common``: TrainConfig fields shared
    by every run (``data_dir``, ``vision_encoder``, ``seed``, ``device`` and the schedule:
    ``epochs``, ``max_steps_per_epoch``, ``eval_max_queries``, ``max_labels``, ...); a
    backbone's settings win over them. ``save_embeddings`` and ``eval_at_start`` default to
    False here. Rows are also written, after every cell, to ``<run_dir>/ablations/results.{csv,json}``.

    A cell whose run finished with exactly the same settings is read back from its
    ``metrics.json`` (status ``reused``; nothing is loaded or trained). ``keep_checkpoints``:
    what stays of a finished cell's checkpoint: ``all`` (as ``train`` writes it; it can then
    also be resumed by ``train`` itself), ``model`` (the trained weights, without the optimizer
    state: a third of the size for fully fine-tuned encoders) or ``none`` (only ``state.json``).
    """
    if keep_checkpoints not in _KEEP:
        raise ValueError(f"keep_checkpoints must be one of {', '.join(_KEEP)}, got {keep_checkpoints!r}")
    from .training import train

    run_dir = Path(run_dir)
    root = run_dir / "ablations"
    common = {"save_embeddings": False, "eval_at_start": False, **common}
    plan: list[tuple[str, Mapping, Cell | None, Exception | None]] = []
    grid: dict[str, list[dict]] = {}
    for name, settings in backbones.items():
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ValueError(f"backbone name {name!r}: use letters, digits and _ . + - (it names a folder)")
        try:
            kind = backbone_kind(settings)
            cells = expand_grid(factors, kind=kind, fixed=fixed)
        except Exception as e:  # the backbone as a whole cannot run: one failed row
            log.error("backbone %s: %s", name, _short_error(e))
            plan.append((name, settings, None, e))
            continue
        grid[name] = [{"cell": c.name, "kind": c.kind, "template": c.template, "aliases": list(c.aliases)} for c in cells]
        plan.extend((name, settings, c, None) for c in cells)

    rows = [_row(b, s, c, run_dir, root / b / c.name if c else None) for b, s, c, _ in plan]
    spec = {"factors": {k: list(v) for k, v in dict(DEFAULT_FACTORS if factors is None else factors).items()},
            "fixed": dict(fixed or {}), "backbones": {k: dict(v) for k, v in backbones.items()},
            "common": common, "cells": grid}
    bar = tqdm(total=len(plan), desc="ablation grid", unit="cell", disable=not progress)
    for i, (name, settings, cell, early) in enumerate(plan):
        row = rows[i]
        bar.set_postfix_str(f"{name}/{row['cell']}")
        t0 = time.perf_counter()
        if early is not None:
            row.update(status="failed", error=_short_error(early))
        else:
            out = root / name / cell.name
            try:
                config = cell_config(cell, settings, out, **common)
                summary = _finished_summary(config)
                reused = summary is not None
                if not reused:
                    summary = train(config, progress=train_progress)
                    _prune_checkpoint(out, keep_checkpoints)
                hist = summary["history"]
                row.update({m: summary["final"].get(m) for m in METRICS})
                row.update(train_s=round(sum(h.get("train_seconds") or 0 for h in hist), 2),
                           eval_s=round(sum(h.get("eval_seconds") or 0 for h in hist), 2),
                           status="reused" if reused else "ok")
                log.info("%s/%s: P@1 %.2f P@5 %.2f (%s)", name, cell.name, row["P@1"] or 0, row["P@5"] or 0, row["status"])
            except Exception as e:  # noqa: BLE001 - a failed cell is a result; the grid goes on
                tb = traceback.format_exc()
                log.error("%s/%s failed: %s\n%s", name, cell.name, _short_error(e), tb)
                row.update(status="failed", error=_short_error(e))
                try:
                    with atomic_open(out / "error.txt", "w", encoding="utf-8") as f:
                        f.write(tb)
                except OSError:
                    pass
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        save_results(rows, root, spec)
        bar.update(1)
        if i + 1 == len(plan) or plan[i + 1][0] != name:  # the backbone's last cell
            from .models import clear_backbone_cache

            clear_backbone_cache()  # free the de-quantised weights before the next backbone
    bar.close()
    n_failed = sum(r["status"] == "failed" for r in rows)
    if n_failed:
        log.warning("%d of %d cells failed; see the error column of %s", n_failed, len(rows), root / "results.csv")
    return rows


# --------------------------------------------------------------------------- results


def save_results(rows: Sequence[Mapping[str, Any]], folder: str | Path, spec: Mapping | None = None) -> dict[str, Path]:
    """Write the rows as ``results.csv`` and (with the grid's ``spec``) ``results.json``, atomically."""
    folder = Path(folder)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    paths = {"csv": folder / "results.csv", "json": folder / "results.json"}
    with atomic_open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    write_json(paths["json"], {"rows": [dict(r) for r in rows], **({"grid": dict(spec)} if spec else {})})
    return paths


def load_results(folder: str | Path) -> list[dict]:
    """The rows of a grid's ``results.json`` (``folder``: the run folder or its ``ablations/``)."""
    folder = Path(folder)
    path = folder / "results.json" if (folder / "results.json").exists() else folder / "ablations" / "results.json"
    return read_json(path)["rows"]


def results_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None):
    """The rows as a notebook table (``report.table``), the main columns first."""
    from .report import table

    columns = columns or ("backbone", "cell", "template", "images", *METRICS, "train_s", "eval_s", "status",
                          "error", "aliases")
    return table([{c: r.get(c) for c in columns} for r in rows])


def factor_effects(rows: Sequence[Mapping[str, Any]], factors: Sequence[str] | None = None,
                   metric: str = "P@1") -> list[dict]:
    """Mean ``metric`` per backbone, factor and level over the finished cells where the
    factor matters (e.g. ``order`` only over cells with images), with the number of cells
    and the difference to the factor's first level."""
    factors = list(factors or DEFAULT_FACTORS)
    out = []
    done = [r for r in rows if r.get("status") in ("ok", "reused") and r.get(metric) is not None]
    for backbone in dict.fromkeys(r["backbone"] for r in done):
        mine = [r for r in done if r["backbone"] == backbone]
        for f in factors:
            levels: dict[Any, list[float]] = {}
            for r in mine:
                if r.get(f) is not None and r.get(f) != "":
                    levels.setdefault(r[f], []).append(float(r[metric]))
            if len(levels) < 2:
                continue
            base = None
            for level, vals in levels.items():
                mean = sum(vals) / len(vals)
                base = mean if base is None else base
                out.append({"backbone": backbone, "factor": f, "level": level, f"mean {metric}": round(mean, 2),
                            "cells": len(vals), "vs first level": round(mean - base, 2)})
    return out


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
