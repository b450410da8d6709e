"""Dataset statistics and the plots of the data-preparation notebook."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .prepare import XMCDataset


def label_frequencies(Y: sp.csr_matrix) -> np.ndarray:
    """Number of training rows per label (column counts of stored entries)."""
    return np.bincount(Y.indices, minlength=Y.shape[1])


def labels_per_row(Y: sp.csr_matrix) -> np.ndarray:
    return np.diff(Y.indptr)


def image_coverage(image_map: np.ndarray) -> np.ndarray:
    """counts[j] = number of items with exactly j images (j = 0..max_images)."""
    from ..images.maps import image_counts

    m = np.asarray(image_map)
    return np.bincount(image_counts(m), minlength=(m.shape[1] if m.ndim == 2 else 1) + 1)


def dataset_stats(ds: XMCDataset) -> dict:
    """Numbers worth knowing before training (all plain Python types, JSON-ready)."""
    freq = label_frequencies(ds.Y["trn"])
    stats = ds.summary()
    for s in ("trn", "tst"):
        lpr = labels_per_row(ds.Y[s])
        stats[f"{s}_labels_per_query_mean"] = float(lpr.mean())
        stats[f"{s}_queries_without_labels"] = int((lpr == 0).sum())
    stats.update(
        train_label_freq_max=int(freq.max()),
        train_label_freq_median=float(np.median(freq)),
        labels_unseen_in_train=int((freq == 0).sum()),
        labels_seen_at_most_5_times_pct=float(100 * np.mean(freq <= 5)),
    )
    for s in ("trn", "tst", "lbl"):
        words = np.array([len(t.split()) for t in ds.texts[s]])
        stats[f"{s}_title_words_mean"] = float(words.mean())
        if s in ds.image_maps:
            cov = image_coverage(ds.image_maps[s])
            stats[f"{s}_items_with_images_pct"] = float(100 * cov[1:].sum() / cov.sum())
    return stats


def plot_label_frequency(ax, Y_trn: sp.csr_matrix) -> None:
    """Long tail: label frequency against rank, log-log."""
    freq = np.sort(label_frequencies(Y_trn))[::-1]
    freq = freq[freq > 0]
    ax.loglog(np.arange(1, len(freq) + 1), freq, lw=1.5)
    ax.set(xlabel="label rank", ylabel="training queries", title="Label frequency (train)")
    ax.grid(True, which="both", alpha=0.3)


def plot_labels_per_query(ax, Ys: dict[str, sp.csr_matrix]) -> None:
    top = max(int(labels_per_row(Y).max()) for Y in Ys.values())
    bins = np.arange(0, top + 2) - 0.5
    for name, Y in Ys.items():
        ax.hist(labels_per_row(Y), bins=bins, alpha=0.6, label=name, density=True)
    ax.set(xlabel="labels per query", ylabel="share of queries", title="Labels per query")
    ax.legend()


def plot_title_lengths(ax, lengths: dict[str, np.ndarray], unit: str = "words", max_len: int | None = None) -> None:
    top = max(int(v.max()) for v in lengths.values())
    bins = np.arange(0, top + 2) - 0.5
    for name, v in lengths.items():
        ax.hist(v, bins=bins, alpha=0.5, label=name, density=True)
    if max_len:
        ax.axvline(max_len, color="k", ls="--", lw=1, label=f"max length {max_len}")
    ax.set(xlabel=f"title length ({unit})", ylabel="share", title=f"Title length ({unit})")
    ax.legend()


def plot_image_coverage(ax, maps: dict[str, np.ndarray]) -> None:
    """Share of items with 0, 1, 2, ... images, one bar per split, grouped per image count
    (one tick per count, at the group's centre)."""
    width = 0.8 / max(len(maps), 1)
    top = 0
    for i, (name, m) in enumerate(maps.items()):
        cov = image_coverage(m)
        top = max(top, len(cov))
        ax.bar(np.arange(len(cov)) + (i - (len(maps) - 1) / 2) * width, 100 * cov / cov.sum(), width=width, label=name)
    ax.set_xticks(np.arange(top))
    ax.set(xlabel="images per item", ylabel="% of items", title="Image coverage")
    ax.legend()


def plot_samples(fig, ds: XMCDataset, bins: dict, rows, split: str = "tst", max_labels: int = 3):
    """A grid: each row shows a query (title + first image) and some of its true labels."""
    import textwrap

    rows = list(rows)
    axes = fig.subplots(len(rows), 1 + max_labels, squeeze=False)
    for r, q in enumerate(rows):
        items = [(split, q, "query")] + [
            ("lbl", int(l), "label") for l in ds.Y[split][q].indices[:max_labels]
        ]
        for c in range(1 + max_labels):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(items):
                ax.axis("off")
                continue
            s, i, kind = items[c]
            m = ds.image_maps.get(s)
            line = int(m[i, 0]) if m is not None and m[i, 0] >= 0 else -1
            if line >= 0 and s in bins:
                ax.imshow(bins[s].image(line))
            else:
                ax.imshow(np.full((8, 8, 3), 230, dtype=np.uint8))
                ax.text(3.5, 3.5, "no image", ha="center", va="center", fontsize=7)
            title = textwrap.fill(f"{kind} {i}: {ds.texts[s][i]}", 28)
            ax.set_title(title, fontsize=7, color="tab:blue" if kind == "query" else "k")
    return axes
