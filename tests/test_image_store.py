"""Tests for vixml_lib.images.store: the authors' .bin store (one base64 image a line)."""
from __future__ import annotations

import base64
import pickle

import numpy as np
import pytest
from PIL import Image

from vixml_lib.errors import DataFormatError
from vixml_lib.images import store
from vixml_lib.images.store import ImageBin, decode_image_line, encode_image_line, write_image_bin


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
    with pytest.raises(DataFormatError) as e:  # the project's error too (the CLI prints one line)
        b.raw(7)
    assert isinstance(e.value, IndexError) and e.value.path == str(p)


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
    monkeypatch.setattr(store, "_CHUNK", 7)
    b = ImageBin(q)
    assert len(b) == 20
    # count_lines (what prepare checks image maps against) counts as ImageBin does
    assert store.count_lines(q) == 20 and store.count_lines(p) == 2 and store.count_lines(empty) == 0
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
