"""Running an ablation grid: every cell for every backbone, one training run each, into
``ablations/<backbone>/<cell>/`` of the pipeline run folder (:class:`vixml_lib.runs.PipelineFolder`).

A backbone is a model preset plus its own settings (any :class:`~vixml_lib.training.TrainConfig`
field: batch size, lr, ``model_overrides`` such as ``num_layers``), on top of a shared
schedule. Caches are shared by construction: the token cache (per backbone tokenizer and
``max_len``) is built by the first cell and reused by the others, the image feature cache is
only read, and GGUF backbones are de-quantised once per process
(``backbones.clear_backbone_cache``). A cell whose run already finished with the same
settings is read back from its ``metrics.json`` (nothing is loaded or trained), so re-running
a grid takes seconds and a killed grid goes on from the cell it was in (``train`` resumes
that one's checkpoint). A cell that raises is reported in the results (status ``failed``, the
error type and message; traceback logged and written to ``error.txt`` in its folder) and the
grid goes on. Results are written after every cell (:mod:`~vixml_lib.ablation.results`).
"""
from __future__ import annotations

import logging
import re
import shutil
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..io_utils import atomic_open
from ..runs import PipelineFolder, TrainFolder
from .grid import DEFAULT_FACTORS, Cell, backbone_kind, cell_config, expand_grid
from .results import METRICS, cell_row, save_results, short_error

log = logging.getLogger(__name__)

_KEEP = ("all", "model", "none")


def _finished_summary(config) -> dict | None:
    """The saved summary of a finished run of exactly this config, or None."""
    from ..training import config_key

    run = TrainFolder(config.out_dir)
    try:
        state = run.checkpoint.read_state()
        if state.get("config") != config_key(config) or int(state.get("epoch", 0)) < config.epochs:
            return None
        return run.read_metrics()
    except (OSError, ValueError):
        return None


def _prune_checkpoint(run: TrainFolder, keep: str) -> None:
    """Drop what a finished cell no longer needs: ``model`` keeps the trained weights and
    the state, ``none`` only the state (what a re-run needs to reuse the cell)."""
    ckpt = run.checkpoint
    if keep == "all" or not ckpt.path.is_dir():
        return
    kept = {ckpt.state} | ({ckpt.model, ckpt.clusters} if keep == "model" else set())
    for p in ckpt.path.iterdir():
        if p not in kept:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _plan(backbones: Mapping[str, Mapping[str, Any]], factors, fixed):
    """``(plan, grid)``: the list of ``(backbone, settings, cell or None, error or None)`` to
    run, and the cells of each backbone (for the results' spec)."""
    plan: list[tuple[str, Mapping, Cell | None, Exception | None]] = []
    grid: dict[str, list[dict]] = {}
    for name, settings in backbones.items():
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ValueError(f"backbone name {name!r}: use letters, digits and _ . + - (it names a folder)")
        try:
            kind = backbone_kind(settings)
            cells = expand_grid(factors, kind=kind, fixed=fixed)
        except Exception as e:  # the backbone as a whole cannot run: one failed row
            log.error("backbone %s: %s", name, short_error(e))
            plan.append((name, settings, None, e))
            continue
        grid[name] = [{"cell": c.name, "kind": c.kind, "template": c.template, "aliases": list(c.aliases)}
                      for c in cells]
        plan.extend((name, settings, c, None) for c in cells)
    return plan, grid


def _run_cell(row: dict, run: TrainFolder, cell: Cell, settings: Mapping, common: Mapping, keep: str,
              train_progress: bool) -> None:
    """Train (or reuse) one cell and fill its result ``row``; a failure is recorded, not raised."""
    from ..training import train

    try:
        config = cell_config(cell, settings, run.path, **common)
        summary = _finished_summary(config) if config.resume else None  # resume=False: train again
        reused = summary is not None
        if not reused:
            summary = train(config, progress=train_progress)
            _prune_checkpoint(run, keep)
        hist = summary["history"]
        row.update({m: summary["final"].get(m) for m in METRICS})
        row.update(train_s=round(sum(h.get("train_seconds") or 0 for h in hist), 2),
                   eval_s=round(sum(h.get("eval_seconds") or 0 for h in hist), 2),
                   status="reused" if reused else "ok")
        log.info("%s/%s: P@1 %.2f P@5 %.2f (%s)", row["backbone"], cell.name, row["P@1"] or 0, row["P@5"] or 0,
                 row["status"])
    except Exception as e:  # noqa: BLE001 - a failed cell is a result; the grid goes on
        tb = traceback.format_exc()
        log.error("%s/%s failed: %s\n%s", row["backbone"], cell.name, short_error(e), tb)
        row.update(status="failed", error=short_error(e))
        try:
            with atomic_open(run.error, "w", encoding="utf-8") as f:
                f.write(tb)
        except OSError:
            pass


