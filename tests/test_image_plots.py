"""Tests for vixml_lib.images.plots: notebook 02's figures."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from vixml_lib.images.plots import plot_coverage, plot_neighbours, plot_probe  # noqa: E402


class _Cache:
    def __init__(self, image_map, mask):
        self.image_map = np.asarray(image_map, dtype=np.int64)
        self.mask = np.asarray(mask, dtype=bool)


def _heights(ax):
    return [round(p.get_height(), 6) for p in ax.patches]


def test_plot_coverage_counts_usable_slots_per_split():
    trn = _Cache([[0, 1, -1], [2, -1, -1], [-1, -1, -1], [3, 4, 5]],
                 [[True, False, False], [True, False, False], [False, False, False], [True, True, True]])
    tst = _Cache([[0, -1, -1], [1, 2, -1]], [[True, False, False], [True, True, False]])
    fig = plot_coverage({"trn": trn, "tst": tst})
    ax = fig.axes[0]
    # trn: usable images per item 1, 1, 0, 3 (the failed slot of item 0 is not counted)
    assert _heights(ax) == [25.0, 50.0, 0.0, 25.0, 0.0, 50.0, 50.0, 0.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["trn", "tst"]
    assert ax.get_xlabel() == "usable images per item"
    plt.close(fig)


def test_plot_probe_groups_encoders_per_attribute_with_the_baseline():
    probe = {"pretrained": {"colour": {"accuracy": 0.9, "majority_baseline": 0.2},
                            "type": {"accuracy": 0.95, "majority_baseline": 0.1}},
             "random": {"colour": {"accuracy": 0.8, "majority_baseline": 0.2},
                        "type": {"accuracy": 0.3, "majority_baseline": 0.1}}}
    fig = plot_probe(probe)
    ax = fig.axes[0]
    assert _heights(ax) == [90.0, 95.0, 80.0, 30.0]  # encoder by encoder, attributes in order
    assert [t.get_text() for t in ax.get_xticklabels()] == ["colour", "type"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["majority class", "pretrained", "random"]
    baselines = sorted(seg[0][1] for seg in ax.collections[0].get_segments() + ax.collections[1].get_segments())
    assert baselines == [10.0, 20.0]
    plt.close(fig)


class _Images:
    def __init__(self):
        self.asked = []

    def image(self, j):
        self.asked.append(j)
        return Image.new("RGB", (8, 8), (j * 20 % 256, 0, 0))


def test_plot_neighbours_draws_the_grid_row_by_row():
    images = _Images()
    grid = np.array([[3, 1, 2], [0, 4, 5]])
    fig = plot_neighbours(images, grid)
    assert len(fig.axes) == 6 and images.asked == [3, 1, 2, 0, 4, 5]
    assert fig._suptitle.get_text() == "image → 2 nearest images (cosine)"
    assert fig.axes[0].get_ylabel() == "query" and fig.axes[3].get_ylabel() == "query"
    assert tuple(fig.get_size_inches()) == (4.5, 3.2)
    plt.close(fig)
