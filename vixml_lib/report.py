"""What notebooks leave in their run folder: figures and metrics, under fixed names."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .io_utils import read_json, write_json


def figure_path(run_dir: str | Path, name: str, ext: str = "png") -> Path:
    path = Path(run_dir) / "figures" / f"{name}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, run_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``<run_dir>/figures/<name>.png``."""
    path = figure_path(run_dir, name)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_metrics(run_dir: str | Path, name: str, metrics: dict[str, Any]) -> Path:
    """Save one notebook's metrics as ``<run_dir>/metrics/<name>.json``; the pipeline merges them."""
    path = Path(run_dir) / "metrics" / f"{name}.json"
    write_json(path, metrics)
    return path


def collect_metrics(run_dir: str | Path) -> dict[str, Any]:
    folder = Path(run_dir) / "metrics"
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
