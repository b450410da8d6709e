"""Tests of vixml_lib.data.formats: round trips, the exact error messages, atomic writes
and the vectorised fast path of read_xy (vixml_lib.data.parsing)."""
import os
import time

import numpy as np
import pytest
import scipy.sparse as sp

from vixml_lib.data import formats, parsing
from vixml_lib.errors import DataFormatError


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    return path


# ----------------------------------------------------------------------------- X_Y files
def test_xy_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 12)) < 0.3) * rng.choice(
        np.float32([1.0, 0.5, 2.0, 3.14159, 1e-7, 12345.678, 0.1]), size=(30, 12))
    dense[0] = 0  # first and last rows empty
    dense[-1] = 0
    Y = sp.csr_matrix(dense.astype(np.float32))
    formats.write_xy(tmp_path / "Y.txt", Y)
    Z = formats.read_xy(tmp_path / "Y.txt")
    assert Z.shape == (30, 12) and Z.dtype == np.float32
    assert Z.has_sorted_indices
    np.testing.assert_array_equal(Z.toarray(), Y.toarray())  # exact float32 values
    lines = (tmp_path / "Y.txt").read_text().split("\n")
    assert lines[0] == "30 12"
    assert lines[1] == "" and lines[30] == "" and lines[31] == ""  # empty rows, final newline
    assert len(lines) == 32


def test_xy_written_sorted_and_compact(tmp_path):
    # unsorted indices in the matrix; values 1.0 written as '1.0'
    Y = sp.csr_matrix((np.float32([1, 0.25, 1]), np.array([5, 1, 3]), np.array([0, 3, 3])),
                      shape=(2, 6))
    formats.write_xy(tmp_path / "Y.txt", Y)
    assert (tmp_path / "Y.txt").read_text() == "2 6\n1:0.25 3:1.0 5:1.0\n\n"


def test_xy_empty_line_is_a_row_without_labels(tmp_path):
    p = write(tmp_path / "Y.txt", "3 4\n0:1 2:1\n\n3:0.5")  # no final newline
    Y = formats.read_xy(p)
    assert Y.shape == (3, 4)
    assert Y.toarray().tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0.5]]


def test_xy_lenient_spacing_crlf_and_unsorted(tmp_path):
    p = write(tmp_path / "Y.txt", b"2 5\r\n  3:1.0\t 1:2e0  \r\n4:+1.5\r\n", "wb")
    Y = formats.read_xy(p)
    assert Y.toarray().tolist() == [[0, 2, 0, 1, 0], [0, 0, 0, 0, 1.5]]
    assert Y.has_sorted_indices


def test_xy_zero_rows_and_header_only(tmp_path):
    assert formats.read_xy(write(tmp_path / "a.txt", "0 7\n")).shape == (0, 7)
    assert formats.read_xy(write(tmp_path / "b.txt", "0 7")).shape == (0, 7)
    assert formats.read_xy(write(tmp_path / "c.txt", "1 7\n\n")).nnz == 0


@pytest.mark.parametrize("text, line, pattern", [
    ("", 1, "missing header"),
    ("3\n0:1\n\n\n", 1, "malformed header"),
    ("a b\n", 1, "malformed header"),
    ("3 6\n0:1\n\n", 1, "header declares 3 rows but the file has only 2 data lines"),
    ("2 6\n0:1\n\n1:1\n", 4, "header declares 2 rows but the file has 3 data lines"),
    ("3 6\n0:1\n3-1.0\n\n", 3, "malformed pair '3-1.0'"),
    ("3 6\n0:1\na:1\n\n", 3, "malformed pair 'a:1'"),
    ("3 6\n0:1\n1:1 3:\n\n", 3, "malformed pair '3:'"),
    ("3 6\n0:1\n:1\n\n", 3, "malformed pair ':1'"),
    ("3 6\n0:1\n1:1:1\n\n", 3, "malformed pair '1:1:1'"),
    ("3 6\n0:1\n1:x\n\n", 3, "not a number"),
    ("3 6\n0:1\n-1:1\n\n", 3, "non-negative integer"),
    ("3 6\n0:1\n\n2:1 6:1\n", 4, "label index 6 out of range \\[0, 6\\)"),
    ("3 6\n0:1\n\n2:1 123456789012:1\n", 4, "label index 123456789012 out of range"),
    ("3 6\n0:1\n\n2:1 2:1\n", 4, "duplicate label 2"),
    ("3 6\n0:1\n\n1:inf\n", 4, "finite"),
    ("3 6\n0:1 1:1\n\n5:1 0:1 5:1\n", 4, "duplicate label 5"),
])
def test_xy_errors(tmp_path, text, line, pattern):
    p = write(tmp_path / "bad_X_Y.txt", text)
    with pytest.raises(DataFormatError, match=pattern) as e:
        formats.read_xy(p)
    assert str(e.value).startswith(f"{p}:{line}: ")
    assert e.value.line == line


