"""The main job: execute the numbered notebooks in order with papermill.

A run folder ``reports/<run>/`` receives the resolved config (``config.yaml``), each
executed notebook and its HTML export, the figures and metrics the notebooks save
(``figures/``, ``metrics/``), the metrics of the notebooks of this run merged into
``metrics.json``, and a summary with the status and duration of every notebook of this run
(``pipeline.json``, rewritten after each notebook). File names: :class:`vixml_lib.runs.PipelineFolder`.

Before anything is touched, every name is checked: a notebook named in ``notebooks`` or
``notebook_parameters``, and a parameter, must be declared by a notebook (errors list the
valid names, with a near miss); values are checked against the type of the notebook's
default (:func:`vixml_lib.validation.check_notebook_parameter`).

Reruns: a folder holding a run of the same configuration is resumed (the notebooks run
again; training resumes from its checkpoints and reuses finished runs). A folder holding a
run of another configuration is refused before anything is written, unless ``overwrite``
replaces it whole. A folder that holds something else is never touched.

A notebook that fails stops the run: its executed copy goes to ``NN_name.failed.ipynb``
(a good copy from an earlier run stays), and :class:`NotebookFailed` names the notebook and
the cell. ``notebook_timeout`` (seconds) bounds each notebook: past it, or when its kernel
dies, the notebook ends with status ``timeout`` / ``kernel died`` and the run stops the same way.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import PipelineConfig, describe_changes, save_config
from .errors import ConfigError
from .io_utils import read_json, write_json
from .runs import PipelineFolder
from .validation import check_notebook_parameter, suggest

log = logging.getLogger(__name__)

NOTEBOOK_PATTERN = re.compile(r"^\d\d_.+\.ipynb$")
# settings that do not change results: a rerun that differs only in these resumes
RUN_CONTROL = ("run_name", "notebooks", "notebooks_dir", "kernel", "export_html", "overwrite", "notebook_timeout")
# values every notebook may declare; the pipeline sets them
COMMON = ("run_dir", "data_root", "dataset", "demo_preset", "seed")


class NotebookFailed(RuntimeError):
    """A notebook raised, ran past its time or lost its kernel: ``cell`` is the 1-based
    position of the cell in the source notebook; ``status`` is ``failed``, ``timeout`` or
    ``kernel died``."""

    def __init__(self, notebook: str, cell: int | None, source: str, error: str, output: Path,
                 status: str = "failed"):
        self.notebook, self.cell, self.error, self.output, self.status = notebook, cell, error, output, status
        first_line = source.strip().splitlines()[0][:60] if source.strip() else "empty"
        where = f"cell {cell} ({first_line!r})" if cell else "start-up"
        verb = {"failed": "failed", "timeout": "ran out of time", "kernel died": "lost its kernel"}[status]
        super().__init__(f"notebook {notebook} {verb} at {where}: {error}\n  executed copy: {output}")


def _source_cell(executed: Path, index: int | None = None) -> int | None:
    """1-based position in the source notebook of cell ``index`` of the executed copy
    (papermill inserts an ``injected-parameters`` cell that the source does not have);
    without ``index``, the cell that was running when execution stopped."""
    import nbformat

    try:
        cells = nbformat.read(str(executed), as_version=4).cells
    except Exception:
        return None if index is None else index + 1
    if index is None:
        running = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("status") == "running"]
        if not running:
            return None
        index = running[0]
    return index + 1 - sum("injected-parameters" in c.metadata.get("tags", []) for c in cells[:index])


def default_notebooks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "notebooks"


def _notebooks_dir(config: PipelineConfig) -> Path:
    return Path(config.notebooks_dir) if config.notebooks_dir else default_notebooks_dir()


def numbered_notebooks(folder: Path) -> list[Path]:
    """Every ``NN_name.ipynb`` of ``folder``, in order."""
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))


def find_notebooks(config: PipelineConfig, source: str = "pipeline config") -> list[Path]:
    """The notebooks a run executes, in order: those named in the config, or all numbered ones."""
    folder = _notebooks_dir(config)
    if not folder.is_dir():
        raise ConfigError(source, f"no such folder {folder}", key="notebooks_dir", value=config.notebooks_dir)
    found = numbered_notebooks(folder)
    if config.notebooks is None:
        if not found:
            raise FileNotFoundError(f"{folder}: no numbered notebooks (NN_name.ipynb) to run")
        return found
    paths, names = [], [p.stem for p in found]
    for name in config.notebooks:
        path = folder / (name if name.endswith(".ipynb") else f"{name}.ipynb")
        if not path.is_file():
            raise ConfigError(source, f"no notebook {path.name} in {folder}{suggest(path.stem, names)}",
                              key="notebooks", value=name, allowed=", ".join(names))
        paths.append(path)
    return paths


def declared_parameters(notebooks: list[Path]) -> dict[str, dict[str, Any]]:
    """``{notebook stem: {parameter: papermill's description (default, inferred type)}}``."""
    import papermill as pm

    return {nb.stem: dict(pm.inspect_notebook(str(nb))) for nb in notebooks}


def check_names(config: PipelineConfig, declared: dict[str, dict[str, Any]], source: str) -> None:
    """Every notebook and parameter name of the config is declared by a notebook (all numbered
    notebooks of the folder count, so a config may name parameters of notebooks it skips)."""
    for name, values in config.notebook_parameters.items():
        if name not in declared:
            raise ConfigError(source, f"no notebook named {name}{suggest(name, declared)}",
                              key=f"notebook_parameters.{name}", allowed=", ".join(sorted(declared)))
        unknown = sorted(set(values) - set(declared[name]))
        if unknown:
            hint = suggest(unknown[0], declared[name]) if len(unknown) == 1 else ""
            raise ConfigError(source, f"{', '.join(unknown)} not declared in its parameters cell{hint}",
                              key=f"notebook_parameters.{name}", allowed=", ".join(sorted(declared[name])))
    everywhere = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(config.parameters) - everywhere)
    if unknown:
        hint = suggest(unknown[0], everywhere) if len(unknown) == 1 else ""
        raise ConfigError(source, f"{', '.join(unknown)} declared by no notebook{hint}", key="parameters",
                          allowed=", ".join(sorted(everywhere)))


def check_kernel(config: PipelineConfig, source: str) -> None:
    """The Jupyter kernel the config names is installed."""
    if config.kernel is None:
        return
    from jupyter_client.kernelspec import KernelSpecManager

    specs = sorted(KernelSpecManager().find_kernel_specs())
    if config.kernel not in specs:
        raise ConfigError(source, f"is not an installed Jupyter kernel{suggest(config.kernel, specs)}", key="kernel",
                          value=config.kernel, allowed=", ".join(specs))


def notebook_parameters(config: PipelineConfig, notebook: Path, run_dir: Path, declared: dict[str, Any],
                        source: str = "pipeline config") -> dict[str, Any]:
    """Parameters for one notebook: the run's common values, then the config's, keeping only
    the names the notebook declares in its ``parameters`` cell, each checked against the type
    of the notebook's default (errors name ``source`` and the key as the config spells it)."""
    values: dict[str, tuple[str, Any]] = {
        "run_dir": ("run_dir", str(run_dir.resolve())),
        "data_root": ("data_root", str(Path(config.data_root).resolve())),
        "dataset": ("dataset", config.dataset),
        "demo_preset": ("demo_preset", config.demo_preset),
        "seed": ("seed", config.seed),
    }
    values.update({k: (f"parameters.{k}", v) for k, v in config.parameters.items()})
    own = config.notebook_parameters.get(notebook.stem, {})
    unknown = sorted(set(own) - set(declared))
    if unknown:
        raise ConfigError(source, f"{', '.join(unknown)} not declared in its parameters cell",
                          key=f"notebook_parameters.{notebook.stem}", allowed=", ".join(sorted(declared)))
    values.update({k: (f"notebook_parameters.{notebook.stem}.{k}", v) for k, v in own.items()})
    return {k: check_notebook_parameter(v, _default(declared[k]), source, key)
            for k, (key, v) in values.items() if k in declared}


def _default(description) -> str | None:
    return description.get("default") if isinstance(description, dict) else None


# ----------------------------------------------------------------------------- the run folder
def config_changes(saved: Any, config: PipelineConfig) -> list[str]:
    """The settings (dotted keys) whose values differ between a saved run config and ``config``,
    run-control settings (:data:`RUN_CONTROL`) excluded; settings a saved config lacks (it is
    older than them) count with their default."""
    saved = {**PipelineConfig().to_dict(), **(saved if isinstance(saved, dict) else {})}
    return describe_changes(saved, config.to_dict(), ignore=RUN_CONTROL)


def _replace_folder(path: Path) -> None:
    """Move ``path`` aside, then delete it: a crash half-way never leaves a half-deleted run."""
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, trash / "run")
    shutil.rmtree(trash, ignore_errors=True)


