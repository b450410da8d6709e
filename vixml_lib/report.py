"""What notebooks leave in their run folder (figures and metrics, under fixed names), the
tables they show, and their logging set-up.

Files are written atomically with the mode a plain ``open()`` would give them
(:func:`vixml_lib.io_utils.atomic_path`).
"""
from __future__ import annotations

import html
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .io_utils import atomic_open, read_json, write_json
from .runs import PipelineFolder


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (with the umask's file mode, as every atomic write)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


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


class Table(list):
    """Rows (dicts) shown as an HTML table in notebooks and as aligned text elsewhere.

    Cell text is HTML-escaped: a prompt template such as ``<title> <img>`` shows as written
    instead of being parsed as tags. Floats are printed with ``digits`` decimals."""

    def __init__(self, rows: Iterable[dict[str, Any]], digits: int = 2):
        super().__init__(rows)
        self.digits = digits

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(str(k) for r in self for k in r))

    def cell(self, row: dict[str, Any], column: str) -> str:
        v = row.get(column)
        return f"{v:.{self.digits}f}" if isinstance(v, float) else ("" if v is None else str(v))

    def _repr_html_(self) -> str:
        """The table as HTML: text left-aligned, numbers right-aligned (JupyterLab aligns every cell right)."""
        cols = self.columns
        esc = html.escape

        def td(v: Any, text: str) -> str:
            side = "right" if isinstance(v, (int, float)) and not isinstance(v, bool) else "left"
            return f'<td style="text-align:{side}">{esc(text)}</td>'

        head = "".join(f'<th style="text-align:left">{esc(c)}</th>' for c in cols)
        body = "".join("<tr>" + "".join(td(r.get(c), self.cell(r, c)) for c in cols) + "</tr>" for r in self)
        return f'<table class="vixml-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def __repr__(self) -> str:
        cols = self.columns
        cells = [cols] + [[self.cell(r, c) for c in cols] for r in self]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
        return "\n".join("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in cells)


def table(rows: Iterable[dict[str, Any]], digits: int = 2) -> Table:
    """Rows of dicts as a :class:`Table` (HTML in notebooks, text elsewhere)."""
    return Table(rows, digits)


class _Below:
    """Logging filter: records below ``level`` only."""

    def __init__(self, level: int):
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def notebook_logging(level: int | str = logging.INFO, quiet: Iterable[str] = (),
                     fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Log from a notebook as plain output: records below WARNING go to stdout (JupyterLab
    and the HTML exports show stderr as red blocks, meant for problems), warnings and errors
    to stderr. The loggers named in ``quiet`` only log from WARNING (e.g. one line per
    ablation cell instead of one per epoch). Replaces the root logger's handlers, so
    re-running the cell does not log twice."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    formatter = logging.Formatter(fmt)
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(_Below(logging.WARNING))
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
