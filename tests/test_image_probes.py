"""Tests for vixml_lib.images.probes: what image vectors keep."""
import numpy as np
import pytest

from vixml_lib.images.probes import (
    item_features,
    linear_probe,
    nearest_neighbours,
    neighbour_examples,
    read_attributes,
)


def test_linear_probe_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    centres = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    X = centres[y] + rng.normal(size=(600, 3))
    good = linear_probe(X, y)
    assert good["accuracy"] > 0.95 and good["n_classes"] == 3 and good["n_test"] == 180
    noise = linear_probe(rng.normal(size=(600, 3)), y)
    assert noise["accuracy"] < 0.5  # chance is 1/3
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(X, np.zeros(600))


def test_nearest_neighbours_by_cosine_without_self():
    X = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    assert nearest_neighbours(X, np.array([0, 2]), k=1).tolist() == [[1], [3]]


class FakeCache:
    n_items = 3

    def read_batch(self, items):
        vec = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)[items]
        mask = np.array([[True, True], [False, False], [False, True]])[items]
        return vec, mask


def test_item_features_first_and_mean_skip_items_without_images():
    v, items = item_features(FakeCache())
    assert items.tolist() == [0, 2] and v.tolist() == [[0, 1], [10, 11]]
    v, _ = item_features(FakeCache(), reduce="mean")
    assert v.tolist() == [[1, 2], [10, 11]]


def test_read_attributes(tmp_path):
    (tmp_path / "a.csv").write_text("row,colour\n0,red\n1,blue\n")
    assert read_attributes(tmp_path / "a.csv")["colour"].tolist() == ["red", "blue"]


class FakeImageCache:
    """Images 0..5; image 2 failed. Images 0/1 and 3/4 point the same way."""

    def __init__(self):
        self.count = 6
        self.valid = np.array([True, True, False, True, True, True])
        self.vec = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1], [0, 1, 0], [0.1, 0.9, 0], [0.5, 0.5, 0.7]],
                            dtype=np.float32)

    def vectors_for_images(self, idx):
        return self.vec[np.asarray(idx)]


def test_neighbour_examples_rows_are_query_then_neighbours_among_valid_images():
    grid = neighbour_examples(FakeImageCache(), n_examples=10, k=1, seed=0)
    assert grid.shape == (5, 2)  # at most the number of valid images
    assert 2 not in grid  # the failed image is never shown
    pairs = {int(q): int(n) for q, n in grid}
    assert sorted(pairs) == [0, 1, 3, 4, 5]
    assert pairs[0] == 1 and pairs[1] == 0 and pairs[3] == 4 and pairs[4] == 3
    assert np.array_equal(grid, neighbour_examples(FakeImageCache(), n_examples=10, k=1, seed=0))  # seeded
