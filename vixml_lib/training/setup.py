"""Everything a run builds once before its first step: device and ranks, model, data,
PRIME head, optimizer and schedule, cluster schedule (:func:`setup` -> :class:`Setup`)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.inputs import TrainingData, load_training_data, open_image_features
from ..devices import resolve_device
from ..losses import TripletLoss
from ..models import DualEncoder, create_model
from ..prime import PrimeHead
from ..runs import TrainFolder
from ..sampling import ClusterSchedule
from .batches import steps_per_epoch
from .config import TrainConfig
from .distributed import World, init_world
from .optim import make_optimizer, param_groups
from .prototypes import PrimeState, build_prime

log = logging.getLogger(__name__)


class StepModule(nn.Module):
    """What one training step runs through the network: the queries, the labels and (PRIME)
    the labels' prototypes, in ONE forward, so ``DistributedDataParallel`` can wrap it."""

    def __init__(self, model: DualEncoder, head: PrimeHead | None = None):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, queries: dict, labels: dict, label_ids: torch.Tensor | None = None):
        q = self.model(**queries)  # [b, D]
        u = self.model(**labels)  # [b, D]
        z = self.head(u, label_ids) if self.head is not None else None  # [b, D]
        return q, u, z


@dataclass
class Setup:
    """What every step of a run uses, built once by :func:`setup`."""

    config: TrainConfig
    run: TrainFolder
    device: torch.device
    world: World
    model: DualEncoder
    step_module: nn.Module  # StepModule, wrapped in DistributedDataParallel when world.size > 1
    data: TrainingData
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: TripletLoss
    schedule: ClusterSchedule
    train_rows: np.ndarray  # training queries with at least one label
    sample_weights: np.ndarray | None  # inverse propensities for positive sampling, or None
    prime: PrimeState | None = None  # method: prime


def setup(config: TrainConfig) -> Setup:
    """Device, ranks, model, data, optimizer, schedule and loss of a run."""
    if config.positive_sampling not in ("uniform", "propensity"):
        raise ValueError(f"positive_sampling must be uniform or propensity, not {config.positive_sampling!r}")
    run = TrainFolder(config.out_dir)
    world, rank_device = init_world(config.device)
    device = rank_device or resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model_config = config.model_config()
    if model_config.use_images:  # the projection's input width is the feature cache's
        dim = open_image_features(Path(config.data_dir), config.vision_encoder, "lbl").dim
        model_config = dataclasses.replace(model_config, vision_dim=dim)
    model = create_model(model_config).to(device)
    data = load_training_data(config, model)
    train_rows = np.flatnonzero(np.diff(data.Y_trn.indptr) > 0)
    prime = None
    if config.method == "prime":
        prime = build_prime(config.prime, data.n_labels, model.embedding_dim, train_rows, data.Y_trn.shape[0],
                            config.seed, device)
    n_steps = steps_per_epoch(config.batch_size, config.max_steps_per_epoch, len(train_rows))
    groups = param_groups(model, config.lr, config.lr_image_proj, config.weight_decay,
                          prime.head if prime else None, config.prime.lr)
    optimizer, scheduler = make_optimizer(groups, config.adam_eps, config.epochs * n_steps, config.warmup_steps,
                                          device)
    warmup = {} if config.cluster_warmup_epochs is None else {"warmup_epochs": config.cluster_warmup_epochs}
    schedule = ClusterSchedule.for_backbone(
        model.kind, **warmup, refresh_every=config.cluster_refresh_every, cluster_size=config.cluster_size,
        double_at=tuple(config.cluster_double_at), batch_size=config.batch_size)
    weights = data.inv_psp if config.positive_sampling == "propensity" else None
    step_module: nn.Module = StepModule(model, prime.head if prime else None)
    if world.distributed:
        if config.cluster_encode_to_disk and world.main:  # encoder_of gathers the ranks' shards in RAM
            log.warning("cluster_encode_to_disk is for one process: with %d ranks the clustering's embeddings "
                        "are gathered in RAM (cluster_encode_dtype: float16 halves them)", world.size)
        # find_unused_parameters: a backbone may hold parameters the embedding never uses (BERT's pooler)
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True)
    if world.main:
        run.path.mkdir(parents=True, exist_ok=True)
    return Setup(config, run, device, world, model, step_module, data, optimizer, scheduler,
                 TripletLoss(config.loss), schedule, train_rows, weights, prime)