def test_xy_n_labels_must_match_header(tmp_path):
    p = write(tmp_path / "Y.txt", "1 6\n0:1\n")
    assert formats.read_xy(p, n_labels=6).shape == (1, 6)
    with pytest.raises(DataFormatError, match=r"Y.txt:1: header declares 6 labels but 7"):
        formats.read_xy(p, n_labels=7)


def _big_xy_text(n_rows, n_labels, rng):
    counts = rng.integers(0, 11, size=n_rows)  # ~5 labels a row, sorted and distinct
    base = rng.integers(0, n_labels - 11 * 11, size=n_rows)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    offs = np.arange(ptr[-1]) - np.repeat(ptr[:-1], counts)
    labels = np.repeat(base, counts) + 11 * offs
    labs = [f"{lab}:1.0" for lab in labels.tolist()]
    body = "\n".join(" ".join(labs[ptr[i]:ptr[i + 1]]) for i in range(n_rows))
    return f"{n_rows} {n_labels}\n{body}\n", ptr, labels


def test_xy_fast_path_used_and_fast(tmp_path, monkeypatch):
    """Valid files never take the slow line-by-line pass; 300,000 rows parse quickly."""
    rng = np.random.default_rng(1)
    text, ptr, labels = _big_xy_text(300_000, 131_072, rng)
    p = write(tmp_path / "big.txt", text)

    def no_slow(*a, **k):
        raise AssertionError("slow path taken for a valid file")

    monkeypatch.setattr(parsing, "_xy_slow", no_slow)
    best = float("inf")
    for _ in range(2):
        t0 = time.process_time()  # CPU time: robust to other jobs on the machine
        Y = formats.read_xy(p)
        best = min(best, time.process_time() - t0)
    assert best < 0.5, f"read_xy took {best:.2f} s of CPU for 300,000 rows"
    assert Y.shape == (300_000, 131_072)
    np.testing.assert_array_equal(Y.indptr, ptr)
    np.testing.assert_array_equal(Y.indices, labels)
    assert np.all(Y.data == 1)


