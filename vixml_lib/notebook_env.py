"""Where a notebook reads its data and writes its results, wherever its kernel starts.

A notebook's kernel starts in one of three places:

* JupyterLab: the notebook's own folder, ``notebooks/``;
* ``vixml pipeline``: the run folder ``reports/<run>/`` (papermill, absolute paths injected);
* a user's papermill or IPython call: usually the repository root.

The parameters cells name paths relative to the repository root (``data_root = "data"``,
``run_dir = "reports/interactive"``). :func:`notebook_env` resolves them the same way in all
three cases: an absolute path is kept; a relative one is taken from the *repository root*,
the nearest of the kernel's folder and its parents that holds a ``notebooks/`` folder (the
kernel's folder when there is none). It creates the folder the notebook writes to, and it
refuses to write into a ``vixml pipeline`` run folder (one with the pipeline's
``config.yaml``) unless the kernel runs inside it (as the pipeline runs notebooks) or the
caller asks (``write_to_pipeline_run=True``): reading a pipeline run's training runs is what
``source_run`` is for. Errors say what to change.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .runs import PipelineFolder

INTERACTIVE_RUN_DIR = "reports/interactive"  # the notebooks' default run_dir, relative to the repository root
NOTEBOOKS_DIR = "notebooks"


def find_repo_root(start: str | Path | None = None) -> Path | None:
    """The nearest of ``start`` (default: the current folder) and its parents that holds a
    ``notebooks/`` folder; None when there is none."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / NOTEBOOKS_DIR).is_dir():
            return folder
    return None


def resolve_path(path: str | Path, root: Path) -> Path:
    """``path`` if absolute, else ``root / path`` (resolved)."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies below it (for messages), else absolute."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class NotebookEnv:
    """The resolved folders of one notebook run (all absolute)."""

    root: Path  # the repository root relative paths were taken from
    cwd: Path  # the kernel's folder
    data_dir: Path  # <data_root>/<dataset>
    run_dir: Path  # where the notebook writes (exists)
    source_run: Path  # the run folder whose training runs are read (run_dir unless given)

    @property
    def folder(self) -> PipelineFolder:
        return PipelineFolder(self.run_dir)

    @property
    def source(self) -> PipelineFolder:
        return PipelineFolder(self.source_run)

    def __str__(self) -> str:
        reads = "" if self.source_run == self.run_dir else f" · training runs from {_shown(self.source_run, self.root)}"
        return (f"data: {_shown(self.data_dir, self.root)} · writes to: {_shown(self.run_dir, self.root)}{reads} "
                f"(relative to {self.root})")


def is_pipeline_run(folder: str | Path) -> bool:
    """True for a ``vixml pipeline`` run folder (:meth:`PipelineFolder.is_run_folder`: its
    ``config.yaml`` holds the pipeline's settings)."""
    return PipelineFolder(folder).is_run_folder()


def notebook_env(data_root: str | Path = "data", dataset: str | None = None,
                 run_dir: str | Path | None = INTERACTIVE_RUN_DIR, source_run: str | Path | None = None, *,
                 need_data: bool = True, need_train_runs: Sequence[str] = (), write_to_pipeline_run: bool = False,
                 cwd: str | Path | None = None) -> NotebookEnv:
    """Resolve a notebook's ``data_root`` / ``dataset``, ``run_dir`` and ``source_run``
    (see the module docstring), create ``run_dir`` and check what the notebook needs:
    the dataset folder (``need_data``; notebook 01 builds it) and the training runs
    ``need_train_runs`` in ``<source_run>/train/``. Raises ``FileNotFoundError`` /
    ``PermissionError`` with the fix in the message."""
    here = Path(cwd if cwd is not None else os.getcwd()).resolve()
    root = find_repo_root(here) or here
    data_dir = resolve_path(Path(data_root) / (dataset or ""), root)
    if need_data and not data_dir.is_dir():
        raise FileNotFoundError(
            f"dataset folder {data_dir} not found: data_root={str(data_root)!r} is read relative to the repository "
            f"root {root} (the kernel runs in {here}). Build it with notebook 01 (01_data_preparation.ipynb, same "
            f"data_root and dataset), or set data_root to the folder that holds {dataset or 'the dataset'}/.")
    out = resolve_path(run_dir if run_dir is not None else INTERACTIVE_RUN_DIR, root)
    if is_pipeline_run(out) and out != here and not write_to_pipeline_run:
        raise PermissionError(
            f"{out} is the run folder of `vixml pipeline` (it holds {PipelineFolder(out).config.name}): writing "
            f"into it would replace that run's figures and metrics. To read its training runs, set "
            f"source_run = {_shown(out, root)!r} and keep run_dir = {INTERACTIVE_RUN_DIR!r}; to write into it "
            f"anyway, pass write_to_pipeline_run=True.")
    source = resolve_path(source_run, root) if source_run is not None else out
    _check_train_runs(PipelineFolder(source), need_train_runs, root)
    out.mkdir(parents=True, exist_ok=True)
    return NotebookEnv(root=root, cwd=here, data_dir=data_dir, run_dir=out, source_run=source)


def _check_train_runs(source: PipelineFolder, names: Sequence[str], root: Path) -> None:
    """Every run of ``names`` in ``source.train_dir``, else an error naming where they are."""
    have = set(source.train_runs())
    missing = [n for n in names if n not in have]
    if not missing:
        return
    elsewhere = sorted(_shown(p.parent.parent, root) for p in (root / "reports").glob(f"*/train/{missing[0]}")
                       if all((p.parent / n).is_dir() for n in missing))
    hint = (f" They are in {', '.join(elsewhere)}: set source_run = {elsewhere[0]!r}." if elsewhere else
            " Train them with notebook 03 (same run_dir), or set source_run to the run folder that has them"
            " (e.g. 'reports/demo' after `bash run.sh demo`).")
    raise FileNotFoundError(
        f"training run(s) {', '.join(missing)} not found in {source.train_dir} "
        f"(it has: {', '.join(sorted(have)) or 'none'}).{hint}")
