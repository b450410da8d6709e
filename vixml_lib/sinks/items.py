"""What the analysis runs on: a seeded sample of a split's items (read through the shared
data layer, :mod:`vixml_lib.data.inputs`) and the finished training runs of notebook 03
(their folders named by :mod:`vixml_lib.runs`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import formats
from ..data.inputs import SplitInputs, open_image_features
from ..data.tokens import load_tokens, tokenize_dataset
from ..runs import PipelineFolder


@dataclass
class ItemSample:
    """A seeded sample of items of one split: their indices, raw titles and model inputs."""

    split: str
    items: np.ndarray
    titles: list[str]
    inputs: dict[str, Any]

    def __len__(self) -> int:
        return len(self.items)


def load_items(data_dir: str | Path, model, *, split: str = "lbl", n_items: int = 32, seed: int = 0,
               vision_encoder: str = "offline-efficientnet-lite0-64", max_len: int = 32, require_image: bool = True,
               encoding: str = "utf-8") -> ItemSample:
    """Sample ``n_items`` items of ``split`` (seeded; only items with at least one image when
    ``require_image`` and the model uses images) and read their title tokens (the token
    cache of the model's backbone, built if missing) and image features (the feature cache
    of ``vision_encoder``, notebook 02)."""
    data_dir = Path(data_dir)
    raw = data_dir / f"{split}.raw.txt"
    if not raw.exists():
        raise FileNotFoundError(f"{raw}: no prepared split {split!r}; run notebook 01 first")
    backbone = model.config.backbone
    tokenize_dataset(data_dir, backbone, max_len=max_len, splits=(split,), encoding=encoding, tokenizer=model.tokenizer)
    tok = load_tokens(data_dir, backbone, max_len, split)
    feats = open_image_features(data_dir, vision_encoder, split) if model.config.use_images else None
    candidates = np.arange(len(tok))
    if feats is not None and require_image:
        candidates = np.flatnonzero(feats.mask.any(1))
    if not len(candidates):
        raise ValueError(f"{data_dir}: no item of {split!r} has an image")
    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(candidates, min(n_items, len(candidates)), replace=False))
    inputs = SplitInputs(tok.ids, tok.lengths, feats).batch(items)  # the tensors training reads
    texts = formats.read_texts(raw, encoding=encoding)
    return ItemSample(split, items, [texts[i] for i in items], inputs)


@dataclass
class TrainedRun:
    """A finished training run of notebook 03: its folder, summary, config and model."""

    name: str
    folder: Path
    model: Any
    summary: dict | None
    config: Any = None


def read_run_summary(run_dir: str | Path, name: str) -> dict:
    """The summary (``TrainFolder.metrics``) of the training run ``name`` of the pipeline run
    folder ``run_dir`` (``FileNotFoundError`` naming the path)."""
    run = PipelineFolder(run_dir).train_run(name)
    if not run.is_finished():
        raise FileNotFoundError(f"{run.metrics}: no finished training run {name!r} (notebook 03 writes it)")
    return run.read_metrics()


def load_trained_run(run_dir: str | Path, name: str, device: str | torch.device = "cpu") -> TrainedRun:
    """Load the model of the training run ``name`` of ``run_dir`` (``TrainFolder.model``) with
    eager attention (its own saved model config, ``num_layers`` included), with the run's
    summary and ``TrainConfig``."""
    from ..models import is_saved_model, load_model
    from ..training.config import load_train_config

    run = PipelineFolder(run_dir).train_run(name)
    if not run.exists():
        raise FileNotFoundError(f"{run.path}: no training run {name!r} in this run folder (notebook 03 writes it)")
    if not is_saved_model(run.model):
        raise FileNotFoundError(f"{run.model}: the run {name!r} has no saved model (unfinished?)")
    model = load_model(run.model, map_location=device, attn_implementation="eager").eval()
    summary = run.read_metrics() if run.is_finished() else None
    config = load_train_config(run.config) if run.config.is_file() else None
    return TrainedRun(name, run.path, model, summary, config)
