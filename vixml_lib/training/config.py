"""One training run's settings: :class:`TrainConfig`, saved as ``config.yaml`` beside every result."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import config_from_dict, read_config_file
from ..losses import LossConfig
from ..models import MODEL_PRESETS, ModelConfig, model_config
from ..prime import PrimeConfig
from ..recipes import apply_recipe


@dataclass
class TrainConfig:
    """Everything one training run depends on (saved with every checkpoint and result)."""

    data_dir: str = "data/demo-small"
    out_dir: str = "reports/train/minilm-vixml"
    # the recipe the values came from (vixml_lib.recipes.RECIPES; applied by make_train_config)
    recipe: str | None = None
    # ngame: the triplet loss on the label encoder; prime: PRIME label prototypes on top of it
    method: str = "ngame"
    prime: PrimeConfig = field(default_factory=PrimeConfig)
    # model: a preset of vixml_lib.models.MODEL_PRESETS, plus overrides of its ModelConfig
    model: str = "minilm-vixml"
    use_images: bool | None = None  # None: as the preset says
    # None: the preset's (encoder / text_image ...); a name of prompt.TEMPLATES; or a mapping
    # of prompt.make_template arguments, e.g. {"order": "image_text", "eos": False}
    template: str | dict | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    vision_encoder: str = "offline-efficientnet-lite0-64"  # name of the image feature cache to read
    max_len: int = 32
    encoding: str = "utf-8"
    # loss: the NGAME triplet loss (METHOD.md), its settings in one object
    loss: LossConfig = field(default_factory=LossConfig)
    positive_sampling: str = "uniform"  # the label a query brings to the batch: uniform | propensity
    # the loss's positive: the query's own label (True) or drawn over every in-batch positive
    # of the query (False, the authors' --no-fixed_pos)
    fixed_positive: bool = True
    # schedule
    epochs: int = 3
    batch_size: int = 128
    max_steps_per_epoch: int | None = None  # cap for quick CPU runs
    lr: float = 5e-4  # backbone (or LoRA adapters)
    lr_image_proj: float = 5e-4
    weight_decay: float = 0.01
    adam_eps: float = 1e-8  # AdamW epsilon (the authors': 1e-6)
    warmup_steps: int = 100
    grad_clip: float | None = 1.0
    # NGAME clustered batches
    cluster_warmup_epochs: int | None = None  # None: 10 for encoders, 4 for decoders
    cluster_size: int = 16
    cluster_refresh_every: int = 5
    cluster_double_at: list[int] = field(default_factory=list)
    # the training queries' embeddings that clustering reads (2.2M x 2048 for 1.3M: 18 GB in float32)
    cluster_encode_dtype: str = "float32"  # float16: half the memory (clusters of slightly rounded vectors)
    cluster_encode_to_disk: bool = False  # a memory-mapped file in the run folder instead of RAM (one process)
    # evaluation
    eval_every: int = 1
    eval_at_start: bool = True  # epoch 0 = the model without fine-tuning (zero-shot)
    eval_max_queries: int | None = None  # evaluate on a seeded subset of test queries (quick CPU runs)
    # the evaluations before the last one use a seeded subset of that many of those queries
    # (None: all); the final evaluation always uses all of them
    eval_subset_queries: int | None = None
    # a smaller problem for CPU budgets: a seeded sample of labels, and the queries that have
    # one of them (training and evaluation); None: every label
    max_labels: int | None = None
    k: int = 5
    recall_k: list[int] = field(default_factory=lambda: [100])
    retrieval: str = "exact"  # exact | faiss-flat | faiss-ivf
    A: float = 0.6
    B: float = 2.6
    encode_batch_size: int = 256
    save_embeddings: bool = True
    # run
    checkpoint_every_steps: int | None = None  # also checkpoint inside an epoch (None: at epoch ends)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    resume: bool = True

    def __post_init__(self):
        # nested settings given as mappings (TrainConfig(loss={"k": 5}))
        if isinstance(self.loss, dict):
            self.loss = config_from_dict(LossConfig, self.loss, source="loss")
        if isinstance(self.prime, dict):
            self.prime = config_from_dict(PrimeConfig, self.prime, source="prime")
        if self.method not in ("ngame", "prime"):
            raise ValueError(f"method must be ngame or prime, got {self.method!r}")

    def model_config(self) -> ModelConfig:
        """The run's :class:`ModelConfig`: the preset, then ``model_overrides``, ``use_images``,
        ``template`` and the run's seed."""
        if self.model not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {self.model!r}; presets: {', '.join(sorted(MODEL_PRESETS))}")
        overrides = dict(self.model_overrides)
        if self.use_images is not None:
            overrides["use_images"] = self.use_images
        if self.template is not None:
            overrides["template"] = self.template
        overrides["seed"] = self.seed
        return model_config(self.model, **overrides)


def make_train_config(values: dict[str, Any], source: str = "train config") -> TrainConfig:
    """A :class:`TrainConfig` from a mapping: the recipe it names (if any), then its own values."""
    return config_from_dict(TrainConfig, apply_recipe(values), source=source)


def load_train_config(path: str | Path, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file, with ``overrides`` (None values ignored)."""
    values = read_config_file(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make_train_config(values, source=str(path))


def config_key(config: TrainConfig) -> dict:
    """The settings a checkpoint depends on (a resumed or reused run must match them)."""
    d = dataclasses.asdict(config)
    for k in ("out_dir", "resume", "device", "threads", "save_embeddings", "cluster_encode_to_disk"):
        d.pop(k)
    return d
