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


def plot_probe(results: Mapping[str, Mapping[str, Mapping[str, float]]]):
    """Grouped bars: linear-probe accuracy per attribute, one bar per encoder, and the
    majority-class baseline as a black line over each group (``{encoder: {attribute:
    linear_probe(...) result}}``, from :func:`~vixml_lib.images.probes.compare_probes`).
    The bars are labelled with the accuracy in %."""
    import matplotlib.pyplot as plt

    encoders = list(results)
    attributes = list(next(iter(results.values()))) if encoders else []
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + 0.9 * len(attributes) * max(1, len(encoders))), 3.6))
    x = np.arange(len(attributes))
    width = 0.8 / max(1, len(encoders))
    for i, enc in enumerate(encoders):
        acc = [100 * results[enc][a]["accuracy"] for a in attributes]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), acc, width=width, label=enc)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    for j, a in enumerate(attributes):
        base = 100 * results[encoders[0]][a]["majority_baseline"]
        ax.hlines(base, j - 0.45, j + 0.45, colors="black", linewidth=1.5, label="majority class" if j == 0 else None)
    ax.set_xticks(x, attributes)
    ax.set(ylabel="held-out accuracy (%)", ylim=(0, 105), title="What the image vectors keep (linear probe)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
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