def prepare_run_folder(config: PipelineConfig, folder: PipelineFolder, source: str) -> str:
    """``new``, ``resumed`` or ``replaced``: what this run does with ``folder`` (see the module
    docstring). Refusals happen before anything is written."""
    path = folder.path
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return "new"
    if not path.is_dir():
        raise ConfigError(source, f"the run folder {path} is a file; choose another --out")
    if not folder.is_run_folder():
        raise ConfigError(source, f"the run folder {path} is not empty and holds no pipeline run "
                                  f"({folder.config.name}); nothing was changed: choose another --out")
    import yaml

    with open(folder.config, encoding="utf-8") as f:
        changes = config_changes(yaml.safe_load(f), config)
    if not changes:
        return "resumed"
    shown = "; ".join(changes[:4]) + (f"; ... ({len(changes)} settings)" if len(changes) > 4 else "")
    if not config.overwrite:
        raise ConfigError(source, f"the run folder {path} holds a run of another configuration ({shown}); "
                                  "nothing was changed: pass --overwrite (overwrite: true) to replace it, "
                                  "or choose another --out")
    log.warning("replacing the run in %s (%s)", path, shown)
    _replace_folder(path)
    return "replaced"


def export_html(notebook: Path) -> Path:
    """The executed notebook as HTML that shows every figure offline (:mod:`vixml_lib.html_report`)."""
    from .html_report import export_notebook_html

    return export_notebook_html(notebook)