def run_grid(run_dir: str | Path, backbones: Mapping[str, Mapping[str, Any]],
             factors: Mapping[str, Sequence] | None = None, *, fixed: Mapping[str, Any] | None = None,
             keep_checkpoints: str = "model", progress: bool = True, train_progress: bool = False,
             seeds: Sequence[int] | None = None, **common) -> list[dict]:
    """Train every cell of the grid for every backbone; return the result rows.

    ``backbones``: name -> settings (``model``: a preset of ``models.MODEL_PRESETS``; any
    other :class:`TrainConfig` field, e.g. ``batch_size``, ``lr``, ``model_overrides``;
    optional ``kind`` when the preset does not say). ``common``: TrainConfig fields shared
    by every run (``data_dir``, ``vision_encoder``, ``seed``, ``device`` and the schedule:
    ``epochs``, ``max_steps_per_epoch``, ``eval_max_queries``, ``max_labels``, ...); a
    backbone's settings win over them. ``save_embeddings`` and ``eval_at_start`` default to
    False here. Rows are also written, after every cell, to the run folder's
    ``ablations/results.{csv,json}``.

    A cell whose run finished with exactly the same settings is read back from its
    ``metrics.json`` (status ``reused``; nothing is loaded or trained). ``keep_checkpoints``:
    what stays of a finished cell's checkpoint: ``all`` (as ``train`` writes it; it can then
    also be resumed by ``train`` itself), ``model`` (the trained weights, without the optimizer
    state: a third of the size for fully fine-tuned encoders) or ``none`` (only the state).
    ``seeds``: train every cell with each of these seeds (default: ``common``'s ``seed``, or 0);
    the first seed's runs are ``<backbone>/<cell>/``, the others ``<backbone>/<cell>-seed<k>/``.
    """
    if keep_checkpoints not in _KEEP:
        raise ValueError(f"keep_checkpoints must be one of {', '.join(_KEEP)}, got {keep_checkpoints!r}")
    from ..backbones import clear_backbone_cache

    folder = PipelineFolder(run_dir)
    common = {"save_embeddings": False, "eval_at_start": False, **common}
    seeds = list(seeds) if seeds else [int(common.get("seed", 0))]
    cells, grid = _plan(backbones, factors, fixed)
    plan = [(b, s, c, e, seed) for b, s, c, e in cells for seed in (seeds if c else seeds[:1])]
    runs = [folder.ablation_cell(b, c.name if seed == seeds[0] else f"{c.name}-seed{seed}") if c else None
            for b, _, c, _, seed in plan]
    rows = [cell_row(b, s, c, folder.path, r.path if r else None, seed)
            for (b, s, c, _, seed), r in zip(plan, runs)]
    spec = {"factors": {k: list(v) for k, v in dict(DEFAULT_FACTORS if factors is None else factors).items()},
            "fixed": dict(fixed or {}), "backbones": {k: dict(v) for k, v in backbones.items()},
            "common": common, "seeds": seeds, "cells": grid}
    bar = tqdm(total=len(plan), desc="ablation grid", unit="cell", disable=not progress)
    for i, (name, settings, cell, early, seed) in enumerate(plan):
        row = rows[i]
        bar.set_postfix_str(f"{name}/{row['cell']}/seed {seed}")
        t0 = time.perf_counter()
        if early is not None:
            row.update(status="failed", error=short_error(early))
        else:
            _run_cell(row, runs[i], cell, settings, {**common, "seed": seed}, keep_checkpoints, train_progress)
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        save_results(rows, folder.path, spec)
        bar.update(1)
        if i + 1 == len(plan) or plan[i + 1][0] != name:  # the backbone's last cell
            clear_backbone_cache()  # free the de-quantised weights before the next backbone
    bar.close()
    n_failed = sum(r["status"] == "failed" for r in rows)
    if n_failed:
        log.warning("%d of %d cells failed; see the error column of %s", n_failed, len(rows),
                    folder.ablation_results("csv"))
    return rows
