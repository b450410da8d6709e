"""Byte-level parsers behind :func:`~vixml_lib.data.formats.read_xy` and
:func:`~vixml_lib.data.formats.read_filter` (the public API; use those).

The parsers are vectorised with numpy (a 300,000-row label file parses in a fraction of a
second). When any check of the fast pass fails (:class:`_FastPathFailed`), a slow
line-by-line pass runs instead; it finds the first bad line and raises
:class:`~vixml_lib.errors.DataFormatError` naming the file and the (1-based) line, so error
messages are exact while valid files stay fast.

X_Y files: the file is read into a byte array padded with spaces; the separators and colons
are located once; labels (1-8 digits) are parsed 8 bytes at a time with SWAR arithmetic on
overlapping little-endian uint64 windows (the method of Lemire's fast number parsers); the
values are parsed once when they are all the same string (the usual ``1.0``), else in bulk
by numpy. Filter files: byte classes and token bounds, digits summed column by column.

Only numpy and scipy are imported here.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DataFormatError, check_input_file

__all__ = ["parse_xy", "parse_filter"]

# Byte classes used by the vectorised parsers.
_DIGIT, _NUMCHAR, _COLON, _SPACE, _NEWLINE, _INVALID = 0, 1, 2, 3, 4, 5
_CLASS = np.full(256, _INVALID, dtype=np.uint8)
_CLASS[ord("0"):ord("9") + 1] = _DIGIT
for _c in b".eE+-":
    _CLASS[_c] = _NUMCHAR
_CLASS[ord(":")] = _COLON
for _c in b" \t\r":
    _CLASS[_c] = _SPACE
_CLASS[ord("\n")] = _NEWLINE
_IS_SEP = np.zeros(256, dtype=bool)
_IS_SEP[[ord(" "), ord("\t"), ord("\r"), ord("\n")]] = True

_MAX_DIGITS = 18  # int64-safe; longer integers go through the slow pass


class _FastPathFailed(Exception):
    """Internal: the vectorised pass found something it does not handle; use the slow pass."""


# ----------------------------------------------------------------------------- helpers
def _token_bounds(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) offsets of the whitespace-separated tokens."""
    sep = np.flatnonzero(_IS_SEP[b])
    bounds = np.empty(sep.size + 2, dtype=np.int64)
    bounds[0] = -1
    bounds[1:-1] = sep
    bounds[-1] = b.size
    starts = bounds[:-1] + 1
    ends = bounds[1:]
    keep = ends > starts
    return starts[keep], ends[keep]


