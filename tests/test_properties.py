"""Property-based tests (hypothesis): any bytes given to a reader either read to a valid object
or raise the project's error (:class:`vixml_lib.errors.VixmlError`) naming the file -- never a
traceback from deep inside numpy, gzip or zipfile."""
from __future__ import annotations

import gzip
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vixml_lib.data import formats
from vixml_lib.data.jsongz import read_json_split
from vixml_lib.errors import VixmlError
from vixml_lib.images.maps import read_image_map
from vixml_lib.images.store import ImageBin

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _file(data: bytes, name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="vixml-prop-"))
    path = d / name
    path.write_bytes(data)
    return path


def _reads_or_names_file(fn, data: bytes, name: str):
    path = _file(data, name)
    try:
        return fn(path)
    except VixmlError as e:
        assert path.name in str(e), f"error does not name the file: {e}"
        assert "\n" not in str(e).strip(), "one line"
        return None


# X_Y-like text: digits, colons, spaces, newlines and a little noise, so that many inputs parse
xy_text = st.text(alphabet="0123456789:. \n\r\t-e+x", max_size=200).map(str.encode)
any_bytes = st.binary(max_size=300)


@SETTINGS
@given(st.one_of(xy_text, any_bytes, st.builds(lambda b, t: b"2 3\n" + t, any_bytes, xy_text)))
def test_read_xy_any_bytes(data):
    Y = _reads_or_names_file(formats.read_xy, data, "trn_X_Y.txt")
    if Y is not None:
        assert isinstance(Y, sp.csr_matrix) and Y.dtype == np.float32
        assert Y.has_sorted_indices and np.all(np.isfinite(Y.data))
        assert Y.nnz == 0 or (Y.indices.min() >= 0 and Y.indices.max() < Y.shape[1])


@SETTINGS
@given(st.one_of(st.text(alphabet="0123456789 \n\r\t", max_size=120).map(str.encode), any_bytes))
def test_read_filter_any_bytes(data):
    pairs = _reads_or_names_file(lambda p: formats.read_filter(p, shape=(50, 50)), data, "filter_labels_test.txt")
    if pairs is not None:
        assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2
        assert pairs.size == 0 or (pairs.min() >= 0 and pairs[:, 0].max() < 50 and pairs[:, 1].max() < 50)


@SETTINGS
@given(any_bytes, st.sampled_from(["utf-8", "latin-1"]))
def test_read_texts_any_bytes(data, encoding):
    texts = _reads_or_names_file(lambda p: formats.read_texts(p, encoding=encoding), data, "lbl.raw.txt")
    if texts is not None:
        assert all(isinstance(t, str) and "\n" not in t for t in texts)
        if encoding == "latin-1":  # every byte string is latin-1
            assert len(texts) == data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)


def _npz_bytes(matrix) -> bytes:
    buf = io.BytesIO()
    sp.save_npz(buf, sp.csr_matrix(matrix))
    return buf.getvalue()


npz_like = st.builds(lambda m, cut, junk: _npz_bytes(m)[:cut] + junk,
                     st.lists(st.lists(st.floats(-5, 5), min_size=3, max_size=3), min_size=1, max_size=4),
                     st.integers(0, 2000), st.binary(max_size=20))


@SETTINGS
@given(st.one_of(any_bytes, npz_like))
def test_read_predictions_any_bytes(data):
    P = _reads_or_names_file(formats.read_predictions, data, "P.npz")
    if P is not None:
        assert isinstance(P, sp.csr_matrix) and P.ndim == 2


def _json_line(d) -> bytes:
    return (json.dumps(d) + "\n").encode()


scalars = st.none() | st.booleans() | st.integers(-3, 5) | st.floats(allow_nan=True) | st.text(max_size=5)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3), max_leaves=8)
items = st.fixed_dictionaries(
    {"uid": st.text(max_size=4), "title": st.one_of(st.text(max_size=10), json_values)},
    optional={"target_ind": st.one_of(st.lists(st.integers(-1, 6), max_size=4), json_values),
              "target_rel": st.one_of(st.lists(st.floats(allow_nan=True), max_size=4), json_values),
              "content": json_values})
json_gz = st.builds(lambda rows, cut, junk: gzip.compress(b"".join(map(_json_line, rows)))[:cut] + junk,
                    st.lists(items, max_size=4), st.integers(0, 400), st.binary(max_size=8))


@SETTINGS
@given(st.one_of(any_bytes, json_gz))
def test_read_json_split_any_bytes(data):
    out = _reads_or_names_file(lambda p: read_json_split(p, title_only=True, n_labels=5), data, "trn.json.gz")
    if out is not None:
        texts, Y = out
        assert len(texts) == Y.shape[0] >= 1 and Y.shape[1] == 5 and np.all(np.isfinite(Y.data))


def _npy_bytes(arr, allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


maps = st.builds(lambda a, cut, junk: _npy_bytes(np.asarray(a))[:cut] + junk,
                 st.one_of(st.lists(st.lists(st.integers(-3, 9), min_size=2, max_size=2), min_size=1, max_size=4),
                           st.lists(st.floats(-2, 2), max_size=3), st.lists(st.booleans(), max_size=3)),
                 st.integers(0, 300), st.binary(max_size=8))


@SETTINGS
@given(st.one_of(any_bytes, maps))
def test_read_image_map_any_bytes(data):
    m = _reads_or_names_file(lambda p: read_image_map(p, n_images=6), data, "trn_imgs_384_3_map.npy")
    if m is not None:
        assert m.dtype == np.int64 and m.ndim == 2 and m.min() >= -1 and m.max() < 6


@SETTINGS
@given(any_bytes)
def test_image_bin_any_bytes(data):
    path = _file(data, "trn_imgs_384_3.bin")
    b = ImageBin(path)
    assert len(b) == data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    for i in range(min(len(b), 3)):
        try:
            img = b.image(i)
        except VixmlError as e:
            assert path.name in str(e) and f":{i + 1}:" in str(e)
        else:
            assert img.mode == "RGB"


def test_pickled_map_is_never_unpickled(tmp_path):
    obj = np.empty(1, dtype=object)
    obj[0] = [1]
    path = _file(_npy_bytes(obj, allow_pickle=True), "lbl_imgs_384_3_map.npy")
    with pytest.raises(VixmlError, match="pickled"):
        read_image_map(path)
