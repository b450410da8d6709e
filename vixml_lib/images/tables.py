"""Item tables: CSV / parquet tables of ``(item, value)`` rows, read into per-item lists.

The folder source reads a table with columns ``item``, ``file``; the downloader one with
columns ``item``, ``url``. Both go through :func:`read_image_table`:

Tables (CSV or parquet): one row per image, several rows per item allowed; row order
is kept per item, at most ``max_images`` rows are used per item (extra rows are dropped
with a logged warning). ``item`` must be a non-negative integer; rows with an empty
``file``/``url`` cell are skipped (the item simply has one image fewer). A bad row
raises :class:`~vixml_lib.errors.DataFormatError` naming the table and line (the header
is line 1; for parquet the "line" is the row number + 1, as if there were a header).
``.csv``, ``.tsv`` (tab-separated) and their ``.gz`` versions are read with the
standard :mod:`csv` module; ``.parquet`` / ``.pq`` need ``pyarrow``.
"""
from __future__ import annotations

import csv
import gzip
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataFormatError

log = logging.getLogger(__name__)

__all__ = ["read_image_table"]


def _parse_item(raw, path: Path, line: int, n_items: int | None) -> int:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        raise DataFormatError(path, "empty 'item' value; expected a non-negative integer item index", line=line)
    if isinstance(raw, bool):
        raise DataFormatError(path, f"'item' must be a non-negative integer, got {raw!r}", line=line)
    if isinstance(raw, (int, np.integer)):
        item = int(raw)
    elif isinstance(raw, (float, np.floating)):
        if not math.isfinite(raw) or float(raw) != int(raw):
            raise DataFormatError(path, f"'item' must be a non-negative integer, got {raw!r}", line=line)
        item = int(raw)
    else:
        s = str(raw).strip()
        try:
            item = int(s, 10)
        except ValueError:
            raise DataFormatError(path, f"'item' must be a non-negative integer, got {s!r}", line=line) from None
    if item < 0:
        raise DataFormatError(path, f"'item' must be a non-negative integer, got {item}", line=line)
    if n_items is not None and item >= n_items:
        raise DataFormatError(path, f"item {item} is out of range: there are {n_items} items (0..{n_items - 1})",
                              line=line)
    return item


def _iter_parquet(path: Path, value_col: str) -> Iterator[tuple[object, object, int]]:
    """Raw ``(item, value, line)`` rows of a parquet table (line = row + 2, as if it had a header)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"{path}: reading parquet tables needs pyarrow (pip install pyarrow); "
            f"or save the table as CSV with columns item,{value_col}"
        ) from None
    try:
        schema_names = pq.read_schema(path).names
    except Exception as e:
        raise DataFormatError(path, f"not a readable parquet file ({e})") from None
    for col in ("item", value_col):
        if col not in schema_names:
            raise DataFormatError(path, f"missing column {col!r}; the table has columns {schema_names}", line=1)
    cols = pq.read_table(path, columns=["item", value_col]).to_pydict()
    for i, (item, value) in enumerate(zip(cols["item"], cols[value_col])):
        yield item, value, i + 2


def _iter_csv(path: Path, value_col: str) -> Iterator[tuple[object, object, int]]:
    """Raw ``(item, value, line)`` rows of a CSV/TSV table, gzipped or not; blank lines skipped."""
    name = path.name.lower()
    delimiter = "\t" if name.endswith((".tsv", ".tsv.gz", ".tab", ".tab.gz")) else ","
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(path, f"empty table; expected a header line with columns item,{value_col}",
                                  line=1) from None
        except csv.Error as e:
            raise DataFormatError(path, f"bad CSV ({e})", line=reader.line_num or 1) from None
        header = [h.strip() for h in header]
        idx = {}
        for col in ("item", value_col):
            if col not in header:
                raise DataFormatError(path, f"missing column {col!r}; the header has columns {header}", line=1)
            idx[col] = header.index(col)
        ii, vi = idx["item"], idx[value_col]
        need = max(ii, vi) + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DataFormatError(path, f"bad CSV ({e})", line=reader.line_num) from None
            if not row or all(c.strip() == "" for c in row):
                continue  # blank line
            if len(row) < need:
                missing = [c for c, k in (("item", ii), (value_col, vi)) if k >= len(row)]
                raise DataFormatError(
                    path, f"row has {len(row)} field(s), no value for column(s) {missing}", line=reader.line_num
                )
            yield row[ii], row[vi], reader.line_num


def _iter_table(path: Path, value_col: str) -> Iterator[tuple[object, object, int]]:
    """Raw ``(item, value, line)`` rows of a CSV/TSV(.gz) or parquet table."""
    if path.name.lower().endswith((".parquet", ".pq")):
        return _iter_parquet(path, value_col)
    return _iter_csv(path, value_col)


def read_image_table(
    path: str | Path, value_col: str, max_images: int = 3, n_items: int | None = None
) -> tuple[list[list[str]], int, int]:
    """Read an ``item,<value_col>`` table into per-item value lists.

    Returns ``(values, n_items, n_dropped)``: ``values[i]`` is the list of item ``i``'s
    values in table order (at most ``max_images``), ``n_items`` the number of items
    (given, or max item + 1), ``n_dropped`` the number of rows dropped beyond
    ``max_images``. Rows with an empty value are skipped. Bad rows raise
    :class:`DataFormatError` with the table path and line.
    """
    path = Path(path)
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    if n_items is not None and n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image table not found")
    per_item: dict[int, list[str]] = {}
    dropped: dict[int, int] = {}
    n_empty = 0
    max_item = -1
    for raw_item, raw_value, line in _iter_table(path, value_col):
        item = _parse_item(raw_item, path, line, n_items)
        max_item = max(max_item, item)
        value = "" if raw_value is None else str(raw_value).strip()
        if not value:
            n_empty += 1
            continue
        lst = per_item.setdefault(item, [])
        if len(lst) >= max_images:
            dropped[item] = dropped.get(item, 0) + 1
        else:
            lst.append(value)
    n = n_items if n_items is not None else max_item + 1
    values = [per_item.get(i, []) for i in range(n)]
    n_dropped = sum(dropped.values())
    if n_dropped:
        first = sorted(dropped)[:5]
        log.warning(
            "%s: %d row(s) beyond max_images=%d dropped, for %d item(s) (first items: %s)",
            path, n_dropped, max_images, len(dropped), first,
        )
    if n_empty:
        log.info("%s: %d row(s) with an empty %r skipped", path, n_empty, value_col)
    return values, n, n_dropped
