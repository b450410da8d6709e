"""Figures of notebook 02 (image caching): coverage, probe accuracies, nearest-neighbour grid.

Each function draws one matplotlib figure and returns it; the notebook saves it with
:func:`vixml_lib.report.save_figure` and shows it. The numbers come from
:mod:`vixml_lib.images.probes` and :class:`~vixml_lib.images.cache.FeatureCache`.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["plot_coverage", "plot_probe", "plot_neighbours"]


def plot_coverage(caches: Mapping[str, object]):
    """Bars: % of items with 0, 1, ... usable images, one colour per split (``{split: FeatureCache}``).

    A slot counts when the cache's mask says so, so failed images count as missing."""
    import matplotlib.pyplot as plt

    from ..data.stats import plot_image_coverage

    fig, ax = plt.subplots(figsize=(6, 3.6))
    # usable slots only: (n_items, max_images), -1 where there is no image or it failed
    plot_image_coverage(ax, {split: np.where(cache.mask, cache.image_map, -1) for split, cache in caches.items()})
    ax.set(xlabel="usable images per item", title="Image coverage in the cache")
    return fig


def plot_probe(probe: Mapping[str, Mapping[str, float]], encoder_name: str):
    """Bars: linear-probe accuracy next to the majority-class baseline, per attribute
    (``{attribute: linear_probe(...) result}``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    names = list(probe)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [100 * probe[n]["accuracy"] for n in names], width=0.4, label="linear probe")
    ax.bar(x + 0.2, [100 * probe[n]["majority_baseline"] for n in names], width=0.4, label="majority class")
    ax.set_xticks(x, names)
    ax.set(ylabel="accuracy (%)", title=f"What {encoder_name} vectors separate (labels)")
    ax.legend()
    return fig


def plot_neighbours(images, grid: np.ndarray):
    """Image grid: row ``r`` shows image ``grid[r, 0]`` (the query) then its neighbours
    ``grid[r, 1:]``. ``images``: anything with ``image(j) -> PIL image`` (an
    :class:`~vixml_lib.images.store.ImageBin`); ``grid``: image indices (n, 1 + k), e.g. from
    :func:`vixml_lib.images.probes.neighbour_examples`."""
    import matplotlib.pyplot as plt

    grid = np.asarray(grid)
    n_rows, n_cols = grid.shape
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.5 * n_cols, 1.6 * n_rows), squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            axes[r, c].imshow(images.image(int(grid[r, c])))
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel("query", fontsize=8)
    fig.suptitle(f"image → {n_cols - 1} nearest images (cosine)")
    return fig
