"""Readers and writers for the file formats of the Extreme Classification Repository.

* ``*_X_Y.txt`` label matrices: a header line ``n_rows n_labels``, then exactly ``n_rows``
  lines of space-separated ``label:value`` pairs (an empty line is a row with no label).
  :func:`read_xy` / :func:`write_xy`, to and from ``scipy.sparse.csr_matrix`` (float32).
* ``*.raw.txt`` texts, one a line: :func:`read_texts` / :func:`write_texts`.
* ``filter_labels_*.txt`` (query, label) pairs to drop from predictions:
  :func:`read_filter` / :func:`write_filter` / :func:`apply_filter`.
* prediction score matrices, ``scipy.sparse`` ``.npz``: :func:`read_predictions` /
  :func:`write_predictions`.

In every line-based file the final newline is optional, and every line ends with one:
``"a\\nb"`` and ``"a\\nb\\n"`` both hold two lines; a last empty row is written as a last
empty line (``...\\n\\n``). Windows line ends (``\\r\\n``) are accepted on reading.

The ``X_Y`` and filter readers are vectorised (see :mod:`vixml_lib.data.parsing`, which
holds the byte-level parsers); a bad file raises :class:`~vixml_lib.errors.DataFormatError`
naming the file and the (1-based) line.

Only numpy and scipy are imported here.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DataFormatError, check_input_file
from ..io_utils import atomic_open
from ..validation import check_encoding
from .parsing import parse_filter, parse_xy

__all__ = [
    "read_xy", "write_xy", "read_texts", "write_texts", "read_filter", "write_filter",
    "apply_filter", "read_predictions", "write_predictions",
]


# ----------------------------------------------------------------------------- X_Y files
def read_xy(path: str | Path, n_labels: int | None = None) -> sp.csr_matrix:
    """Read an ``X_Y`` label file into a float32 CSR matrix with sorted indices.

    ``n_labels``, when given, must equal the header's label count. Raises
    :class:`DataFormatError` (with the line) on a missing/malformed header, a data line
    count that differs from the header, a malformed ``label:value`` pair, a label out of
    ``[0, n_labels)``, a non-finite value or a duplicate label within a row.
    """
    return parse_xy(path, n_labels)


def _format_values(values: np.ndarray) -> list[str]:
    """Shortest strings that read back to the same value (1.0 -> '1.0', 0.25 -> '0.25')."""
    uniq, inverse = np.unique(values, return_inverse=True)
    strs = []
    for v in uniq:
        if v == 0 or 1e-4 <= abs(v) < 1e16:
            strs.append(np.format_float_positional(v, unique=True, trim="0"))
        else:
            strs.append(np.format_float_scientific(v, unique=True, trim="0"))
    return np.asarray(strs, dtype=object)[inverse.ravel()].tolist()


def write_xy(path: str | Path, Y) -> None:
    """Write a label matrix in the ``X_Y`` format, atomically; labels sorted in each row."""
    Y = sp.csr_matrix(Y, copy=True)
    Y.sum_duplicates()  # also sorts the indices
    if Y.nnz and not np.all(np.isfinite(Y.data)):
        raise ValueError(f"{path}: label values must be finite")
    n_rows, n_labels = Y.shape
    pairs = list(map("{}:{}".format, Y.indices.tolist(), _format_values(Y.data)))
    ptr = Y.indptr.tolist()
    with atomic_open(path, "w", encoding="ascii", newline="\n") as f:
        f.write(f"{n_rows} {n_labels}\n")
        chunk = 65536
        for lo in range(0, n_rows, chunk):
            hi = min(lo + chunk, n_rows)
            f.write("".join(" ".join(pairs[ptr[i]:ptr[i + 1]]) + "\n" for i in range(lo, hi)))


# ----------------------------------------------------------------------------- texts
def read_texts(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """One text per line (the ``*.raw.txt`` files). Official files are latin-1: pass
    ``encoding="latin-1"`` for them. Line ends ``\\n`` or ``\\r\\n``; final newline optional."""
    check_encoding(encoding, source=str(path), key="encoding")
    data = check_input_file(path, "text file (one text a line)").read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFormatError(
            path, f"cannot decode byte {data[e.start:e.start + 1]!r} as {encoding} "
                  f"({e.reason}); the official *.raw.txt files are latin-1: "
                  "try encoding=\"latin-1\"", line=line) from None
    if not text:
        return []
    lines = text.split("\n")  # not splitlines(): latin-1 byte 0x85 would split there
    if text.endswith("\n"):
        lines.pop()
    if "\r" in text:
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    return lines


def write_texts(path: str | Path, texts: Iterable[str], encoding: str = "utf-8") -> None:
    """Write one text per line, atomically. A text with a line break (``\\n`` or ``\\r``)
    is an error naming its index: callers must replace line breaks first."""
    check_encoding(encoding, source=str(path), key="encoding")
    with atomic_open(path, "wb") as f:
        buf: list[str] = []
        first = 0  # index of buf[0]

        def flush():
            s = "".join(t + "\n" for t in buf)
            try:
                f.write(s.encode(encoding))
            except UnicodeEncodeError as e:
                item = first + s.count("\n", 0, e.start)
                raise DataFormatError(
                    path, f"text {item} has a character {s[e.start]!r} that {encoding} "
                          "cannot encode") from None

        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataFormatError(path, f"text {i} is a {type(t).__name__}, not a str")
            if "\n" in t or "\r" in t:
                raise DataFormatError(
                    path, f"text {i} contains a line break; texts must be one line each "
                          "(replace newlines before writing)")
            buf.append(t)
            if len(buf) >= 65536:
                flush()
                first += len(buf)
                buf.clear()
        flush()


# ----------------------------------------------------------------------------- filters
def read_filter(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a filter file (``row_index label_index`` per line) as an (n, 2) int64 array.

    An empty file gives shape (0, 2); blank lines are ignored. With ``shape`` given, the
    indices are checked against it (rows < shape[0], labels < shape[1]).
    """
    return parse_filter(path, shape)


