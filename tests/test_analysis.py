import numpy as np
import pytest

from vixml_lib.analysis import item_features, linear_probe, nearest_neighbours, read_attributes


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
