"""Probes of what image vectors keep: attribute tables, one vector per item, a linear probe,
the same probe for several encoders side by side, and nearest neighbours in a feature
space (notebook 02; the plots are in :mod:`vixml_lib.images.plots`)."""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["read_attributes", "first_image_ids", "item_features", "encode_images", "linear_probe", "compare_probes",
           "nearest_neighbours", "neighbour_examples", "RIDGES"]

#: ridge strengths a probe chooses from (on standardised features), by held-out accuracy
RIDGES = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def read_attributes(path: str | Path) -> dict[str, np.ndarray]:
    """A CSV with a header (e.g. the demo's ``<split>_attributes.csv``) as columns of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty attribute table")
    header, body = rows[0], rows[1:]
    return {name: np.array([r[i] for r in body]) for i, name in enumerate(header)}


def first_image_ids(cache, items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(image index of each item's first usable image, the items that have one)`` in a
    feature cache (its ``image_map`` and ``mask``): the images :func:`item_features` reads."""
    items = np.arange(cache.n_items) if items is None else np.asarray(items)
    rows, mask = np.asarray(cache.image_map)[items], np.asarray(cache.mask)[items]
    has = mask.any(axis=1)
    return rows[np.arange(len(items)), mask.argmax(axis=1)][has], items[has]


def encode_images(source, encoder, image_ids: Sequence[int], batch_size: int = 64) -> np.ndarray:
    """Vectors (n, dim), float32, of images ``image_ids`` of an image source (``load(j)``),
    encoded with ``encoder`` (a :class:`~vixml_lib.images.encoder_base.VisionEncoder`) in
    batches, without a cache: for probing another encoder on a few thousand images."""
    ids = np.asarray(image_ids, dtype=np.int64)
    out = np.zeros((len(ids), encoder.dim), dtype=np.float32)
    for s in range(0, len(ids), batch_size):
        out[s:s + batch_size] = encoder([source.load(int(j)) for j in ids[s:s + batch_size]]).numpy()
    return out


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


def _ridge_fit(X: np.ndarray, yi: np.ndarray, n_classes: int, tr: np.ndarray, ridges) -> list:
    """One-vs-rest ridge classifiers ``W = (Z'Z + lam I)^-1 Z'Y`` on rows ``tr``, for each
    ``lam``; ``Z`` = features standardised on ``tr``, plus a bias column. Returns
    ``[(lam, predict)]`` with ``predict(rows) -> class index``."""
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6

    def z(rows):
        return np.c_[(X[rows] - mu) / sd, np.ones(len(rows))]

    Z = z(tr)
    G, ZY = Z.T @ Z, Z.T @ np.eye(n_classes)[yi[tr]]
    fits = []
    for lam in ridges:
        W = np.linalg.solve(G + lam * np.eye(G.shape[0]), ZY)
        fits.append((float(lam), lambda rows, W=W: (z(rows) @ W).argmax(1)))
    return fits


def linear_probe(X: np.ndarray, y: np.ndarray, test_frac: float = 0.3, ridge: float | Sequence[float] = RIDGES,
                 seed: int = 0) -> dict:
    """Accuracy of a ridge-regression classifier (one-vs-rest, closed form) on a held-out split.

    Features are standardised on the training part. ``ridge``: one strength, or several
    (default :data:`RIDGES`) of which the one with the best accuracy on a validation
    quarter of the training part is refitted on all of it -- so that encoders with more
    dimensions than training items (1280-d vs ~2,000 demo labels) are not judged by an
    overfitted probe. Returns accuracy, the majority-class baseline on the same test part
    (what a probe that learnt nothing gets), the ridge used, and counts.
    """
    X = np.asarray(X, dtype=np.float64)
    classes, yi = np.unique(np.asarray(y), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("a probe needs at least two classes")
    if len(X) != len(yi):
        raise ValueError(f"a probe needs one label per vector: {len(X)} vectors, {len(yi)} labels")
    perm = np.random.default_rng(seed).permutation(len(X))
    n_test = max(1, int(round(test_frac * len(X))))
    te, tr = perm[:n_test], perm[n_test:]
    ridges = [float(ridge)] if np.isscalar(ridge) else [float(r) for r in ridge]
    lam = ridges[0]
    if len(ridges) > 1:  # choose on a validation quarter of the training part
        n_val = max(1, len(tr) // 4)
        val, fit = tr[:n_val], tr[n_val:]
        scores = [np.mean(predict(val) == yi[val]) for _, predict in _ridge_fit(X, yi, len(classes), fit, ridges)]
        lam = ridges[int(np.argmax(scores))]
    (_, predict), = _ridge_fit(X, yi, len(classes), tr, [lam])
    majority = np.bincount(yi[tr], minlength=len(classes)).argmax()
    return {"accuracy": float(np.mean(predict(te) == yi[te])), "majority_baseline": float(np.mean(yi[te] == majority)),
            "ridge": lam, "n_classes": int(len(classes)), "n_train": int(len(tr)), "n_test": int(len(te))}


def compare_probes(features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], seed: int = 0,
                   **probe_kw) -> dict[str, dict[str, dict]]:
    """The same :func:`linear_probe` (same split, same items) for each encoder and attribute.

    ``features``: ``{encoder: (n, dim) vectors}`` of the same n items (e.g. the first image
    of each); ``labels``: ``{attribute: (n,) values}``. Returns
    ``{encoder: {attribute: linear_probe result}}`` (for :func:`~vixml_lib.images.plots.plot_probe`).
    """
    n = {name: len(X) for name, X in features.items()} | {a: len(v) for a, v in labels.items()}
    if len(set(n.values())) != 1:
        raise ValueError(f"features and labels must describe the same items; lengths: {n}")
    return {name: {a: linear_probe(X, v, seed=seed, **probe_kw) for a, v in labels.items()}
            for name, X in features.items()}


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