def _parse_digits(b: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Integers written in ``b[starts[i]:ends[i]]`` (digits only, already checked)."""
    lens = ends - starts
    out = np.zeros(starts.size, dtype=np.int64)
    if starts.size == 0:
        return out
    if lens.min() < 1 or lens.max() > _MAX_DIGITS:
        raise _FastPathFailed
    scale = 1
    for d in range(int(lens.max())):
        pos = ends - 1 - d
        active = pos >= starts
        digit = b[np.maximum(pos, 0)].astype(np.int64) - 48
        out += np.where(active, digit * scale, 0)
        scale *= 10
    return out


def _parse_floats(text: bytes, expected: int) -> np.ndarray:
    """Parse ``expected`` whitespace-separated floats; raise _FastPathFailed otherwise."""
    with warnings.catch_warnings():
        # numpy warns (future versions: raise) when the text has unparsable data
        warnings.simplefilter("error")
        try:
            vals = np.fromstring(text, dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning) as e:
            raise _FastPathFailed from e
    if vals.size != expected:
        raise _FastPathFailed
    return vals


# ----------------------------------------------------------------------------- X_Y files
def _parse_header(path, data: bytes, n_labels: int | None) -> tuple[int, int, int]:
    """Return (n_rows, n_labels, offset of the first data byte)."""
    if not data:
        raise DataFormatError(path, "empty file: missing header line 'n_rows n_labels'", line=1)
    nl = data.find(b"\n")
    header = data if nl < 0 else data[:nl]
    parts = header.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        shown = header[:80].decode("latin-1")
        raise DataFormatError(
            path, f"malformed header {shown!r}: expected two non-negative integers "
                  "'n_rows n_labels'", line=1)
    n_rows, n_lab = int(parts[0]), int(parts[1])
    if n_labels is not None and int(n_labels) != n_lab:
        raise DataFormatError(
            path, f"header declares {n_lab} labels but {int(n_labels)} were expected", line=1)
    return n_rows, n_lab, (len(data) if nl < 0 else nl + 1)


_PAD = 8  # spaces around the file's bytes, so that 8-byte windows never leave the buffer
_ZEROS = np.uint64(0x3030303030303030)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIXES = np.uint64(0x0606060606060606)


def _read_padded(path: str | Path) -> np.ndarray:
    """The file's bytes as a uint8 array with ``_PAD`` spaces before and after."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        arr = np.empty(size + 2 * _PAD, dtype=np.uint8)
        arr[:_PAD] = 32
        got = f.readinto(memoryview(arr)[_PAD:_PAD + size])
        if got != size:  # the file changed while reading: fall back to a plain read
            f.seek(0)
            data = f.read()
            arr = np.empty(len(data) + 2 * _PAD, dtype=np.uint8)
            arr[:_PAD] = 32
            arr[_PAD:_PAD + len(data)] = np.frombuffer(data, dtype=np.uint8)
            size = len(data)
        arr[_PAD + size:] = 32
    return arr


def _windows(b: np.ndarray) -> np.ndarray:
    """Overlapping little-endian uint64 views: ``w[i]`` holds bytes ``b[i:i+8]``."""
    return np.ndarray(shape=(b.size - 7,), dtype="<u8", buffer=b, strides=(1,))


def _swar_labels(win: np.ndarray, colons: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Integers of 1..8 ASCII digits ending just before each colon, 8 digits at a time
    (the SWAR method of Lemire's fast number parsers); non-digits -> _FastPathFailed.
    In-place arithmetic keeps the temporaries (and page faults) few."""
    w = win[colons - 8]  # bytes colon-8 .. colon-1, the label in the high bytes
    zs = (8 - lens).astype(np.uint64)
    zs <<= np.uint64(3)
    np.right_shift(w, zs, out=w)  # drop the bytes before the label ...
    np.left_shift(w, zs, out=w)  # ... (the low bytes become 0)
    np.left_shift(_ZEROS, zs, out=zs)  # '0' in the label's bytes, 0 elsewhere
    tmp = np.bitwise_and(w, _HIGH_NIBBLES)
    ok = np.array_equal(tmp, zs)  # high nibble 3 in the label, 0 below
    np.add(w, _SIXES, out=tmp)
    tmp &= _HIGH_NIBBLES
    if not (ok and np.array_equal(tmp, zs)):  # low nibble <= 9
        raise _FastPathFailed  # a byte of a label is not a digit
    w -= zs
    np.right_shift(w, np.uint64(8), out=tmp)
    w *= np.uint64(10)
    w += tmp
    mask = np.uint64(0x000000FF000000FF)
    np.bitwise_and(w, mask, out=tmp)
    tmp *= np.uint64(100 + (1000000 << 32))
    w >>= np.uint64(16)
    w &= mask
    w *= np.uint64(1 + (10000 << 32))
    w += tmp
    w >>= np.uint64(32)
    return w.view(np.int64)


def _xy_fast(b: np.ndarray, body_len: int, n_rows: int, n_labels: int) -> sp.csr_matrix:
    """``b``: the padded file bytes with the header blanked out (spaces); ``body_len``:
    bytes after the header line."""
    # separators (whitespace, control bytes) and colons, in file order
    m = b <= 32
    m |= b == 58
    pos = np.flatnonzero(m)
    del m
    kind = b[pos]
    is_colon = kind == 58
    nlj = np.flatnonzero(kind == 10)  # newlines, as indices into pos
    # lines: each ends with '\n', the last one's is optional
    n_lines = nlj.size + (1 if body_len and b[b.size - _PAD - 1] != 10 else 0)
    if n_lines != n_rows:
        raise _FastPathFailed
    if not np.all(is_colon | (kind == 32) | ((kind >= 9) & (kind <= 13))):
        raise _FastPathFailed  # a control byte that is not whitespace
    cj = np.flatnonzero(is_colon)
    n_tok = cj.size
    if n_tok == 0:
        if b.size != pos.size:
            raise _FastPathFailed  # some text without any colon
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        return _csr(np.zeros(0, np.float32), np.zeros(0, np.int64), indptr, n_rows, n_labels)
    # each colon sits between two separators: one colon per token
    if is_colon[cj - 1].any() or is_colon[cj + 1].any():
        raise _FastPathFailed
    colons = pos[cj]
    starts = pos[cj - 1]
    starts += 1
    ends = pos[cj + 1]
    n_pos = pos.size
    del pos, kind, is_colon
    # every other byte lies in one of these tokens: no token without a colon
    if int(ends.sum() - starts.sum()) - n_tok != b.size - n_pos:
        raise _FastPathFailed
    llen = colons - starts
    vlen = ends - colons
    vlen -= 1
    if llen.min() < 1 or vlen.min() < 1 or llen.max() > 8:
        raise _FastPathFailed
    win = _windows(b)
    labels = _swar_labels(win, colons, llen)
    if labels.max() >= n_labels:
        raise _FastPathFailed
    values = _xy_values(b, win, starts, colons, ends, vlen)
    # row boundaries: tokens before each newline
    indptr = np.empty(n_rows + 1, dtype=np.int64)
    indptr[0] = 0
    indptr[1:1 + nlj.size] = np.searchsorted(cj, nlj)
    if n_rows > nlj.size:
        indptr[-1] = n_tok
    # labels strictly increasing inside each row: sorted, no duplicates
    bad = labels[1:] <= labels[:-1]
    inner = indptr[1:-1]
    bad[inner[(inner > 0) & (inner < n_tok)] - 1] = False
    if bad.any():
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
        key = rows * np.int64(n_labels) + labels
        order = np.argsort(key, kind="stable")
        key, labels, values = key[order], labels[order], values[order]
        if np.any(key[1:] == key[:-1]):
            raise _FastPathFailed  # duplicate label in a row
    return _csr(values, labels, indptr, n_rows, n_labels)


def _xy_values(b, win, starts, colons, ends, vlen) -> np.ndarray:
    """float32 values of the tokens: one shared string (the usual '1.0') is parsed once,
    otherwise the value parts are bulk-parsed by numpy."""
    v0 = int(vlen[0])
    first = b[int(colons[0]) + 1:int(ends[0])].tobytes()
    values = None
    if v0 <= 8 and np.all(vlen == v0):
        mask = np.uint64((1 << (8 * v0)) - 1)
        w = win[colons + 1]
        w &= mask
        if np.all(w == w[0]):
            try:
                with np.errstate(over="ignore"):
                    values = np.full(colons.size, float(first), dtype=np.float32)
            except (ValueError, OverflowError) as e:
                raise _FastPathFailed from e
    if values is None:
        arr = b.copy()
        arr[colons] = 32
        llen = colons - starts
        for d in range(int(llen.max())):  # blank the labels out
            p = starts + d
            arr[p[p < colons]] = 32
        if np.any(_CLASS[arr] == _INVALID):  # e.g. 'inf', '0x1p3': the slow pass decides
            raise _FastPathFailed
        with np.errstate(over="ignore"):  # too large for float32 -> inf, rejected below
            values = _parse_floats(arr.tobytes(), colons.size).astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise _FastPathFailed
    return values


def _csr(values, labels, indptr, n_rows, n_labels) -> sp.csr_matrix:
    idx_dtype = np.int32 if max(n_labels, indptr[-1] if len(indptr) else 0) < 2**31 else np.int64
    return sp.csr_matrix(
        (values.astype(np.float32, copy=False), labels.astype(idx_dtype, copy=False),
         indptr.astype(idx_dtype, copy=False)),
        shape=(n_rows, n_labels))


def _shown(tok: bytes) -> str:
    return tok[:40].decode("latin-1")


def _xy_slow(path, body: bytes, n_rows: int, n_labels: int) -> sp.csr_matrix:
    """Line-by-line parse; raises DataFormatError at the first bad line."""
    lines = body.split(b"\n")
    if body.endswith(b"\n") or not body:
        lines.pop()
    values: list[float] = []
    labels: list[int] = []
    indptr = [0]
    for i, line in enumerate(lines[:n_rows]):
        lineno = i + 2
        row: dict[int, float] = {}
        for tok in line.split():
            lab, colon, val = tok.partition(b":")
            if not colon or not lab or not val or b":" in val:
                raise DataFormatError(
                    path, f"malformed pair {_shown(tok)!r}: expected 'label:value' (e.g. 3:1.0)",
                    line=lineno)
            if not lab.isdigit():
                raise DataFormatError(
                    path, f"malformed pair {_shown(tok)!r}: the label must be a non-negative "
                          "integer", line=lineno)
            try:
                v = float(val)
            except ValueError:
                raise DataFormatError(
                    path, f"malformed pair {_shown(tok)!r}: the value is not a number",
                    line=lineno) from None
            with np.errstate(over="ignore"):
                finite = np.isfinite(np.float32(v))
            if not finite:
                raise DataFormatError(
                    path, f"pair {_shown(tok)!r}: the value must be finite (float32)", line=lineno)
            label = int(lab)
            if label >= n_labels:
                raise DataFormatError(
                    path, f"label index {label} out of range [0, {n_labels}) "
                          f"(header declares {n_labels} labels)", line=lineno)
            if label in row:
                raise DataFormatError(
                    path, f"duplicate label {label} in the row", line=lineno)
            row[label] = v
        for label in sorted(row):
            labels.append(label)
            values.append(row[label])
        indptr.append(len(labels))
    if len(lines) != n_rows:
        if len(lines) > n_rows:
            raise DataFormatError(
                path, f"header declares {n_rows} rows but the file has {len(lines)} data "
                      f"lines (extra lines start here)", line=n_rows + 2)
        raise DataFormatError(
            path, f"header declares {n_rows} rows but the file has only {len(lines)} data "
                  "lines", line=1)
    return _csr(np.asarray(values, dtype=np.float32), np.asarray(labels, dtype=np.int64),
                np.asarray(indptr, dtype=np.int64), n_rows, n_labels)

def parse_xy(path: str | Path, n_labels: int | None = None) -> sp.csr_matrix:
    """:func:`~vixml_lib.data.formats.read_xy`: the fast pass, else the slow one that names the bad line."""
    b = _read_padded(check_input_file(path, "label file (X_Y: header 'n_rows n_labels', then label:value pairs)"))
    size = b.size - 2 * _PAD
    head = b[_PAD:_PAD + min(size, 4096)].tobytes()
    if size > 4096 and b"\n" not in head:
        head = b[_PAD:_PAD + size].tobytes()
    n_rows, n_lab, offset = _parse_header(path, head, n_labels)
    b[_PAD:_PAD + offset] = 32  # blank the header line out
    try:
        return _xy_fast(b, size - offset, n_rows, n_lab)
    except _FastPathFailed:
        return _xy_slow(path, b[_PAD + offset:_PAD + size].tobytes(), n_rows, n_lab)


# ----------------------------------------------------------------------------- filters
def _filter_slow(path, data: bytes, shape) -> np.ndarray:
    lines = data.split(b"\n")
    out: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        parts = line.split()
        if not parts:
            continue  # blank lines (e.g. at the end) are ignored
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            shown = line[:80].decode("latin-1")
            raise DataFormatError(
                path, f"malformed line {shown!r}: expected 'row_index label_index' "
                      "(two non-negative integers)", line=i + 1)
        r, c = int(parts[0]), int(parts[1])
        if shape is not None:
            if r >= shape[0]:
                raise DataFormatError(
                    path, f"row index {r} out of range [0, {shape[0]})", line=i + 1)
            if c >= shape[1]:
                raise DataFormatError(
                    path, f"label index {c} out of range [0, {shape[1]})", line=i + 1)
        out.append((r, c))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def _filter_fast(data: bytes, shape) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    cls = _CLASS[b]
    if np.any((cls != _DIGIT) & (cls != _SPACE) & (cls != _NEWLINE)):
        raise _FastPathFailed
    starts, ends = _token_bounds(b)
    newlines = np.flatnonzero(cls == _NEWLINE)
    line_of = np.searchsorted(newlines, starts)
    if starts.size % 2:
        raise _FastPathFailed
    # two tokens per non-blank line: tokens pair up and each pair shares its line
    if starts.size and (np.any(line_of[0::2] != line_of[1::2])
                        or np.any(line_of[2::2] == line_of[1:-1:2])):
        raise _FastPathFailed
    vals = _parse_digits(b, starts, ends).reshape(-1, 2)
    if shape is not None and vals.size and (
            vals[:, 0].max() >= shape[0] or vals[:, 1].max() >= shape[1]):
        raise _FastPathFailed
    return vals


def parse_filter(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """:func:`~vixml_lib.data.formats.read_filter`: the fast pass, else the slow one that names the bad line."""
    data = check_input_file(path, "filter file (one 'row_index label_index' pair a line)").read_bytes()
    try:
        return _filter_fast(data, shape)
    except _FastPathFailed:
        return _filter_slow(path, data, shape)
