"""The data layer every consumer of a prepared dataset shares: what the model reads for
each split (title tokens, image features), the label matrices, filter pairs and
propensities, and the seeded sub-problem rule (a label sample, a test-query sample).

Training, evaluation, the attention-sink analysis and retrieval inspection read their
data through here, so a query row means the same thing everywhere.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import DataFormatError
from ..metrics import inverse_propensity
from .prepare import load_dataset
from .tokens import load_tokens, tokenize_dataset

if TYPE_CHECKING:
    from ..models import DualEncoder

log = logging.getLogger(__name__)


@dataclass
class SplitInputs:
    """What the model reads for one split: title tokens and (optional) image features."""

    ids: np.ndarray
    lens: np.ndarray
    features: Any = None  # a FeatureCache, or None for text-only runs
    items: np.ndarray | None = None  # a subset of the split's items, or None for all

    def __len__(self) -> int:
        return len(self.lens) if self.items is None else len(self.items)

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows) if self.items is None else self.items[np.asarray(rows)]
        return np.asarray(self.lens[rows])

    def batch(self, rows: np.ndarray) -> dict[str, Any]:
        rows = np.asarray(rows) if self.items is None else self.items[np.asarray(rows)]
        out = {"title_ids": torch.from_numpy(np.asarray(self.ids[rows], dtype=np.int64)),
               "title_lens": torch.from_numpy(np.asarray(self.lens[rows], dtype=np.int64))}
        if self.features is not None:
            vec, mask = self.features.read_batch(rows)
            out["image_vectors"] = torch.from_numpy(vec)
            out["image_mask"] = torch.from_numpy(mask)
        return out


@dataclass
class TrainingData:
    splits: dict[str, SplitInputs]
    Y_trn: sp.csr_matrix
    Y_tst: sp.csr_matrix
    filter_tst: np.ndarray
    inv_psp: np.ndarray
    items_tst: np.ndarray  # dataset row of each evaluated test query
    items_lbl: np.ndarray  # dataset row of each label of the problem

    @property
    def n_labels(self) -> int:
        return self.Y_trn.shape[1]


def open_image_features(data_dir: Path, encoder: str, split: str):
    from ..images.cache import FeatureCache, feature_cache_dir

    folder = feature_cache_dir(data_dir, encoder, split)
    if not folder.exists():
        raise FileNotFoundError(
            f"{folder}: no image features for {split!r} with encoder {encoder!r}; "
            "run notebook 02_image_caching (or vixml_lib.images.cache_build.build_feature_cache) first"
        )
    return FeatureCache.open(folder)


def sample_subproblem(Y_tst: sp.csr_matrix, seed: int, max_labels: int | None = None,
                      max_queries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The seeded rule behind :func:`subproblem`: ``(items_lbl, items_tst)``, sorted dataset rows."""
    n_tst, n_lbl = Y_tst.shape
    items_lbl = np.arange(n_lbl)
    items_tst = np.arange(n_tst)
    if max_labels is not None and max_labels < 1:
        raise ValueError(f"max_labels must be >= 1 or None, got {max_labels}")
    if max_labels and max_labels < n_lbl:
        items_lbl = np.sort(np.random.default_rng([seed, 1]).choice(n_lbl, max_labels, replace=False))
        items_tst = np.flatnonzero(np.diff(Y_tst[:, items_lbl].tocsr().indptr) > 0)
    if max_queries and max_queries < len(items_tst):
        items_tst = np.sort(np.random.default_rng(seed).choice(items_tst, max_queries, replace=False))
    return items_lbl, items_tst


def subproblem(Y_trn: sp.csr_matrix, Y_tst: sp.csr_matrix, filter_tst: np.ndarray, seed: int,
               max_labels: int | None = None, max_queries: int | None = None):
    """Seeded label and test-query subsets: ``(items_lbl, items_tst, Y_trn, Y_tst, filter_tst)``
    with the matrices restricted to those columns / rows and the filter pairs renumbered.

    ``max_labels`` keeps a uniform sample of labels and only the test queries that have one
    of them; ``max_queries`` then samples the evaluated test queries.
    """
    n_tst, n_lbl = Y_tst.shape
    items_lbl, items_tst = sample_subproblem(Y_tst, seed, max_labels, max_queries)
    if len(items_lbl) < n_lbl:
        Y_trn, Y_tst = Y_trn[:, items_lbl].tocsr(), Y_tst[:, items_lbl].tocsr()
    if len(items_tst) < n_tst:
        Y_tst = Y_tst[items_tst]
    return items_lbl, items_tst, Y_trn, Y_tst, renumber_pairs(filter_tst, items_tst, items_lbl, n_tst, n_lbl)


