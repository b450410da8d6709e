"""One epoch's batches: which training queries go together (random or NGAME clustered),
which positive label each query brings, and the in-batch target matrix."""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from ..sampling import ClusterSchedule, clustered_batches, random_batches


def sample_positive_labels(Y: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator,
                           weights: np.ndarray | None = None) -> np.ndarray:
    """One positive label per row of ``Y``: uniform, or proportional to ``weights[label]``
    (inverse propensity). Gumbel-max over each row's labels, vectorised."""
    starts, ends = Y.indptr[rows], Y.indptr[rows + 1]
    counts = ends - starts
    if (counts == 0).any():
        raise ValueError("every training query in a batch needs at least one label")
    seg = np.repeat(np.arange(len(rows)), counts)
    first = np.cumsum(counts) - counts  # where each row's labels start in `flat`
    flat = Y.indices[np.repeat(starts - first, counts) + np.arange(counts.sum())]
    keys = rng.gumbel(size=len(flat))
    if weights is not None:
        keys = keys + np.log(weights[flat])
    order = np.lexsort((-keys, seg))  # per segment, best key first
    return flat[order[first]]


def batch_targets(Y: sp.csr_matrix, queries: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """``[B, N]`` bool: label ``labels[j]`` is relevant to query ``queries[i]`` (every in-batch positive)."""
    sub = Y[queries][:, labels]
    return torch.from_numpy(sub.toarray() > 0)


def loss_positives(target: torch.Tensor, fixed: bool, rng: np.random.Generator) -> torch.Tensor:
    """``[B]`` the column of each row of ``target`` [B, N] that the loss uses as its positive:
    the diagonal (the query's own label, ``fixed``) or one drawn uniformly over the row's
    positives (the authors' ``--no-fixed_pos``)."""
    b = target.shape[0]
    if fixed:
        return torch.arange(b, device=target.device)
    t = sp.csr_matrix(target.detach().cpu().numpy())
    return torch.from_numpy(sample_positive_labels(t, np.arange(b), rng)).to(target.device)


def epoch_batches(batch_size: int, max_steps: int | None, schedule: ClusterSchedule, epoch: int,
                  train_rows: np.ndarray, clusters: list[np.ndarray] | None,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """The batches of ``epoch`` (arrays of training rows): whole clusters once the schedule
    uses them, else a random permutation of ``train_rows``; at most ``max_steps`` of them."""
    if clusters is not None and schedule.use_clusters(epoch):
        batches = clustered_batches(clusters, batch_size, rng)
    else:
        batches = [train_rows[b] for b in random_batches(len(train_rows), batch_size, rng)]
    return batches[:max_steps] if max_steps else batches


def steps_per_epoch(batch_size: int, max_steps: int | None, n_train: int) -> int:
    """Optimiser steps in one epoch of ``n_train`` queries (capped at ``max_steps``)."""
    steps = math.ceil(n_train / batch_size)
    return min(steps, max_steps) if max_steps else steps