def _remove(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            p.unlink()


class _CellWatch:
    """Given to nbclient as ``timeout_func``: notes the cell being run and gives it the time
    left of the notebook's budget (None: no limit)."""

    def __init__(self, seconds: float | None):
        self.deadline = time.monotonic() + seconds if seconds else None
        self.source = ""

    def __call__(self, cell) -> float | None:
        self.source = cell.get("source", "")
        return None if self.deadline is None else max(0.01, self.deadline - time.monotonic())

    def cell_number(self, notebook: Path) -> int | None:
        """1-based position of the noted cell in the source notebook."""
        import nbformat

        cells = nbformat.read(str(notebook), as_version=4).cells
        return next((i + 1 for i, c in enumerate(cells) if c.source == self.source), None)


def _execute(nb: Path, params: dict[str, Any], folder: PipelineFolder, config: PipelineConfig) -> NotebookFailed | None:
    """Run one notebook into its running copy; None when it ran to its end, else why not."""
    import papermill as pm
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    running, failed = folder.running_notebook(nb.name), folder.failed_notebook(nb.name)
    watch = _CellWatch(config.notebook_timeout)
    try:
        pm.execute_notebook(str(nb), str(running), parameters=params, kernel_name=config.kernel, progress_bar=False,
                            cwd=str(folder.path), log_output=False, timeout_func=watch)
    except PapermillExecutionError as e:
        cell = _source_cell(running, e.cell_index)
        return NotebookFailed(nb.name, cell, e.source, f"{e.ename}: {e.evalue}", failed)
    except TimeoutError:  # nbclient's CellTimeoutError
        return NotebookFailed(nb.name, watch.cell_number(nb), watch.source,
                              f"ran past notebook_timeout ({config.notebook_timeout:g} s)", failed, status="timeout")
    except DeadKernelError as e:
        return NotebookFailed(nb.name, watch.cell_number(nb), watch.source, f"the kernel died ({e})", failed,
                              status="kernel died")
    except Exception as e:  # bad notebook file, kernel that does not start, ...
        return NotebookFailed(nb.name, None, "", f"{type(e).__name__}: {e}", failed)
    return None


def _run_one(nb: Path, params: dict[str, Any], folder: PipelineFolder, config: PipelineConfig,
             entry: dict[str, Any]) -> None:
    """Execute ``nb``; keep its copy as ``NN_name.ipynb`` when it ran to its end, else as
    ``NN_name.failed.ipynb`` beside the good copy of an earlier run (raises NotebookFailed).
    Its metrics file of an earlier run is set aside while it runs and restored if it fails."""
    out, failed, running = folder.notebook(nb.name), folder.failed_notebook(nb.name), folder.running_notebook(nb.name)
    metrics, previous = folder.notebook_metrics(nb.stem), folder.previous_metrics(nb.stem)
    if metrics.exists():
        os.replace(metrics, previous)
    start = time.perf_counter()
    try:
        failure = _execute(nb, params, folder, config)
    except BaseException:  # Ctrl-C: the earlier run's metrics stay in place
        if previous.exists():
            os.replace(previous, metrics)
        raise
    entry["seconds"] = round(time.perf_counter() - start, 2)
    if failure is None:
        os.replace(running, out)
        _remove(previous, failed, folder.html(failed))
        entry["status"] = "ok"
        if config.export_html:
            entry["html"] = export_html(out).name
        return
    if previous.exists():
        os.replace(previous, metrics)
    else:
        _remove(metrics)
    entry.update(status=failure.status, cell=failure.cell, error=failure.error)
    if running.exists():
        os.replace(running, failed)
        entry["output"] = failed.name
        if config.export_html:
            try:
                export_html(failed)
            except Exception as e:  # noqa: BLE001 - the failure matters more than its export
                log.warning("could not export %s: %s", failed, e)
    raise failure


def _write_summary(folder: PipelineFolder, summary: dict[str, Any]) -> None:
    """``metrics.json`` (the metrics of this run's notebooks that finished) and ``pipeline.json``."""
    merged = {}
    for entry in summary["notebooks"]:
        path = folder.notebook_metrics(entry["notebook"])
        if entry.get("status") == "ok" and path.is_file():
            merged[entry["notebook"]] = read_json(path)
    summary["metrics"] = merged
    write_json(folder.metrics, merged)
    write_json(folder.summary, {k: v for k, v in summary.items() if k != "metrics"})
    if summary.get("export_html", True):
        from .html_report import write_index

        write_index(folder.path)  # reports/<run>/index.html: every notebook, figure and metric


def run_pipeline(config: PipelineConfig, run_dir: str | Path | None = None, source: str = "pipeline config") -> dict:
    """Execute the run's notebooks; return the summary written to ``pipeline.json``.

    Everything is checked first (notebook and parameter names and types, the run folder; see
    the module docstring); ``source`` names the config's file in errors."""
    run_dir = Path(run_dir) if run_dir else Path("reports") / config.run_name
    folder = PipelineFolder(run_dir)
    notebooks = find_notebooks(config, source)
    declared = declared_parameters(sorted(set(numbered_notebooks(_notebooks_dir(config))) | set(notebooks)))
    check_names(config, declared, source)
    check_kernel(config, source)
    params = {nb.stem: notebook_parameters(config, nb, run_dir, declared[nb.stem], source) for nb in notebooks}
    mode = prepare_run_folder(config, folder, source)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, folder.config)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "mode": mode, "status": "running", "notebooks": [],
                               "export_html": config.export_html}
    _write_summary(folder, summary)
    bar = tqdm(notebooks, desc="pipeline", unit="notebook")
    try:
        for nb in bar:
            bar.set_postfix_str(nb.stem)
            entry: dict[str, Any] = {"notebook": nb.stem, "status": "running", "parameters": params[nb.stem]}
            summary["notebooks"].append(entry)
            _write_summary(folder, summary)
            log.info("running %s with %s", nb.name, params[nb.stem])
            _run_one(nb, params[nb.stem], folder, config, entry)
            log.info("%s done in %.1f s", nb.name, entry["seconds"])
        summary["status"] = "ok"
    except NotebookFailed as e:
        summary["status"] = e.status
        raise
    except BaseException:  # Ctrl-C, an error of the pipeline itself
        summary["status"] = "interrupted"
        for entry in summary["notebooks"]:
            if entry["status"] == "running":
                entry["status"] = "interrupted"
        raise
    finally:
        bar.close()
        _write_summary(folder, summary)
    return summary
