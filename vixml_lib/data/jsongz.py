"""Reading one split of the XML repository's ``{trn,tst,lbl}.json.gz`` files, every byte checked.

One JSON object a line: ``uid``, ``title``, ``content`` and, for ``trn`` / ``tst``,
``target_ind`` (label indices, integers) and ``target_rel`` (their values, numbers; 1.0 when
missing). Every problem is a :class:`~vixml_lib.errors.DataFormatError` naming the file and,
where there is one, the line:

- an empty (0-byte) file, a file that is not gzip, a truncated gzip stream, corrupt gzip
  data (a CRC mismatch, a broken deflate block); when a line fails to parse, the rest of the
  stream is checked first, so a corrupt middle is reported as corruption and not as "not
  valid JSON" on the garbage it decompressed to;
- a line that is not UTF-8, not JSON, not an object with a string ``title``;
- ``target_ind`` that is not a list of integers (booleans are not integers), out of range or
  repeated; ``target_rel`` that is not a list of finite numbers as long as ``target_ind``;
- a split without any item.
"""
from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DataFormatError

__all__ = ["read_json_split"]

_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _gzip_problem(path: Path, e: BaseException) -> str:
    if isinstance(e, EOFError):
        return ("truncated gzip file: it ends before the end of its compressed data "
                "(an interrupted download or copy?)")
    text = str(e)
    if isinstance(e, gzip.BadGzipFile) and text.startswith("Not a gzipped file"):
        with open(path, "rb") as f:
            head = f.read(2)
        hint = " (it looks like uncompressed JSON: compress it with gzip)" if head[:1] in (b"{", b"[") else ""
        return f"not a gzip file{hint}"
    return f"corrupt gzip data ({text})"


def _stream_damage(path: Path) -> str | None:
    """Why the gzip stream of ``path`` is damaged (decompressing all of it), or None when intact."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except _GZIP_ERRORS as e:
        return _gzip_problem(path, e)
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, bytes)`` of a gzip file; gzip-level problems as DataFormatError."""
    if path.is_dir():
        raise DataFormatError(path, "is a folder, expected a gzip file of JSON lines")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "empty file (0 bytes), expected gzip-compressed JSON lines")
    try:
        with gzip.open(path, "rb") as f:
            yield from enumerate(f, start=1)
    except _GZIP_ERRORS as e:
        raise DataFormatError(path, _gzip_problem(path, e)) from None


def _bad_line(path: Path, message: str, lineno: int) -> DataFormatError:
    """The error for a line that does not parse, unless the gzip stream is the real culprit."""
    damage = _stream_damage(path)
    if damage:
        return DataFormatError(path, f"{damage}; line {lineno} decompressed to garbage ({message})")
    return DataFormatError(path, message, lineno)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _labels(path: Path, obj: dict, n_labels: int, lineno: int) -> tuple[list[int], list[float]]:
    """Sorted ``(indices, values)`` of one item's ``target_ind`` / ``target_rel``."""
    uid = f"(uid {obj.get('uid')!r})"
    ind = obj.get("target_ind")
    if not isinstance(ind, list) or not all(_is_int(i) for i in ind):
        raise DataFormatError(path, f"'target_ind' must be a list of integers {uid}", lineno)
    rel = obj.get("target_rel", [1.0] * len(ind))
    if not isinstance(rel, list) or len(rel) != len(ind):
        raise DataFormatError(path, f"'target_rel' must be a list as long as 'target_ind' ({len(ind)}) {uid}", lineno)
    bad = [v for v in rel if not _is_number(v)]
    if bad:
        raise DataFormatError(path, f"'target_rel' must hold finite numbers, found {bad[0]!r} {uid}", lineno)
    out = [i for i in ind if not 0 <= i < n_labels]
    if out:
        raise DataFormatError(path, f"label index {out[0]} out of range [0, {n_labels}) {uid}", lineno)
    if len(set(ind)) != len(ind):
        raise DataFormatError(path, f"repeated label index in 'target_ind' {uid}", lineno)
    order = np.argsort(ind, kind="stable")
    return np.asarray(ind, dtype=np.int64)[order].tolist(), np.asarray(rel, dtype=np.float64)[order].tolist()


def _text(path: Path, obj, title_only: bool, lineno: int) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("title"), str):
        raise DataFormatError(path, "expected an object with a string 'title' field", lineno)
    text = obj["title"]
    if not title_only:
        content = obj.get("content") or ""
        if not isinstance(content, str):
            raise DataFormatError(path, "'content' must be a string", lineno)
        text = f"{text} {content}"
    return " ".join(text.split())


def read_json_split(path: str | Path, title_only: bool, n_labels: int | None):
    """``(texts, Y)`` of one json.gz split; ``Y`` (float32 CSR, items x ``n_labels``) only when
    ``n_labels`` is given (``trn`` / ``tst``), else None (``lbl``)."""
    path = Path(path)
    texts: list[str] = []
    indptr, indices, values = [0], [], []
    for lineno, raw in _lines(path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _bad_line(path, f"not UTF-8 (byte {raw[e.start:e.start + 1]!r} at column {e.start + 1})",
                            lineno) from None
        if not line.strip():
            raise _bad_line(path, "empty line, expected one JSON object", lineno)
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise _bad_line(path, f"not valid JSON ({getattr(e, 'msg', 'nested too deeply')})", lineno) from None
        texts.append(_text(path, obj, title_only, lineno))
        if n_labels is not None:
            ind, rel = _labels(path, obj, n_labels, lineno)
            indices.extend(ind)
            values.extend(rel)
            indptr.append(len(indices))
    if not texts:
        raise DataFormatError(path, "no items: the file holds no JSON lines")
    if n_labels is None:
        return texts, None
    Y = sp.csr_matrix(
        (np.asarray(values, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(texts), n_labels),
    )
    return texts, Y
