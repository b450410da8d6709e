"""Tests for vixml_lib.images: the authors' .bin + map image layout."""
from __future__ import annotations

import base64
import pickle

import numpy as np
import pytest
from PIL import Image

from vixml_lib import images as vimg
from vixml_lib.errors import DataFormatError
from vixml_lib.images import (
    ImageBin,
    convert_object_map,
    decode_image_line,
    encode_image_line,
    image_counts,
    read_image_map,
    write_image_bin,
)


def _img(colour=(200, 30, 40), size=(24, 16)):
    im = Image.new("RGB", size, colour)
    im.paste((10, 200, 30), (0, 0, size[0] // 2, size[1] // 2))
    return im


def test_encode_decode_roundtrip_jpeg_and_png():
    im = _img()
    line = encode_image_line(im)
    assert b"\n" not in line and b"\r" not in line
    base64.b64decode(line, validate=True)  # pure base64
    back = decode_image_line(line)
    assert back.mode == "RGB" and back.size == im.size
    # JPEG is lossy: colours close, not equal
    assert np.abs(np.asarray(back, dtype=int) - np.asarray(im, dtype=int)).mean() < 12
    png = encode_image_line(im, format="PNG")
    assert np.array_equal(np.asarray(decode_image_line(png)), np.asarray(im))
    # a trailing newline / CRLF and str input are accepted
    assert decode_image_line(line + b"\r\n").size == im.size
    assert decode_image_line(line.decode()).size == im.size


def test_encode_converts_non_rgb_for_jpeg():
    im = Image.new("RGBA", (8, 8), (1, 2, 3, 128))
    assert decode_image_line(encode_image_line(im)).size == (8, 8)
    assert decode_image_line(encode_image_line(Image.new("L", (5, 7), 100))).mode == "RGB"


def test_decode_bad_lines_raise_value_error():
    with pytest.raises(ValueError, match="base64"):
        decode_image_line(b"this is not base64!!")
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image_line(base64.b64encode(b"hello world, no image here"))
    with pytest.raises(ValueError, match="empty"):
        decode_image_line(b"\n")


def test_write_and_read_bin(tmp_path):
    ims = [_img((i * 40, 0, 255 - i * 40), size=(10 + i, 12)) for i in range(5)]
    lines = [encode_image_line(im, format="PNG") for im in ims]
    p = tmp_path / "x_imgs_384_3.bin"
    assert write_image_bin(p, lines) == 5
    assert p.read_bytes() == b"".join(l + b"\n" for l in lines)
    with ImageBin(p) as b:
        assert len(b) == 5
        for i in range(5):
            assert b.raw(i) == lines[i]
            assert np.array_equal(np.asarray(b.image(i)), np.asarray(ims[i]))
        assert b.image(np.int64(3)).size == (13, 12)  # numpy integers are fine
        # ImageBin survives pickling (e.g. to DataLoader workers)
        b2 = pickle.loads(pickle.dumps(b))
        assert b2.raw(4) == lines[4]
        assert "5" in repr(b)


def test_write_image_bin_rejects_newlines_and_leaves_nothing(tmp_path):
    p = tmp_path / "bad.bin"
    with pytest.raises(ValueError, match="newline"):
        write_image_bin(p, [b"QUJD", b"QU\nJD"])
    assert not p.exists()
    assert list(tmp_path.iterdir()) == []  # the atomic temp file is gone too


def test_bin_index_out_of_range(tmp_path):
    p = tmp_path / "t.bin"
    write_image_bin(p, [encode_image_line(_img()) for _ in range(3)])
    b = ImageBin(p)
    with pytest.raises(IndexError) as e:
        b.raw(3)
    assert str(p) in str(e.value) and "3 images" in str(e.value)
    with pytest.raises(IndexError, match="no image"):
        b.image(-1)  # -1 means 'no image' in a map, never 'last line'
    with pytest.raises(TypeError):
        b.raw(1.5)


def test_bin_line_offsets_edge_cases(tmp_path, monkeypatch):
    a, c = encode_image_line(_img(), format="PNG"), encode_image_line(_img((0, 0, 0)), format="PNG")
    # last line without newline, CRLF line endings
    p = tmp_path / "e.bin"
    p.write_bytes(a + b"\r\n" + c)
    b = ImageBin(p)
    assert len(b) == 2 and b.raw(0) == a and b.raw(1) == c
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert len(ImageBin(empty)) == 0
    # chunked newline scan: tiny chunks give the same offsets as a plain split
    lines = [encode_image_line(_img((i, i, i), size=(3 + i, 4)), format="PNG") for i in range(20)]
    q = tmp_path / "many.bin"
    write_image_bin(q, lines)
    monkeypatch.setattr(vimg, "_CHUNK", 7)
    b = ImageBin(q)
    assert len(b) == 20
    assert [b.raw(i) for i in range(20)] == lines
    with pytest.raises(FileNotFoundError):
        ImageBin(tmp_path / "missing.bin")


def test_corrupt_line_names_file_and_line(tmp_path):
    good = encode_image_line(_img())
    p = tmp_path / "c.bin"
    p.write_bytes(good + b"\n" + b"%%% not base64 %%%\n" + base64.b64encode(b"not an image") + b"\n")
    b = ImageBin(p)
    assert b.image(0).size == (24, 16)
    with pytest.raises(DataFormatError) as e:
        b.image(1)
    assert e.value.line == 2 and e.value.path == str(p)
    assert str(e.value).startswith(f"{p}:2:")
    with pytest.raises(DataFormatError) as e:
        b.image(2)
    assert e.value.line == 3 and "not a readable image" in str(e.value)


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
