"""PRIME label prototypes, as ViXML trains them for its main results.

K. Dahiya et al., "Prototypical Extreme Multi-label Classification with a Dynamic Margin
Loss" (PRIME), NAACL 2025; the ViXML release (DiegoOrtego/vixml, ``utils.py``) follows it.

Each label ``l`` is described by a bag of three vectors:

- ``u_l``: the dual encoder's embedding of the label (text and images, as for queries);
- ``v_m(l)``: a trainable free vector from a bank of ``K`` vectors, ``m`` a fixed balanced
  clustering of the labels' initial embeddings (computed once, when training starts);
- ``c_l``: the mean embedding of the training queries tagged with ``l`` (a buffer, not
  trained): ``C = diag(1 / n_l) Y^T E`` with ``Y`` the training label matrix and ``E`` the
  query embeddings, recomputed from the queries' embeddings at each epoch end (or by EMA).

A combiner (one ``TransformerEncoderLayer``: 8 heads, feed-forward 1024, dropout 0.1, GELU)
runs over the bag; its mean, L2-normalised, is the prototype::

    z_l = normalize( mean_j  Combiner([u_l, v_m(l), c_l])_j )          # [D]

At inference a label seen in training (at least one training query) is represented by
``z_l``, a label without training query by ``u_l``. The loss that trains it is
:class:`vixml_lib.losses.PrimeLoss`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrimeConfig", "PrimeHead", "free_vector_count", "label_centroids"]

PAPER_FREE_VECTORS = 65_536  # the authors' --n-clusters for LF-AmazonTitles-131K and -1.3M


@dataclass
class PrimeConfig:
    """Settings of the PRIME prototypes (used when ``TrainConfig.method == "prime"``)."""

    # K free vectors; None: the largest power of two <= n_labels / 2, at most 65,536 (the
    # paper's K for 131K labels, about two labels per free vector)
    free_vectors: int | None = None
    free_vector_init: str = "xavier"  # xavier | cluster_mean (mean label embedding of each cluster)
    heads: int = 8
    feedforward: int = 1024
    dropout: float = 0.1
    lr: float = 5e-4  # combiner and free vectors
    # stale: from the epoch's own forward passes, re-encoded exactly at the last epoch (the
    # authors' runs); exact: every training query re-encoded at each epoch end; ema: per batch
    centroids: str = "stale"
    ema: float = 0.95  # c <- ema * c + (1 - ema) * x, for centroids="ema"

    def __post_init__(self):
        if self.free_vectors is not None and (self.free_vectors < 1 or self.free_vectors & (self.free_vectors - 1)):
            raise ValueError(f"free_vectors must be a power of two (or None), got {self.free_vectors}")
        if self.free_vector_init not in ("xavier", "cluster_mean"):
            raise ValueError(f"free_vector_init must be xavier or cluster_mean, got {self.free_vector_init!r}")
        if self.centroids not in ("stale", "exact", "ema"):
            raise ValueError(f"centroids must be stale, exact or ema, got {self.centroids!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


def free_vector_count(n_labels: int, requested: int | None = None) -> int:
    """K: ``requested``, or the largest power of two <= ``n_labels / 2`` (at least 1, at most 65,536)."""
    if requested is not None:
        return int(requested)
    return min(PAPER_FREE_VECTORS, 2 ** max(0, int(math.floor(math.log2(max(1.0, n_labels / 2))))))


def label_centroids(Y: sp.csr_matrix, E: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(C [L, D] float32, counts [L])``: the mean of the embeddings ``E`` of the training
    queries tagged with each label (0 for a label without query), by one sparse product
    ``Y^T E`` -- never a dense queries x labels matrix.

    ``E`` holds the embeddings of the queries ``rows`` (all of ``Y``'s rows when None)."""
    Y = sp.csr_matrix(Y)
    if rows is not None:
        Y = Y[np.asarray(rows)]
    if Y.shape[0] != E.shape[0]:
        raise ValueError(f"{Y.shape[0]} label rows but {E.shape[0]} query embeddings")
    B = sp.csr_matrix((np.ones(Y.nnz, np.float32), Y.indices, Y.indptr), shape=Y.shape)  # binary
    counts = np.asarray(B.sum(axis=0)).ravel()  # [L]
    C = np.asarray(B.T @ np.asarray(E, np.float32), dtype=np.float32)  # [L, D]
    C /= np.maximum(counts, 1)[:, None]
    return C, counts.astype(np.int64)


