"""Training ViXML dual encoders.

- :mod:`~vixml_lib.training.config`: :class:`TrainConfig`, one per run, saved beside its results;
- :mod:`~vixml_lib.training.loop`: :func:`train`, the loop top to bottom (setup, resume, epochs, finish);
- :mod:`~vixml_lib.training.batches`: an epoch's batches, sampled positives, in-batch targets;
- :mod:`~vixml_lib.training.evaluation`: :func:`encode` a split, :func:`evaluate_model` (retrieve + metrics);
- :mod:`~vixml_lib.training.optim`: AdamW parameter groups and the learning-rate schedule;
- :mod:`~vixml_lib.training.prototypes`: PRIME in the loop (clusters, centroids, loss, checkpoint);
- :mod:`~vixml_lib.training.checkpoints`: atomic checkpoints for exact resume;
- :mod:`~vixml_lib.training.results`: learning curves and results tables of finished runs.
"""
from .batches import batch_targets, epoch_batches, loss_positives, sample_positive_labels, steps_per_epoch
from .checkpoints import load_checkpoint, save_checkpoint
from .config import TrainConfig, config_key, load_train_config, make_train_config
from .evaluation import encode, evaluate_model, retrieve
from .loop import train
from .optim import linear_schedule, param_groups
from .results import (
    PAPER_131K,
    paper_table,
    plot_before_after,
    plot_history,
    results_rows,
    seed_rows,
    seed_run_name,
)

__all__ = [
    "TrainConfig", "make_train_config", "load_train_config", "config_key", "train", "linear_schedule",
    "param_groups", "encode", "evaluate_model", "retrieve", "sample_positive_labels", "loss_positives",
    "batch_targets", "epoch_batches", "steps_per_epoch", "save_checkpoint", "load_checkpoint", "plot_history",
    "results_rows", "plot_before_after", "paper_table", "PAPER_131K", "seed_rows", "seed_run_name",
]
