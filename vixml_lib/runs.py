"""Run folders: the one place that names the files a run leaves behind.

Two kinds of folder, each a small object that knows its files (nothing else in the
library spells these names):

``PipelineFolder`` -- ``reports/<run>/``, what ``vixml pipeline`` and the notebooks write::

    config.yaml              the resolved PipelineConfig
    pipeline.json            status and seconds per notebook
    metrics.json             metrics/<notebook>.json merged
    metrics/<notebook>.json  one notebook's metrics
    figures/<name>.png|html  figures
    NN_name.ipynb / .html    executed notebooks and their exports (only runs that finished)
    NN_name.failed.ipynb / .failed.html   the copy of a notebook that failed, beside the good one
    .NN_name.running.ipynb   a notebook being executed (renamed to one of the above at its end)
    index.html               links to the exports, figures and metrics, with status and seconds
    train/<name>/            training runs (TrainFolder), notebook 03
    ablations/               results.csv, results.json and <backbone>/<cell>/ (TrainFolder), notebook 05

``TrainFolder`` -- one training run (``vixml train``, notebook 03, an ablation cell)::

    config.yaml              the TrainConfig
    metrics.json             summary: per-epoch history and final metrics
    checkpoint/              state.json, model/, optimizer.pt, scheduler.pt, clusters.npz,
                             prime.safetensors and prime_bank.npy (method: prime)
    embeddings_tst.npy       L2-normalised float32 query embeddings (evaluated test queries)
    embeddings_lbl.npy       label embeddings (the ones that were searched)
    predictions_tst.npz      top-k scores, scipy sparse (queries x labels)
    items_tst.npy / items_lbl.npy   dataset row of each embedding row
    prime_clusters.npy       PRIME: the free vector of each label (method: prime)
    cluster_embeddings_trn.npy   scratch while training with cluster_encode_to_disk: the training
                             queries' embeddings clustering reads (removed when the run ends)
    error.txt                why the run failed (ablation cells)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io_utils import atomic_path, read_json

SPLIT_NAMES = ("tst", "lbl")


@dataclass(frozen=True)
class CheckpointFolder:
    """``<train run>/checkpoint/``: written whole into ``checkpoint.tmp`` and swapped in."""

    path: Path

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def optimizer(self) -> Path:
        return self.path / "optimizer.pt"

    @property
    def scheduler(self) -> Path:
        return self.path / "scheduler.pt"

    @property
    def clusters(self) -> Path:
        return self.path / "clusters.npz"

    @property
    def rng(self) -> Path:
        """torch's random-number state, for a checkpoint written inside an epoch."""
        return self.path / "rng.pt"

    @property
    def prime(self) -> Path:
        """PRIME head: free vectors, combiner, label -> free-vector map, centroids."""
        return self.path / "prime.safetensors"

    @property
    def prime_bank(self) -> Path:
        """PRIME: the training queries' latest embeddings (stale centroids)."""
        return self.path / "prime_bank.npy"

    @property
    def tmp(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    @property
    def old(self) -> Path:
        return self.path.with_name(self.path.name + ".old")

    def exists(self) -> bool:
        return self.state.is_file()

    def read_state(self) -> dict[str, Any]:
        return read_json(self.state)

    def at(self, folder: Path) -> CheckpointFolder:
        """The same layout under another folder (e.g. :attr:`tmp` while writing)."""
        return CheckpointFolder(Path(folder))


@dataclass(frozen=True)
class TrainFolder:
    """One training run's folder (see the module docstring for its files)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def checkpoint(self) -> CheckpointFolder:
        return CheckpointFolder(self.path / "checkpoint")

    @property
    def model(self) -> Path:
        """The trained model (``DualEncoder.save`` format) inside the checkpoint."""
        return self.checkpoint.model

    def embeddings(self, split: str) -> Path:
        _check_split(split)
        return self.path / f"embeddings_{split}.npy"

    def items(self, split: str) -> Path:
        _check_split(split)
        return self.path / f"items_{split}.npy"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions_tst.npz"

    @property
    def prime_clusters(self) -> Path:
        return self.path / "prime_clusters.npy"

    @property
    def cluster_embeddings(self) -> Path:
        return self.path / "cluster_embeddings_trn.npy"

    @property
    def error(self) -> Path:
        return self.path / "error.txt"

    def exists(self) -> bool:
        return self.path.is_dir()

    def is_finished(self) -> bool:
        """True when the run wrote its summary (``metrics.json``)."""
        return self.metrics.is_file()

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.metrics)

    def read_config(self) -> dict[str, Any]:
        """The saved TrainConfig as a plain dict (``{}`` when there is none)."""
        import yaml

        if not self.config.is_file():
            return {}
        with open(self.config, encoding="utf-8") as f:
            values = yaml.safe_load(f)
        return values if isinstance(values, dict) else {}

    def save_array(self, path: Path, array: np.ndarray) -> Path:
        """Write ``array`` as ``.npy`` at ``path`` (one of this folder's files), atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, array)
        return path


@dataclass(frozen=True)
class PipelineFolder:
    """A pipeline run folder ``reports/<run>/`` (see the module docstring for its files)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.path / "pipeline.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def metrics_dir(self) -> Path:
        return self.path / "metrics"

    def notebook_metrics(self, notebook: str) -> Path:
        return self.metrics_dir / f"{notebook}.json"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    def figure(self, name: str, ext: str = "png") -> Path:
        return self.figures_dir / f"{name}.{ext}"

    def notebook(self, filename: str) -> Path:
        """The executed copy of a notebook (``NN_name.ipynb``) that ran to its end."""
        return self.path / filename

    def failed_notebook(self, filename: str) -> Path:
        """The executed copy of a notebook that failed (``NN_name.failed.ipynb``); a good copy stays."""
        return self.path / f"{Path(filename).stem}.failed.ipynb"

    def running_notebook(self, filename: str) -> Path:
        """Where a notebook is executed (``.NN_name.running.ipynb``) before it is renamed."""
        return self.path / f".{Path(filename).stem}.running.ipynb"

    def html(self, notebook: Path) -> Path:
        """The HTML export of an executed notebook copy."""
        return notebook.with_suffix(".html")

    def previous_metrics(self, notebook: str) -> Path:
        """Where a notebook's metrics of the previous run wait while it runs again."""
        return self.metrics_dir / f".{notebook}.previous.json"

    def is_run_folder(self) -> bool:
        """True when the folder holds a pipeline run (its ``config.yaml`` names run settings)."""
        import yaml

        if not self.config.is_file():
            return False
        try:
            with open(self.config, encoding="utf-8") as f:
                values = yaml.safe_load(f)
        except (OSError, ValueError, yaml.YAMLError):
            return False
        return isinstance(values, dict) and {"run_name", "notebook_parameters"} <= set(values)

    @property
    def index(self) -> Path:
        """``index.html``: links to every notebook's export, the figures and the metrics."""
        return self.path / "index.html"

    @property
    def train_dir(self) -> Path:
        return self.path / "train"

    def train_run(self, name: str) -> TrainFolder:
        return TrainFolder(self.train_dir / name)

    def train_runs(self) -> list[str]:
        """Names of the training runs in ``train/`` (sorted)."""
        return sorted(p.name for p in self.train_dir.iterdir() if p.is_dir()) if self.train_dir.is_dir() else []

    @property
    def ablations_dir(self) -> Path:
        return self.path / "ablations"

    def ablation_cell(self, backbone: str, cell: str) -> TrainFolder:
        return TrainFolder(self.ablations_dir / backbone / cell)

    def ablation_results(self, ext: str = "json") -> Path:
        return self.ablations_dir / f"results.{ext}"


def _check_split(split: str) -> None:
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
