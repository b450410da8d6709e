"""What notebooks leave in their run folder: figures and metrics, under fixed names."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .io_utils import read_json, write_json
from .runs import PipelineFolder


def figure_path(run_dir: str | Path, name: str, ext: str = "png") -> Path:
    """``<run_dir>/figures/<name>.<ext>`` (its folder created)."""
    path = PipelineFolder(run_dir).figure(name, ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, run_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``<run_dir>/figures/<name>.png``."""
    path = figure_path(run_dir, name)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_metrics(run_dir: str | Path, name: str, metrics: dict[str, Any]) -> Path:
    """Save one notebook's metrics as ``<run_dir>/metrics/<name>.json``; the pipeline merges them."""
    path = PipelineFolder(run_dir).notebook_metrics(name)
    write_json(path, metrics)
    return path


def collect_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Every notebook's metrics of a run folder, by notebook name."""
    folder = PipelineFolder(run_dir).metrics_dir
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def table(rows: list[dict[str, Any]], digits: int = 2):
    """Rows of dicts as a table that renders in notebooks (HTML) and reads as text elsewhere."""
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        return f"{v:.{digits}f}" if isinstance(v, float) else ("" if v is None else str(v))

    class Table(list):
        def _repr_html_(self):
            head = "".join(f"<th>{c}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in self)
            return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

        def __repr__(self):
            cells = [[str(c) for c in cols]] + [[fmt(r.get(c)) for c in cols] for r in self]
            widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
            return "\n".join("  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells)

    return Table(rows)
