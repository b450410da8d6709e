"""Probes of what image vectors keep: attribute tables, one vector per item, a linear probe
and nearest neighbours in a feature space (notebook 02; the plots are in
:mod:`vixml_lib.images.plots`)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["read_attributes", "item_features", "linear_probe", "nearest_neighbours", "neighbour_examples"]


def read_attributes(path: str | Path) -> dict[str, np.ndarray]:
    """A CSV with a header (e.g. the demo's ``<split>_attributes.csv``) as columns of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty attribute table")
    header, body = rows[0], rows[1:]
    return {name: np.array([r[i] for r in body]) for i, name in enumerate(header)}


def item_features(cache, items: np.ndarray | None = None, reduce: str = "first") -> tuple[np.ndarray, np.ndarray]:
    """One vector per item from an image feature cache: its first image (``reduce="first"``)
    or the mean of its images (``"mean"``). Returns ``(vectors, items_with_an_image)``."""
    items = np.arange(cache.n_items) if items is None else np.asarray(items)
    vec, mask = cache.read_batch(items)
    has = mask.any(axis=1)
    if reduce == "first":
        first = mask.argmax(axis=1)
        out = vec[np.arange(len(items)), first]
    elif reduce == "mean":
        out = (vec * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    else:
        raise ValueError(f"reduce must be 'first' or 'mean', not {reduce!r}")
    return out[has], items[has]


def linear_probe(X: np.ndarray, y: np.ndarray, test_frac: float = 0.3, ridge: float = 1.0, seed: int = 0) -> dict:
    """Accuracy of a ridge-regression classifier (one-vs-rest, closed form) on a held-out split.

    Features are standardised on the training part. Returns accuracy, the majority-class
    baseline on the same test part (what a probe that learnt nothing gets), and counts.
    """
    X = np.asarray(X, dtype=np.float64)
    classes, yi = np.unique(np.asarray(y), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("a probe needs at least two classes")
    perm = np.random.default_rng(seed).permutation(len(X))
    n_test = max(1, int(round(test_frac * len(X))))
    te, tr = perm[:n_test], perm[n_test:]
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
    Xtr = np.c_[(X[tr] - mu) / sd, np.ones(len(tr))]
    Xte = np.c_[(X[te] - mu) / sd, np.ones(len(te))]
    Ytr = np.eye(len(classes))[yi[tr]]
    W = np.linalg.solve(Xtr.T @ Xtr + ridge * np.eye(Xtr.shape[1]), Xtr.T @ Ytr)
    pred = (Xte @ W).argmax(1)
    majority = np.bincount(yi[tr], minlength=len(classes)).argmax()
    return {"accuracy": float(np.mean(pred == yi[te])), "majority_baseline": float(np.mean(yi[te] == majority)),
            "n_classes": int(len(classes)), "n_train": int(len(tr)), "n_test": int(len(te))}


def nearest_neighbours(X: np.ndarray, queries: np.ndarray, k: int = 5, exclude_self: bool = True) -> np.ndarray:
    """Indices of the ``k`` rows of ``X`` most cosine-similar to ``X[queries]``."""
    Xn = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-12)
    S = Xn[np.asarray(queries)] @ Xn.T
    if exclude_self:
        S[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-S, axis=1)[:, :k]


def neighbour_examples(cache, n_examples: int = 5, k: int = 5, seed: int = 0) -> np.ndarray:
    """Image indices (n, 1 + k) for a nearest-neighbour grid: per row a randomly picked valid
    image of ``cache`` (a :class:`~vixml_lib.images.cache.FeatureCache`), then its ``k``
    most cosine-similar valid images. ``n = min(n_examples, number of valid images)``."""
    valid = np.flatnonzero(cache.valid) if hasattr(cache, "valid") else np.arange(cache.count)
    vecs = cache.vectors_for_images(valid).astype(np.float32)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(valid), size=min(n_examples, len(valid)), replace=False)
    nn = nearest_neighbours(vecs, picks, k=k)
    return valid[np.concatenate([picks[:, None], nn], axis=1)]
