"""Tests for vixml_lib.images.probes: what image vectors keep."""
import numpy as np
import pytest

from vixml_lib.images.probes import (
    compare_probes,
    encode_images,
    first_image_ids,
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
    with pytest.raises(ValueError, match="one label per vector"):
        linear_probe(X, y[:10])


def test_linear_probe_chooses_the_ridge_on_held_out_training_rows():
    """About as many dimensions as training rows (as 1280-d features of ~2,000 demo labels),
    the signal spread thinly over all of them: the weakest ridge nearly interpolates the
    training rows and generalises badly (0.41-0.53 over seeds 0-4, chance 1/3); the chosen
    ridge is stronger and much better (0.72-0.80)."""
    rng = np.random.default_rng(1)
    n, d = 575, 400  # 402 training rows for 401 coefficients per class
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)) + 0.1 * rng.normal(size=(3, d))[y]
    weak = linear_probe(X, y, ridge=1.0)
    chosen = linear_probe(X, y)
    assert weak["ridge"] == 1.0 and chosen["ridge"] >= 100.0
    assert chosen["accuracy"] > weak["accuracy"] + 0.15, (weak, chosen)
    assert linear_probe(X, y, ridge=[100.0])["ridge"] == 100.0


def test_compare_probes_same_items_and_split_for_every_encoder():
    rng = np.random.default_rng(2)
    colour = rng.integers(0, 3, 400)
    shape = rng.integers(0, 2, 400)
    good = np.c_[np.eye(3)[colour] * 3, np.eye(2)[shape] * 3] + rng.normal(size=(400, 5))
    colour_only = np.c_[np.eye(3)[colour] * 3, np.zeros((400, 2))] + rng.normal(size=(400, 5))
    out = compare_probes({"good": good, "colour-only": colour_only}, {"colour": colour, "shape": shape})
    assert list(out) == ["good", "colour-only"] and list(out["good"]) == ["colour", "shape"]
    assert out["good"]["shape"]["accuracy"] > 0.9 and out["colour-only"]["shape"]["accuracy"] < 0.65
    assert out["good"]["colour"]["accuracy"] > 0.9 and out["colour-only"]["colour"]["accuracy"] > 0.9
    # the same held-out rows for both: same majority baseline
    assert out["good"]["shape"]["majority_baseline"] == out["colour-only"]["shape"]["majority_baseline"]
    with pytest.raises(ValueError, match="same items"):
        compare_probes({"a": good[:10]}, {"colour": colour})


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


class FakeMapCache(FakeCache):
    image_map = np.array([[7, 8], [-1, -1], [5, 9]])
    mask = np.array([[True, True], [False, False], [False, True]])  # item 2: its first slot failed


def test_first_image_ids_are_the_images_item_features_reads():
    ids, items = first_image_ids(FakeMapCache())
    assert ids.tolist() == [7, 9] and items.tolist() == [0, 2]
    ids, items = first_image_ids(FakeMapCache(), np.array([2, 1]))
    assert ids.tolist() == [9] and items.tolist() == [2]


class _Source:
    def load(self, j):
        return int(j)


class _Encoder:
    dim = 2

    def __call__(self, images):
        import torch

        return torch.tensor([[j, 2 * j] for j in images], dtype=torch.float32)


def test_encode_images_in_batches_keeps_the_order():
    out = encode_images(_Source(), _Encoder(), [5, 1, 3, 9, 0], batch_size=2)
    assert out.dtype == np.float32 and out.tolist() == [[5, 10], [1, 2], [3, 6], [9, 18], [0, 0]]


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
