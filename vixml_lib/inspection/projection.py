"""2-D maps of a run's embeddings.

* :func:`project_embeddings`: a seeded sample of label and query embeddings projected to
  2-D (:class:`Projection`; PCA by numpy SVD; UMAP / t-SNE only when ``umap`` / ``sklearn``
  are installed).
* :func:`point_attribute`: an attribute column of the dataset per projected point (to colour
  the map by).

The figures are drawn by :mod:`vixml_lib.inspection.plots`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataFormatError
from .loading import InspectionRun


@dataclass
class Projection:
    """2-D coordinates of a sample of label and query embeddings."""

    xy: np.ndarray  # (n, 2)
    split: np.ndarray  # (n,) "lbl" / "tst" per point
    items: np.ndarray  # (n,) dataset rows per point
    titles: list[str]
    method: str
    explained: np.ndarray | None = None  # (2,) PCA: variance ratio of the two axes
    data_dir: Path | None = None


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it, BLAS keeps its thread count
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(xy (n, 2), explained (2,))`` of ``X`` (n, d), axes signed deterministically."""
    Xc = (X - X.mean(0, keepdims=True)).astype(np.float64)
    with _one_blas_thread():  # small LAPACK calls: threads only add contention on a busy CPU
        if Xc.shape[0] > Xc.shape[1]:
            # SVD of the small d x d covariance: the same axes as the n x d SVD, much cheaper
            _, var, vt = np.linalg.svd(Xc.T @ Xc)
        else:
            _, s, vt = np.linalg.svd(Xc, full_matrices=False)
            var = s ** 2
    comps = vt[:2]
    # sign convention: the largest loading of each axis is positive (SVD signs are arbitrary)
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    xy = Xc @ comps.T
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return xy.astype(np.float32), (var[:2] / max(var.sum(), 1e-30))


def _sample_points(run: InspectionRun, max_points: int, seed: int,
                   include: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X (n, d), split (n,), items (n,))``: at most ``max_points`` embeddings of the
    ``include``d splits, split between them in proportion to their numbers (seeded)."""
    embs = {"lbl": (run.emb_lbl, run.items_lbl), "tst": (run.emb_tst, run.items_tst)}
    unknown = set(include) - set(embs)
    if unknown or not include:
        raise ValueError(f"include must name lbl and/or tst, got {list(include)}")
    total = sum(len(embs[s][0]) for s in include)
    rng = np.random.default_rng(seed)
    X, split, items = [], [], []
    for j, s in enumerate(include):
        E, it = embs[s]
        if total <= max_points:
            take = np.arange(len(E))
        else:
            last = j == len(include) - 1
            quota = (max_points - sum(len(x) for x in X)) if last else round(max_points * len(E) / total)
            take = np.sort(rng.choice(len(E), min(len(E), quota), replace=False))
        X.append(E[take])
        split += [s] * len(take)
        items.append(it[take])
    return np.concatenate(X).astype(np.float32), np.array(split), np.concatenate(items)


def _fit_2d(X: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(xy (n, 2), explained or None)`` by ``method`` (pca, umap or tsne)."""
    if method == "pca":
        return _pca_2d(X)
    if method == "umap":
        try:
            import umap  # type: ignore
        except ImportError:
            raise ImportError("method='umap' needs the umap-learn package (not a workbench dependency); "
                              "use 'pca'") from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(X).astype(np.float32), None
    try:
        from sklearn.manifold import TSNE  # type: ignore
    except ImportError:
        raise ImportError("method='tsne' needs scikit-learn (not a workbench dependency); use 'pca'") from None
    return TSNE(n_components=2, random_state=seed, init="pca").fit_transform(X).astype(np.float32), None


def project_embeddings(run: InspectionRun, max_points: int = 3000, seed: int = 0, method: str = "pca",
                       include: Sequence[str] = ("lbl", "tst")) -> Projection:
    """Project a seeded sample (at most ``max_points``, split between labels and queries in
    proportion to their numbers) of the run's embeddings to 2-D. ``method``: ``pca`` (numpy
    SVD; deterministic), ``umap`` (needs ``umap-learn``) or ``tsne`` (needs scikit-learn)."""
    method = method.lower()
    if method not in ("pca", "umap", "tsne"):
        raise ValueError(f"method must be pca, umap or tsne, not {method!r}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    X, split, items = _sample_points(run, max_points, seed, include)
    xy, explained = _fit_2d(X, method, seed)
    titles = [run.title(s, i) for s, i in zip(split, items)]
    return Projection(xy, split, items, titles, method, explained, run.data.path)


def point_attribute(proj: Projection, column: str, data_dir: str | Path | None = None) -> np.ndarray:
    """The value of attribute ``column`` for every projected point, from
    ``<data_dir>/<split>_attributes.csv`` (the demo datasets have them). A missing file or
    column is a clear error (the message lists the columns there are)."""
    from ..images.probes import read_attributes

    data_dir = Path(data_dir or proj.data_dir)
    out = np.empty(len(proj.items), dtype=object)
    for s in np.unique(proj.split):
        path = data_dir / f"{s}_attributes.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no attribute table to colour by {column!r}")
        attrs = read_attributes(path)
        if column not in attrs:
            raise KeyError(f"{path}: no column {column!r}; columns: {', '.join(attrs)}")
        vals = attrs[column]
        sel = proj.split == s
        if proj.items[sel].max(initial=-1) >= len(vals):
            raise DataFormatError(path, f"{len(vals)} rows, fewer than the {s} items")
        out[sel] = vals[proj.items[sel]]
    return out.astype(str)
