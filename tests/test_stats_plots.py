"""Notebook 01's plots: the image-coverage bars tick at whole image counts."""
import matplotlib

matplotlib.use("Agg")

import numpy as np

from vixml_lib.data.stats import plot_image_coverage


def test_image_coverage_ticks_are_the_image_counts_at_the_group_centres():
    import matplotlib.pyplot as plt

    maps = {"trn": np.array([[0, 1, -1], [-1, -1, -1], [2, 3, 4]]), "tst": np.array([[5, -1, -1]])}
    fig, ax = plt.subplots()
    plot_image_coverage(ax, maps)
    assert ax.get_xticks().tolist() == [0, 1, 2, 3]
    centres = sorted(p.get_x() + p.get_width() / 2 for p in ax.patches)  # 2 splits x 4 counts
    assert np.allclose(np.mean(np.reshape(centres, (4, 2)), axis=1), [0, 1, 2, 3])
    heights = {round(p.get_x() + p.get_width() / 2, 2): p.get_height() for p in ax.patches}
    assert np.isclose(heights[-0.2], 100 / 3) and np.isclose(heights[1.2], 100.0)  # trn: 1 of 3 has none; tst: 1 image
    plt.close(fig)