def renumber_pairs(pairs, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """``(row, col)`` pairs [P, 2] renumbered into the sub-matrix of ``rows`` x ``cols`` (old
    indices), pairs outside it dropped."""
    new_row = np.full(n_rows, -1)
    new_row[rows] = np.arange(len(rows))
    new_col = np.full(n_cols, -1)
    new_col[cols] = np.arange(len(cols))
    f = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    f = np.stack([new_row[f[:, 0]], new_col[f[:, 1]]], axis=1)
    return f[(f >= 0).all(axis=1)]


def query_subset(data: TrainingData, positions: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(Y_tst, filter_tst)`` of ``data`` restricted to the evaluated test queries at ``positions``."""
    n_tst, n_lbl = data.Y_tst.shape
    return data.Y_tst[positions], renumber_pairs(data.filter_tst, positions, np.arange(n_lbl), n_tst, n_lbl)


@dataclass
class EvaluationLabels:
    """What scoring a run needs: its sub-problem's test labels, filter pairs and propensities."""

    Y_trn: sp.csr_matrix
    Y_tst: sp.csr_matrix  # (evaluated test queries, labels of the problem)
    filter_tst: np.ndarray
    inv_psp: np.ndarray
    items_tst: np.ndarray  # dataset row of each evaluated test query
    items_lbl: np.ndarray  # dataset row of each label of the problem


def load_labels(config) -> EvaluationLabels:
    """The label matrices of ``config.data_dir`` restricted to the sub-problem ``config`` asks for
    (``max_labels``, ``eval_max_queries``, ``seed``), with the propensities (``A``, ``B``)."""
    ds = load_dataset(Path(config.data_dir), encoding=config.encoding, images=False)
    items_lbl, items_tst, Y_trn, Y_tst, filter_tst = subproblem(
        ds.Y["trn"], ds.Y["tst"], ds.filters["tst"], config.seed, config.max_labels, config.eval_max_queries)
    inv_psp = inverse_propensity(ds.Y["trn"], A=config.A, B=config.B)[items_lbl]
    return EvaluationLabels(Y_trn, Y_tst, filter_tst, inv_psp, items_tst, items_lbl)


def load_training_data(config, model: DualEncoder) -> TrainingData:
    """Tokens (cached), image features and labels of ``config.data_dir`` for ``model``,
    restricted to the sub-problem ``config`` asks for (``max_labels``, ``eval_max_queries``).

    ``config`` is a :class:`~vixml_lib.training.TrainConfig` (or anything with its data fields)."""
    data_dir = Path(config.data_dir)
    labels = load_labels(config)
    backbone = model.config.backbone
    tokenize_dataset(data_dir, backbone, max_len=config.max_len, encoding=config.encoding, tokenizer=model.tokenizer)
    splits = {}
    for s in ("trn", "tst", "lbl"):
        tok = load_tokens(data_dir, backbone, config.max_len, s)
        feats = open_image_features(data_dir, config.vision_encoder, s) if model.config.use_images else None
        if feats is not None and feats.n_items != len(tok):
            raise DataFormatError(feats.folder, f"image features of {feats.n_items} items, but the {s} split of "
                                                f"{data_dir} has {len(tok)} (rebuild the cache with notebook 02)")
        splits[s] = SplitInputs(tok.ids, tok.lengths, feats)
    items_tst, items_lbl = labels.items_tst, labels.items_lbl
    if len(items_tst) < len(splits["tst"]):
        splits["tst"].items = items_tst
    if len(items_lbl) < len(splits["lbl"]):
        splits["lbl"].items = items_lbl
        log.info("sub-problem: %d of %d labels, %d train queries with one of them, %d test queries",
                 len(items_lbl), len(splits["lbl"].lens), int((np.diff(labels.Y_trn.indptr) > 0).sum()),
                 len(items_tst))
    return TrainingData(splits, labels.Y_trn, labels.Y_tst, labels.filter_tst, labels.inv_psp, items_tst, items_lbl)