class PrimeHead(nn.Module):
    """Free vectors, the combiner and the per-label buffers (cluster map, centroids, seen)."""

    def __init__(self, n_labels: int, dim: int, config: PrimeConfig, seed: int = 0):
        super().__init__()
        self.config = config
        k = free_vector_count(n_labels, config.free_vectors)
        if dim % config.heads:
            raise ValueError(f"the combiner's {config.heads} heads must divide the embedding size {dim}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            self.free = nn.Parameter(torch.empty(k, dim))  # [K, D]
            nn.init.xavier_uniform_(self.free)
            self.combiner = nn.TransformerEncoderLayer(dim, config.heads, config.feedforward, config.dropout,
                                                       activation="gelu", batch_first=True)
        self.register_buffer("cluster_of", torch.zeros(n_labels, dtype=torch.long))  # [L] label -> free vector
        self.register_buffer("centroids", torch.zeros(n_labels, dim))  # [L, D]
        self.register_buffer("seen", torch.zeros(n_labels, dtype=torch.bool))  # [L] has a training query

    @property
    def n_free(self) -> int:
        return self.free.shape[0]

    def set_clusters(self, clusters: list[np.ndarray], label_embeddings: np.ndarray | None = None) -> None:
        """Fix the label -> free vector map from a balanced clustering of the labels (at most
        K clusters); with ``free_vector_init="cluster_mean"`` each free vector starts as the
        mean label embedding of its cluster (the authors' ``--init_fv_w_embeddings``)."""
        if len(clusters) > self.n_free:
            raise ValueError(f"{len(clusters)} label clusters for {self.n_free} free vectors")
        cluster_of = np.empty(self.cluster_of.shape[0], np.int64)
        for m, members in enumerate(clusters):
            cluster_of[members] = m
        self.cluster_of.copy_(torch.from_numpy(cluster_of))
        if self.config.free_vector_init == "cluster_mean":
            if label_embeddings is None:
                raise ValueError("free_vector_init='cluster_mean' needs the label embeddings")
            with torch.no_grad():
                for m, members in enumerate(clusters):
                    self.free[m].copy_(torch.from_numpy(np.asarray(label_embeddings[members]).mean(0)))

    def set_centroids(self, centroids: np.ndarray, counts: np.ndarray) -> None:
        self.centroids.copy_(torch.from_numpy(np.asarray(centroids, np.float32)))
        self.seen.copy_(torch.from_numpy(np.asarray(counts) > 0))

    @torch.no_grad()
    def ema_update(self, labels: torch.Tensor, queries: torch.Tensor) -> None:
        """``c_l <- ema c_l + (1 - ema) x`` for each (label, query embedding) pair of a batch."""
        a = self.config.ema
        lab = labels.to(self.centroids.device)
        self.centroids[lab] = a * self.centroids[lab] + (1 - a) * queries.detach().float().to(self.centroids.device)

    def forward(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Prototypes ``z`` [B, D] (L2-normalised) of the labels ``labels`` [B] with embeddings ``u`` [B, D]."""
        labels = labels.to(self.free.device)
        bag = torch.stack([u.float(), self.free[self.cluster_of[labels]], self.centroids[labels]], dim=1)  # [B, 3, D]
        return F.normalize(self.combiner(bag).mean(dim=1), dim=-1)

    @torch.no_grad()
    def label_embeddings(self, u: np.ndarray, labels: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """What inference searches: ``z_l`` for labels seen in training, ``u_l`` for the others."""
        was_training = self.training
        self.eval()
        out = np.array(u, dtype=np.float32, copy=True)
        labels = np.asarray(labels)
        seen = self.seen.cpu().numpy()[labels]
        idx = np.flatnonzero(seen)
        dev = self.free.device
        for a in range(0, len(idx), batch_size):
            rows = idx[a:a + batch_size]
            z = self(torch.from_numpy(out[rows]).to(dev), torch.from_numpy(labels[rows]).to(dev))
            out[rows] = z.cpu().numpy()
        self.train(was_training)
        return out
