"""PRIME in the training loop (``TrainConfig.method == "prime"``): when training starts, the
labels' balanced clustering (-> free vectors) and the exact centroids; each step, the
prototypes and :func:`vixml_lib.losses.prime_loss`; at each epoch end, the centroids; at
evaluation, the prototypes of the labels seen in training; in the checkpoint, all of it.

Centroids (``PrimeConfig.centroids``), after the authors' ``utils.train``:

- ``stale``: at each epoch end from the embeddings the epoch's own forward passes left in a
  bank of the training queries (a query not visited keeps its previous embedding), and from a
  fresh encoding of every training query after the last epoch;
- ``exact``: every training query re-encoded at each epoch end;
- ``ema``: ``c_l <- ema c_l + (1 - ema) x`` for each (query, label) pair of each batch.

Every centroid computation is one sparse product ``Y^T E`` (:func:`vixml_lib.prime.label_centroids`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..losses import LossConfig, prime_loss
from ..prime import PrimeConfig, PrimeHead, free_vector_count, label_centroids
from ..runs import CheckpointFolder
from ..sampling import balanced_clusters
from .batches import loss_positives

log = logging.getLogger(__name__)


@dataclass
class PrimeState:
    """The PRIME head of a run and the bank of training-query embeddings (stale centroids)."""

    head: PrimeHead
    train_rows: np.ndarray  # [n] the training queries with a label (dataset rows)
    bank_pos: np.ndarray  # [n_trn] dataset row -> position in `bank` (-1: not a training row)
    bank: np.ndarray | None = None  # [n, D] float32, for centroids="stale"

    @property
    def config(self) -> PrimeConfig:
        return self.head.config


def build_prime(config: PrimeConfig, n_labels: int, dim: int, train_rows: np.ndarray, n_trn: int, seed: int,
                device: torch.device) -> PrimeState:
    """A fresh head (free vectors xavier-initialised, buffers empty) on ``device``."""
    head = PrimeHead(n_labels, dim, config, seed=seed).to(device)
    bank_pos = np.full(n_trn, -1, np.int64)
    bank_pos[train_rows] = np.arange(len(train_rows))
    return PrimeState(head, train_rows, bank_pos)


def init_prime(p: PrimeState, encode_split, Y_trn, seed: int) -> None:
    """When training starts: cluster the labels' initial embeddings into at most K balanced
    clusters (fixed from then on), and compute the centroids from every training query.
    ``encode_split(split, rows)`` encodes a split's rows (all of them when None)."""
    u0 = encode_split("lbl", None)  # [L, D]
    n_labels = u0.shape[0]
    k = free_vector_count(n_labels, p.config.free_vectors)
    clusters = balanced_clusters(u0, math.ceil(n_labels / k), seed=seed, device=p.head.free.device)
    p.head.set_clusters(clusters, u0)
    log.info("PRIME: %d labels in %d clusters of %d free vectors", n_labels, len(clusters), k)
    refresh_centroids(p, encode_split, Y_trn, exact=True)


def refresh_centroids(p: PrimeState, encode_split, Y_trn, exact: bool) -> None:
    """Centroids from a fresh encoding of every training query (``exact``) or from the bank."""
    if exact or p.bank is None:
        emb = encode_split("trn", p.train_rows)
        if p.config.centroids == "stale":
            p.bank = emb
    else:
        emb = p.bank
    C, counts = label_centroids(Y_trn, emb, rows=p.train_rows)
    p.head.set_centroids(C, counts)


def end_of_epoch(p: PrimeState, encode_split, Y_trn, last: bool) -> None:
    """The centroids of the next epoch (nothing to do for EMA centroids)."""
    if p.config.centroids == "stale":
        refresh_centroids(p, encode_split, Y_trn, exact=last)
    elif p.config.centroids == "exact":
        refresh_centroids(p, encode_split, Y_trn, exact=True)


def batch_loss(p: PrimeState, q: torch.Tensor, u: torch.Tensor, z: torch.Tensor, rows: np.ndarray,
               labels: np.ndarray, target: torch.Tensor, loss: LossConfig, fixed_positive: bool,
               rng: np.random.Generator):
    """PRIME's loss of one batch: queries ``q`` [B, D] of the training ``rows``, label embeddings
    ``u`` [B, D] of ``labels`` and their prototypes ``z`` [B, D]; updates the bank (stale) or the
    centroids (EMA) with ``q``."""
    positives = {"xu": loss_positives(target, fixed_positive, rng), "xz": loss_positives(target, fixed_positive, rng),
                 "ux": loss_positives(target.T, fixed_positive, rng), "reg": loss_positives(target, False, rng)}
    value, parts = prime_loss(q, u, z, target, positives, loss)
    if p.config.centroids == "stale" and p.bank is not None:
        p.bank[p.bank_pos[rows]] = q.detach().float().cpu().numpy()
    elif p.config.centroids == "ema":
        p.head.ema_update(torch.from_numpy(np.asarray(labels, np.int64)), q)
    return value, parts


def label_transform(p: PrimeState):
    """For evaluation: label encoder embeddings ``[L, D]`` -> what is searched (``z`` for the
    labels seen in training, ``u`` for the others)."""
    return lambda u: p.head.label_embeddings(u, np.arange(u.shape[0]))


def save_prime(p: PrimeState, ckpt: CheckpointFolder) -> None:
    """Write the head (free vectors, combiner, cluster map, centroids) and the bank into ``ckpt``."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in p.head.state_dict().items()}, str(ckpt.prime))
    if p.bank is not None:
        np.save(ckpt.prime_bank, p.bank, allow_pickle=False)


def load_prime(p: PrimeState, ckpt: CheckpointFolder) -> None:
    from safetensors.torch import load_file

    p.head.load_state_dict(load_file(str(ckpt.prime), device="cpu"))
    if ckpt.prime_bank.exists():
        p.bank = np.load(ckpt.prime_bank, allow_pickle=False)