def write_filter(path: str | Path, pairs) -> None:
    """Write (row, label) pairs, one ``row label`` line each, atomically."""
    pairs = np.asarray(pairs)
    if pairs.size == 0:
        pairs = pairs.reshape(0, 2)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{path}: filter pairs must have shape (n, 2), got {pairs.shape}")
    if not np.issubdtype(pairs.dtype, np.integer):
        if not np.all(pairs == np.round(pairs)):
            raise ValueError(f"{path}: filter pairs must be integers")
        pairs = pairs.astype(np.int64)
    if pairs.size and pairs.min() < 0:
        raise ValueError(f"{path}: filter indices must be non-negative")
    flat = pairs.tolist()
    with atomic_open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("".join(f"{r} {c}\n" for r, c in flat))


def apply_filter(pred, pairs, copy: bool = True) -> sp.csr_matrix:
    """Copy of ``pred`` (CSR) with the stored entries at the (row, label) ``pairs`` removed
    (eliminated from the structure, not just zeroed). Pairs with no stored entry are ignored.

    ``copy=False`` compacts ``pred``'s own arrays instead (no new memory; faster on large
    matrices): the returned matrix shares them and ``pred`` must not be used afterwards.
    """
    pred = sp.csr_matrix(pred)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    n_rows, n_labels = pred.shape
    if pairs.shape[0] == 0:
        return pred.copy() if copy else pred
    if pairs.min() < 0 or pairs[:, 0].max() >= n_rows or pairs[:, 1].max() >= n_labels:
        raise ValueError(
            f"filter pairs out of range for a prediction matrix of shape {pred.shape}")
    indptr = pred.indptr.astype(np.int64, copy=False)
    pair_keys = np.unique(pairs[:, 0] * n_labels + pairs[:, 1])
    rows = np.unique(pairs[:, 0])
    # positions of the stored entries of the affected rows only
    counts = indptr[rows + 1] - indptr[rows]
    total = int(counts.sum())
    drop = np.zeros(0, dtype=np.int64)
    if total:
        row_of = np.repeat(rows, counts)
        offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        pos = np.repeat(indptr[rows], counts) + offs
        keys = row_of * n_labels + pred.indices[pos]
        hit = np.isin(keys, pair_keys)
        drop = pos[hit]  # sorted: rows ascending, positions ascending within a row
    if drop.size == 0:
        return pred.copy() if copy else pred
    was_sorted = pred.has_sorted_indices
    removed = np.bincount(row_of[hit], minlength=n_rows)
    new_indptr = indptr.copy()
    new_indptr[1:] -= np.cumsum(removed)
    new_nnz = pred.nnz - drop.size
    if copy or drop.size > 100_000:
        keep = np.ones(pred.nnz, dtype=bool)
        keep[drop] = False
        data, indices = pred.data[keep], pred.indices[keep]
    else:  # shift the runs between dropped entries to the left, in place
        data, indices = pred.data, pred.indices
        ends = np.append(drop[1:], pred.nnz).tolist()
        for j, (d, e) in enumerate(zip(drop.tolist(), ends)):
            if e > d + 1:
                data[d - j:e - j - 1] = data[d + 1:e]
                indices[d - j:e - j - 1] = indices[d + 1:e]
        data, indices = data[:new_nnz], indices[:new_nnz]
    out = sp.csr_matrix((data, indices, new_indptr.astype(pred.indptr.dtype)),
                        shape=pred.shape, copy=False)
    out.has_sorted_indices = was_sorted
    return out


# ----------------------------------------------------------------------------- predictions
def read_predictions(path: str | Path) -> sp.csr_matrix:
    """Load a score matrix saved with ``scipy.sparse.save_npz`` as CSR."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "prediction file not found (expected a scipy.sparse "
                                    ".npz score matrix)")
    check_input_file(path, "scipy.sparse .npz score matrix")
    try:
        P = sp.load_npz(path)
    except Exception as e:  # zipfile/pickle/format errors of all kinds
        raise DataFormatError(
            path, f"not a scipy.sparse .npz matrix (save it with scipy.sparse.save_npz): "
                  f"{type(e).__name__}: {e}") from None
    if P.ndim != 2:
        raise DataFormatError(path, f"expected a 2-D sparse matrix, got {P.ndim}-D")
    return P if isinstance(P, sp.csr_matrix) else sp.csr_matrix(P)


def write_predictions(path: str | Path, P) -> None:
    """Save a sparse score matrix as an uncompressed ``.npz`` (fast to load), atomically."""
    P = sp.csr_matrix(P)
    with atomic_open(path, "wb") as f:
        sp.save_npz(f, P, compressed=False)
