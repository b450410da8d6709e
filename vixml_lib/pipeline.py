"""The main job: execute the numbered notebooks in order with papermill.

A run folder ``reports/<run>/`` receives the resolved config (``config.yaml``), each
executed notebook and its HTML export, the figures and metrics the notebooks save
(``figures/``, ``metrics/``), all metrics merged into ``metrics.json``, and a summary
with the status and duration of every notebook (``pipeline.json``).

A notebook that fails stops the run: its executed copy (with the error) is kept and
exported, and :class:`NotebookFailed` names the notebook and the cell.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import PipelineConfig, save_config
from .io_utils import atomic_open, write_json
from .report import collect_metrics
from .runs import PipelineFolder

log = logging.getLogger(__name__)

NOTEBOOK_PATTERN = re.compile(r"^\d\d_.+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised: ``cell`` is the 1-based position of the cell in the source notebook."""

    def __init__(self, notebook: str, cell: int | None, source: str, error: str, output: Path):
        self.notebook, self.cell, self.error, self.output = notebook, cell, error, output
        first_line = source.strip().splitlines()[0][:60] if source.strip() else "empty"
        where = f"cell {cell} ({first_line!r})" if cell else "start-up"
        super().__init__(f"notebook {notebook} failed at {where}: {error}\n  executed copy: {output}")


def _source_cell(executed: Path, index: int) -> int:
    """1-based position in the source notebook of cell ``index`` of the executed copy
    (papermill inserts an ``injected-parameters`` cell that the source does not have)."""
    import nbformat

    try:
        cells = nbformat.read(str(executed), as_version=4).cells[:index]
    except Exception:
        return index + 1
    return index + 1 - sum("injected-parameters" in c.metadata.get("tags", []) for c in cells)


def default_notebooks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "notebooks"


def find_notebooks(config: PipelineConfig) -> list[Path]:
    """The notebooks a run executes, in order: those named in the config, or all numbered ones."""
    folder = Path(config.notebooks_dir) if config.notebooks_dir else default_notebooks_dir()
    if config.notebooks is None:
        found = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
        if not found:
            raise FileNotFoundError(f"{folder}: no numbered notebooks (NN_name.ipynb) to run")
        return found
    paths = []
    for name in config.notebooks:
        path = folder / (name if name.endswith(".ipynb") else f"{name}.ipynb")
        if not path.exists():
            raise FileNotFoundError(f"{path}: notebook named in the config does not exist")
        paths.append(path)
    return paths


def notebook_parameters(config: PipelineConfig, notebook: Path, run_dir: Path, declared: set[str]) -> dict[str, Any]:
    """Parameters for one notebook: the run's common values, then the config's, keeping
    only the names the notebook declares in its ``parameters`` cell."""
    values: dict[str, Any] = {
        "run_dir": str(run_dir.resolve()),
        "data_root": str(Path(config.data_root).resolve()),
        "dataset": config.dataset,
        "demo_preset": config.demo_preset,
        "seed": config.seed,
    }
    values.update(config.parameters)
    values.update(config.notebook_parameters.get(notebook.stem, {}))
    unknown = sorted(set(config.notebook_parameters.get(notebook.stem, {})) - declared)
    if unknown:
        raise ValueError(
            f"notebook_parameters for {notebook.stem}: {', '.join(unknown)} not declared in its parameters cell "
            f"(declared: {', '.join(sorted(declared))})"
        )
    return {k: v for k, v in values.items() if k in declared}


def export_html(notebook: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    out = notebook.with_suffix(".html")
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write(body)
    return out


def run_pipeline(config: PipelineConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Execute the run's notebooks; return the summary written to ``pipeline.json``."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    run_dir = Path(run_dir) if run_dir else Path("reports") / config.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = PipelineFolder(run_dir)
    notebooks = find_notebooks(config)
    save_config(config, folder.config)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "notebooks": []}
    bar = tqdm(notebooks, desc="pipeline", unit="notebook")
    try:
        for nb in bar:
            bar.set_postfix_str(nb.stem)
            declared = set(pm.inspect_notebook(str(nb)).keys())
            params = notebook_parameters(config, nb, run_dir, declared)
            out = folder.notebook(nb.name)
            log.info("running %s with %s", nb.name, params)
            entry: dict[str, Any] = {"notebook": nb.stem, "parameters": params}
            summary["notebooks"].append(entry)
            start = time.perf_counter()
            try:
                pm.execute_notebook(
                    str(nb), str(out), parameters=params, kernel_name=config.kernel,
                    progress_bar=False, cwd=str(run_dir), log_output=False,
                )
            except PapermillExecutionError as e:
                cell = _source_cell(out, e.cell_index)
                entry.update(status="failed", seconds=round(time.perf_counter() - start, 2), cell=cell)
                if config.export_html and out.exists():
                    export_html(out)
                raise NotebookFailed(nb.name, cell, e.source, f"{e.ename}: {e.evalue}", out) from None
            except Exception as e:  # kernel died, bad notebook file, ...
                entry.update(status="failed", seconds=round(time.perf_counter() - start, 2))
                raise NotebookFailed(nb.name, None, "", f"{type(e).__name__}: {e}", out) from None
            entry.update(status="ok", seconds=round(time.perf_counter() - start, 2))
            if config.export_html:
                entry["html"] = export_html(out).name
            log.info("%s done in %.1f s", nb.name, entry["seconds"])
    finally:
        bar.close()
        summary["metrics"] = collect_metrics(run_dir)
        write_json(folder.metrics, summary["metrics"])
        write_json(folder.summary, {k: v for k, v in summary.items() if k != "metrics"})
    return summary