def test_xy_fast_and_slow_paths_agree(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    rows = []
    for _ in range(200):
        labs = rng.choice(1000, size=rng.integers(0, 8), replace=False)
        vals = rng.choice(["1", "1.0", "0.5", "2.25e-1", "3"], size=labs.size)
        rows.append(" ".join(f"{l}:{v}" for l, v in zip(labs, vals)))
    p = write(tmp_path / "Y.txt", "200 1000\n" + "\n".join(rows) + "\n")
    fast = formats.read_xy(p)
    monkeypatch.setattr(parsing, "_xy_fast", lambda *a: (_ for _ in ()).throw(
        parsing._FastPathFailed()))
    slow = formats.read_xy(p)
    assert (fast != slow).nnz == 0
    np.testing.assert_array_equal(fast.indptr, slow.indptr)
    np.testing.assert_array_equal(fast.indices, slow.indices)


# ----------------------------------------------------------------------------- texts
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_texts_round_trip(tmp_path, encoding):
    texts = ["Café crème brûlée", "", "naïve façade Ærø", "plain", "tab\tinside", "x\x85y"]
    formats.write_texts(tmp_path / "t.txt", texts, encoding=encoding)
    assert formats.read_texts(tmp_path / "t.txt", encoding=encoding) == texts
    raw = (tmp_path / "t.txt").read_bytes()
    assert raw == ("\n".join(texts) + "\n").encode(encoding)


def test_texts_final_newline_optional_and_crlf(tmp_path):
    assert formats.read_texts(write(tmp_path / "a.txt", "a\nb")) == ["a", "b"]
    assert formats.read_texts(write(tmp_path / "c.txt", b"a\r\nb\r\n", "wb")) == ["a", "b"]
    assert formats.read_texts(write(tmp_path / "d.txt", "")) == []
    assert formats.read_texts(write(tmp_path / "e.txt", "\n")) == [""]


def test_texts_decode_error_suggests_latin1(tmp_path):
    p = write(tmp_path / "lbl.raw.txt", "ok\nalso ok\ncaf\xe9\n".encode("latin-1"), "wb")
    with pytest.raises(DataFormatError, match='encoding="latin-1"') as e:
        formats.read_texts(p)
    assert str(e.value).startswith(f"{p}:3: ")
    assert formats.read_texts(p, encoding="latin-1")[2] == "café"


def test_write_texts_newline_is_an_error_and_atomic(tmp_path):
    p = tmp_path / "t.txt"
    formats.write_texts(p, ["old"])
    with pytest.raises(DataFormatError, match="text 2 contains a line break"):
        formats.write_texts(p, ["a", "b", "two\nlines", "d"])
    with pytest.raises(DataFormatError, match="text 0 contains a line break"):
        formats.write_texts(tmp_path / "new.txt", ["a\rb"])
    assert formats.read_texts(p) == ["old"]  # the previous file is untouched
    assert sorted(os.listdir(tmp_path)) == ["t.txt"]  # no new file, no temporary left


def test_write_texts_unencodable_names_item(tmp_path):
    with pytest.raises(DataFormatError, match="text 1 .*'€'"):
        formats.write_texts(tmp_path / "t.txt", ["ok", "10 €"], encoding="latin-1")
    assert not (tmp_path / "t.txt").exists()


def test_write_texts_from_a_generator(tmp_path):
    formats.write_texts(tmp_path / "t.txt", (f"item {i}" for i in range(70000)))
    texts = formats.read_texts(tmp_path / "t.txt")
    assert len(texts) == 70000 and texts[-1] == "item 69999"


# ----------------------------------------------------------------------------- filters
def test_filter_round_trip_and_empty(tmp_path):
    pairs = np.array([[0, 5], [3, 1], [3, 2], [120, 65000]])
    formats.write_filter(tmp_path / "f.txt", pairs)
    assert (tmp_path / "f.txt").read_text().startswith("0 5\n3 1\n")
    got = formats.read_filter(tmp_path / "f.txt", shape=(121, 65001))
    assert got.dtype == np.int64 and got.shape == (4, 2)
    np.testing.assert_array_equal(got, pairs)
    formats.write_filter(tmp_path / "e.txt", np.zeros((0, 2), dtype=int))
    assert (tmp_path / "e.txt").read_text() == ""
    assert formats.read_filter(tmp_path / "e.txt").shape == (0, 2)
    # blank lines and tabs are tolerated
    p = write(tmp_path / "g.txt", "1\t2\n\n3 4")
    np.testing.assert_array_equal(formats.read_filter(p), [[1, 2], [3, 4]])


@pytest.mark.parametrize("text, line, pattern", [
    ("0 1\n2 3 4\n", 2, "malformed line '2 3 4'"),
    ("0 1\n2\n", 2, "malformed line '2'"),
    ("0 1\n\n-2 3\n", 3, "malformed line '-2 3'"),
    ("0 1\nx y\n", 2, "malformed line"),
    ("0 1\n10 3\n", 2, "row index 10 out of range \\[0, 10\\)"),
    ("0 1\n1 3\n2 20\n", 3, "label index 20 out of range \\[0, 20\\)"),
])
def test_filter_errors(tmp_path, text, line, pattern):
    p = write(tmp_path / "filter_labels_test.txt", text)
    with pytest.raises(DataFormatError, match=pattern) as e:
        formats.read_filter(p, shape=(10, 20))
    assert str(e.value).startswith(f"{p}:{line}: ")


def test_apply_filter_eliminates_entries():
    P = sp.csr_matrix(np.array([[0.9, 0.5, 0, 0.1], [0.3, 0, 0.7, 0], [0, 0, 0, 0.2]],
                               dtype=np.float32))
    out = formats.apply_filter(P, np.array([[0, 1], [1, 2], [2, 0], [0, 1]]))
    assert out.nnz == P.nnz - 2  # (2, 0) was not stored; a repeated pair counts once
    np.testing.assert_allclose(out.toarray(), [[0.9, 0, 0, 0.1], [0.3, 0, 0, 0], [0, 0, 0, 0.2]],
                               rtol=1e-6)
    assert not np.any(out.data == 0)
    assert P.nnz == 6  # input unchanged
    assert formats.apply_filter(P, np.zeros((0, 2), int)).nnz == 6
    with pytest.raises(ValueError, match="out of range"):
        formats.apply_filter(P, np.array([[3, 0]]))


@pytest.mark.parametrize("copy", [True, False])
def test_apply_filter_large(copy):
    rng = np.random.default_rng(0)
    P = sp.random(2000, 500, density=0.05, format="csr", random_state=1, dtype=np.float32)
    P.data += 0.1
    r = rng.integers(0, 2000, 3000)
    c = rng.integers(0, 500, 3000)
    idx = np.flatnonzero(P.indptr[r] < P.indptr[r + 1])[::2]  # many pairs on stored entries
    c[idx] = P.indices[P.indptr[r[idx]]]
    want = P.toarray()
    want[r, c] = 0
    before = P.copy()
    out = formats.apply_filter(P, np.stack([r, c], 1), copy=copy)
    np.testing.assert_array_equal(out.toarray(), want)
    assert out.nnz == np.count_nonzero(want) and out.has_sorted_indices
    if copy:
        assert (P != before).nnz == 0 and P.nnz == before.nnz


# ----------------------------------------------------------------------------- predictions
def test_predictions_round_trip_and_errors(tmp_path):
    P = sp.random(20, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    formats.write_predictions(tmp_path / "P.npz", P)
    Q = formats.read_predictions(tmp_path / "P.npz")
    assert Q.format == "csr" and (Q != P).nnz == 0
    with pytest.raises(DataFormatError, match="not found"):
        formats.read_predictions(tmp_path / "missing.npz")
    write(tmp_path / "junk.npz", "not a zip")
    with pytest.raises(DataFormatError, match=r"junk.npz: not a scipy.sparse .npz"):
        formats.read_predictions(tmp_path / "junk.npz")
    np.savez(tmp_path / "dense.npz", a=np.ones(3))
    with pytest.raises(DataFormatError, match="dense.npz"):
        formats.read_predictions(tmp_path / "dense.npz")


def test_folders_and_unknown_encodings_are_clear_errors(tmp_path):
    from vixml_lib.errors import ConfigError

    for read in (formats.read_xy, formats.read_filter, formats.read_texts, formats.read_predictions):
        with pytest.raises(DataFormatError, match=f"^{tmp_path}: is a folder"):
            read(tmp_path)
    with pytest.raises(FileNotFoundError, match="none.txt: no such file"):
        formats.read_xy(tmp_path / "none.txt")
    (tmp_path / "t.txt").write_text("a\n")
    with pytest.raises(ConfigError, match="encoding = 'utf-9'"):
        formats.read_texts(tmp_path / "t.txt", encoding="utf-9")
    with pytest.raises(ConfigError, match="encoding = 'utf-9'"):
        formats.write_texts(tmp_path / "u.txt", ["a"], encoding="utf-9")
    assert not (tmp_path / "u.txt").exists()
