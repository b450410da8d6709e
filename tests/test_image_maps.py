"""Tests for vixml_lib.images.maps: item -> image maps (plain int64, and the official pickled form)."""
from __future__ import annotations

import numpy as np
import pytest

from vixml_lib.errors import DataFormatError
from vixml_lib.images.maps import convert_object_map, image_counts, read_image_map


def _save(path, arr, allow_pickle=False):
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=allow_pickle)


def test_read_image_map_valid(tmp_path):
    m = np.array([[0, 1, -1], [-1, -1, -1], [2, 3, 4]], dtype=np.int32)
    p = tmp_path / "m.npy"
    _save(p, m)
    out = read_image_map(p, n_items=3, n_images=5)
    assert out.dtype == np.int64 and out.shape == (3, 3)
    assert np.array_equal(out, m)
    assert image_counts(out).tolist() == [2, 0, 3]
    # 1-D int arrays mean one image per item
    _save(p, np.array([0, -1, 1], dtype=np.int64))
    assert read_image_map(p).shape == (3, 1)
    assert image_counts(np.array([3, -1])).tolist() == [1, 0]


def test_read_image_map_pickled_object_array(tmp_path):
    obj = np.empty(3, dtype=object)
    obj[0], obj[1], obj[2] = [0, 1], -1, np.array([2, 3, 4, 5])
    p = tmp_path / "official_map.npy"
    _save(p, obj, allow_pickle=True)
    with pytest.raises(DataFormatError) as e:
        read_image_map(p)
    msg = str(e.value)
    assert "pickled" in msg and "convert_object_map" in msg and str(p) in msg
    dst = tmp_path / "plain_map.npy"
    conv = convert_object_map(p, dst, max_images=3)
    assert conv.tolist() == [[0, 1, -1], [-1, -1, -1], [2, 3, 4]]
    assert np.array_equal(read_image_map(dst, n_items=3, n_images=6), conv)


def test_read_image_map_bad_values_and_shapes(tmp_path):
    p = tmp_path / "m.npy"
    _save(p, np.array([[0, -1], [1, 2], [7, -1]], dtype=np.int64))
    with pytest.raises(DataFormatError) as e:
        read_image_map(p, n_images=5)
    msg = str(e.value)
    assert "item row 2" in msg and "7" in msg and "5 images" in msg
    assert read_image_map(p, n_images=8).shape == (3, 2)  # fine with enough images
    _save(p, np.array([[0, -2]], dtype=np.int64))
    with pytest.raises(DataFormatError, match="item row 0.*-2"):
        read_image_map(p)
    _save(p, np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(DataFormatError, match="4 rows but there are 5 items"):
        read_image_map(p, n_items=5)
    _save(p, np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(DataFormatError, match="integers"):
        read_image_map(p)
    _save(p, np.zeros((2, 3, 1), dtype=np.int64))
    with pytest.raises(DataFormatError, match="shape"):
        read_image_map(p)
    p.write_bytes(b"garbage, not npy")
    with pytest.raises(DataFormatError):
        read_image_map(p)
    with pytest.raises(FileNotFoundError):
        read_image_map(tmp_path / "nope.npy")


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"\x93NUMPY\x01\x00\x06\x00\x00\x00\x00'''", "not a readable .npy array"),  # a damaged header
    (b"PK\x03\x04garbage", "not a readable .npy array"),  # a broken zip (.npz)
])
def test_damaged_map_files_name_the_file(tmp_path, data, message):
    p = tmp_path / "trn_imgs_384_3_map.npy"
    p.write_bytes(data)
    with pytest.raises(DataFormatError) as e:
        read_image_map(p)
    assert str(e.value).startswith(str(p)) and message in str(e.value)
    with pytest.raises(DataFormatError, match="is a folder"):
        read_image_map(tmp_path)
