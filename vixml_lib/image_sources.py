"""Image sources for the feature cache, and a resumable downloader into the authors' layout.

The feature-cache builder (frozen vision model -> one vector per image) reads images
through a small duck-typed contract, written here as a :class:`typing.Protocol`::

    class ImageSource(Protocol):
        image_map: np.ndarray   # (n_items, max_images) int64, -1 padded (left-packed:
                                # an item's images come first, -1 after); values are
                                # indices into this source's images, 0 .. len(src) - 1
        def __len__(self) -> int: ...                 # number of images
        def load(self, j: int) -> PIL.Image.Image: ... # image j as RGB; raises an
                                # Exception (FileNotFoundError, DataFormatError,
                                # ValueError, ...) for a missing or corrupt image
        def fingerprint(self) -> str: ...             # hex checksum of the content, for
                                # cache invalidation; memoised
        # instances are picklable (torch DataLoader workers receive them) and
        # ``load`` is safe to call from several processes (file handles are reopened
        # lazily in each process).

Implementations:

- :class:`BinImageSource`: the authors' layout, ``<split>_imgs_384_3.bin`` (one base64
  image a line) + ``<split>_imgs_384_3_map.npy`` (plain int64 map, see
  :mod:`vixml_lib.images`). The map is validated against the number of lines of the
  ``.bin`` at construction, so a map pointing past the end fails before any work.
  :func:`bin_source_for_split` builds one from ``(data_dir, split)``.
- :class:`FolderImageSource`: a folder of image files + a table (CSV with a header, or
  parquet) with columns ``item`` and ``file``. Missing files are not an error at
  construction (they are counted and logged); ``load`` raises ``FileNotFoundError``.
- :func:`download_images`: fetch a table of image URLs (columns ``item``, ``url``) with
  bounded concurrency, retries and timeouts, thumbnail them to 384x384 and write the
  authors' layout plus a failures CSV; interrupted runs resume from a journal and the
  result is byte-identical to an uninterrupted run.
- :func:`open_image_source`: pick one of the above by name, for notebooks.

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
import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import logging
import math
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator, NamedTuple, Protocol, runtime_checkable

import numpy as np
from PIL import Image, ImageOps

from .errors import DataFormatError
from .images import ImageBin, encode_image_line, read_image_map, write_image_bin
from .io_utils import atomic_open, atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "ImageSource",
    "BinImageSource",
    "FolderImageSource",
    "DownloadReport",
    "bin_source_for_split",
    "download_images",
    "open_image_source",
    "read_image_table",
    "bin_paths",
]

_HASH_CHUNK = 1 << 22  # 4 MiB per read when hashing
_MAX_BYTES = 50 * 1024 * 1024  # refuse image responses larger than this
_USER_AGENT = "vixml-workbench/0.1 (image downloader; python-urllib)"
_SCHEMES = ("http", "https", "file")
_JOURNAL_FORMAT = 1


@runtime_checkable
class ImageSource(Protocol):
    """What the feature-cache builder needs from an image store (see the module docstring)."""

    image_map: np.ndarray

    def __len__(self) -> int: ...

    def load(self, j: int) -> Image.Image: ...

    def fingerprint(self) -> str: ...


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def bin_paths(data_dir: str | Path, split: str, size: int = 384, max_images: int = 3) -> tuple[Path, Path]:
    """``(<data_dir>/<split>_imgs_<size>_<max_images>.bin, ..._map.npy)`` (384, 3: the authors' names)."""
    d = Path(data_dir)
    stem = f"{split}_imgs_{int(size)}_{int(max_images)}"
    return d / f"{stem}.bin", d / f"{stem}_map.npy"


def _hash_file(h: "hashlib._Hash", path: Path) -> None:
    """Feed ``path`` into ``h`` in chunks, preceded by its length (so concatenations are unambiguous)."""
    h.update(f"{path.stat().st_size}:".encode())
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_HASH_CHUNK)
            if not chunk:
                break
            h.update(chunk)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, composite transparency onto white, return an RGB image."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the image
        pass
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def _check_index(j, n: int, what: str) -> int:
    try:
        k = int(j)
    except (TypeError, ValueError):
        raise TypeError(f"image index must be an integer, got {type(j).__name__}") from None
    if k != j:
        raise TypeError(f"image index must be an integer, got {j!r}")
    if k < 0 or k >= n:
        hint = " (-1 in an image map means 'no image')" if k == -1 else ""
        raise IndexError(f"{what}: image index {k} out of range; there are {n} images{hint}")
    return k


# --------------------------------------------------------------------------------------
# tables (CSV / parquet) of (item, value) rows
# --------------------------------------------------------------------------------------


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
        raise DataFormatError(path, f"item {item} is out of range: there are {n_items} items (0..{n_items - 1})", line=line)
    return item


def _iter_table(path: Path, value_col: str) -> Iterator[tuple[object, object, int]]:
    """Raw ``(item, value, line)`` rows of a CSV/TSV(.gz) or parquet table."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(
                f"{path}: reading parquet tables needs pyarrow (pip install pyarrow); "
                "or save the table as CSV with columns item,{value_col}"
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
        return

    delimiter = "\t" if name.endswith((".tsv", ".tsv.gz", ".tab", ".tab.gz")) else ","
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(path, f"empty table; expected a header line with columns item,{value_col}", line=1) from None
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


# --------------------------------------------------------------------------------------
# BinImageSource
# --------------------------------------------------------------------------------------


class BinImageSource:
    """Images of one split in the authors' layout: a ``.bin`` + an int64 ``_map.npy``.

    ``image_map`` is validated at construction against the number of lines of the
    ``.bin`` (and ``n_items`` when given): a value past the end raises
    :class:`DataFormatError` naming the map file. ``load(j)`` decodes line ``j``;
    a corrupt line raises :class:`DataFormatError` naming the ``.bin`` line.
    ``fingerprint()`` is the sha256 of the ``.bin`` and map file bytes (streamed,
    computed once).
    """

    def __init__(self, bin_path: str | Path, map_path: str | Path, n_items: int | None = None):
        self.bin_path = Path(bin_path)
        self.map_path = Path(map_path)
        if not self.map_path.is_file():
            raise FileNotFoundError(f"{self.map_path}: image map not found")
        self._bin = ImageBin(self.bin_path)
        self.image_map = read_image_map(self.map_path, n_items=n_items, n_images=len(self._bin))
        self._fingerprint: str | None = None

    @property
    def n_items(self) -> int:
        return int(self.image_map.shape[0])

    @property
    def max_images(self) -> int:
        return int(self.image_map.shape[1])

    def __len__(self) -> int:
        return len(self._bin)

    def __repr__(self) -> str:
        return (
            f"BinImageSource({str(self.bin_path)!r}, {str(self.map_path)!r}, "
            f"n_images={len(self)}, n_items={self.n_items})"
        )

    def load(self, j: int) -> Image.Image:
        """Image ``j`` (a line number of the ``.bin``) as RGB."""
        return self._bin.image(j)

    def raw(self, j: int) -> bytes:
        """The base64 line of image ``j``."""
        return self._bin.raw(j)

    def fingerprint(self, refresh: bool = False) -> str:
        """sha256 (hex) over the ``.bin`` and map bytes; memoised unless ``refresh``."""
        if self._fingerprint is None or refresh:
            h = hashlib.sha256(b"vixml-bin-image-source-v1\0")
            _hash_file(h, self.bin_path)
            _hash_file(h, self.map_path)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def close(self) -> None:
        self._bin.close()


def bin_source_for_split(
    data_dir: str | Path, split: str, n_items: int | None = None, size: int = 384, max_images: int = 3
) -> BinImageSource:
    """:class:`BinImageSource` over ``<data_dir>/<split>_imgs_384_3.bin`` and ``..._map.npy``."""
    bin_path, map_path = bin_paths(data_dir, split, size, max_images)
    missing = [p for p in (bin_path, map_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"image files for split {split!r} not found: {', '.join(map(str, missing))} "
            f"(expected the authors' layout {bin_path.name} + {map_path.name} in {Path(data_dir)}; "
            "build it with vixml_lib.image_sources.download_images, or use a FolderImageSource)"
        )
    return BinImageSource(bin_path, map_path, n_items=n_items)


# --------------------------------------------------------------------------------------
# FolderImageSource
# --------------------------------------------------------------------------------------


class FolderImageSource:
    """Image files in a folder, assigned to items by a table with columns ``item``, ``file``.

    ``file`` is a path relative to ``folder``. Several rows per item are allowed (order
    kept, at most ``max_images``). A file listed by several rows (or items) is one image
    (one index), so it is featurised once. Image indices follow the first occurrence in
    ``(item, row)`` order. ``n_items`` is given or inferred as max item + 1; items without
    rows get ``-1`` everywhere.

    Missing files are counted and logged at construction (``self.n_missing``) but are no
    error: ``load`` raises ``FileNotFoundError`` for them, and ``ValueError`` (a
    :class:`DataFormatError`) for an unreadable file. Images are returned as RGB
    (EXIF orientation applied, transparency on white), thumbnailed to fit within
    ``thumbnail`` x ``thumbnail`` when ``thumbnail`` is set (default: untouched).

    ``fingerprint()`` hashes the table bytes, ``max_images``, ``n_items`` and each
    file's path, size and mtime (not the content: fast); memoised unless
    ``fingerprint(refresh=True)``.
    """

    def __init__(
        self,
        folder: str | Path,
        table_path: str | Path,
        max_images: int = 3,
        n_items: int | None = None,
        thumbnail: int | None = None,
        check_files: bool = True,
    ):
        self.folder = Path(folder)
        self.table_path = Path(table_path)
        self.max_images = int(max_images)
        self.thumbnail = None if thumbnail is None else int(thumbnail)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: image folder not found")
        values, n, self.n_dropped = read_image_table(self.table_path, "file", self.max_images, n_items)
        files: list[str] = []
        index: dict[str, int] = {}
        image_map = np.full((n, self.max_images), -1, dtype=np.int64)
        for i, lst in enumerate(values):
            for k, rel in enumerate(lst):
                key = os.path.normpath(rel)
                j = index.get(key)
                if j is None:
                    j = index[key] = len(files)
                    files.append(key)
                image_map[i, k] = j
        self.files = files
        self.image_map = image_map
        self._fingerprint: str | None = None
        self.n_missing = 0
        if check_files:
            missing = [f for f in files if not (self.folder / f).is_file()]
            self.n_missing = len(missing)
            if missing:
                log.warning(
                    "%s: %d of %d image file(s) listed in %s are missing (e.g. %s); loading them will fail",
                    self.folder, len(missing), len(files), self.table_path, missing[:3],
                )

    @property
    def n_items(self) -> int:
        return int(self.image_map.shape[0])

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (
            f"FolderImageSource({str(self.folder)!r}, {str(self.table_path)!r}, "
            f"n_images={len(self)}, n_items={self.n_items})"
        )

    def path(self, j: int) -> Path:
        """The file of image ``j``."""
        return self.folder / self.files[_check_index(j, len(self), str(self.folder))]

    def load(self, j: int) -> Image.Image:
        p = self.path(j)
        try:
            with Image.open(p) as im:
                im.load()
                img = _to_rgb(im)
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: image file not found (image {j}, listed in {self.table_path})") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataFormatError(p, f"not a readable image ({type(e).__name__}: {e})") from None
        if self.thumbnail:
            img.thumbnail((self.thumbnail, self.thumbnail))
        return img

    def fingerprint(self, refresh: bool = False) -> str:
        if self._fingerprint is None or refresh:
            h = hashlib.sha256(b"vixml-folder-image-source-v1\0")
            h.update(f"max_images={self.max_images};n_items={self.n_items};thumbnail={self.thumbnail}\0".encode())
            _hash_file(h, self.table_path)
            for rel in self.files:
                try:
                    st = (self.folder / rel).stat()
                    meta = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:
                    meta = "missing"
                h.update(f"{rel}\0{meta}\0".encode("utf-8", errors="surrogateescape"))
            self._fingerprint = h.hexdigest()
        return self._fingerprint


# --------------------------------------------------------------------------------------
# download_images
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class DownloadReport:
    """Outcome of :func:`download_images`.

    Row counts are over ``(item, url)`` rows kept (after ``max_images``); URL counts over
    distinct URLs (a URL shared by several rows is fetched once and stored once).
    """

    requested: int  # (item, url) rows requested (after dropping rows beyond max_images)
    unique_urls: int  # distinct URLs among them
    downloaded: int  # URLs fetched successfully in this run
    failed: int  # (item, url) rows that failed (rows of the failures CSV), this run or journal
    reused: int  # URLs whose result (image or failure) came from the journal of an earlier run
    dropped: int  # table rows beyond max_images, ignored
    n_images: int  # lines of the .bin
    n_items: int
    items_with_images: int
    seconds: float
    bin_path: Path
    map_path: Path
    failures_path: Path

    def __str__(self) -> str:
        return (
            f"{self.n_images} images for {self.items_with_images}/{self.n_items} items "
            f"({self.requested} requested, {self.downloaded} downloaded, {self.reused} reused, "
            f"{self.failed} failed, {self.dropped} dropped) in {self.seconds:.1f}s -> {self.bin_path}"
        )


@dataclasses.dataclass
class _Result:
    ok: bool
    line: bytes = b""  # base64 JPEG, when ok
    reason: str = ""  # when not ok
    attempts: int = 0


class _Permanent(Exception):
    """A failure that retrying will not fix."""


class _Transient(Exception):
    """A failure worth retrying (timeout, 5xx, connection trouble)."""


_RETRY_HTTP = {408, 425, 429}


def _fetch_bytes(opener: urllib.request.OpenerDirector, url: str, timeout: float, max_bytes: int) -> tuple[bytes, str]:
    """One request. Returns (body, content-type); raises _Permanent or _Transient."""
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"})
    try:
        with opener.open(req, timeout=timeout) as resp:
            ctype = resp.headers.get("Content-Type", "") if resp.headers is not None else ""
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        code = int(e.code)
        try:
            e.close()
        except Exception:
            pass
        if code >= 500 or code in _RETRY_HTTP:
            raise _Transient(f"http {code}") from None
        raise _Permanent(f"http {code}") from None
    except urllib.error.URLError as e:
        r = e.reason
        if isinstance(r, (socket.timeout, TimeoutError)):
            raise _Transient("timeout") from None
        if isinstance(r, (FileNotFoundError, IsADirectoryError)):
            raise _Permanent("file not found") from None
        if isinstance(r, PermissionError):
            raise _Permanent("permission denied") from None
        if isinstance(r, OSError):
            raise _Transient(f"connection error ({type(r).__name__})") from None
        raise _Permanent(f"url error ({r})") from None
    except (socket.timeout, TimeoutError):
        raise _Transient("timeout") from None
    except http.client.InvalidURL as e:
        raise _Permanent(f"invalid url ({e})") from None
    except (http.client.HTTPException, ConnectionError) as e:
        raise _Transient(f"connection error ({type(e).__name__})") from None
    except OSError as e:
        raise _Transient(f"connection error ({type(e).__name__})") from None
    if len(data) > max_bytes:
        raise _Permanent(f"too large (more than {max_bytes} bytes)")
    if not data:
        raise _Permanent("empty response")
    return data, (ctype or "").split(";")[0].strip()


def _encode_thumbnail(data: bytes, ctype: str, size: int, quality: int) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            img = _to_rgb(im)
    except Exception as e:  # UnidentifiedImageError, truncated files, decompression bombs...
        kind = "too many pixels" if isinstance(e, Image.DecompressionBombError) else "not a readable image"
        raise _Permanent(f"{kind} ({len(data)} bytes, content-type {ctype or 'unknown'})") from None
    img.thumbnail((size, size))
    return encode_image_line(img, "JPEG", quality=quality)


def _fetch_one(
    url: str,
    opener: urllib.request.OpenerDirector,
    timeout: float,
    retries: int,
    backoff: float,
    size: int,
    quality: int,
    max_bytes: int = _MAX_BYTES,
) -> _Result:
    """Fetch, decode, thumbnail and encode one URL, with retries. Never raises an Exception."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        return _Result(False, reason=f"unsupported url scheme {scheme!r}" if scheme else "not a url (no scheme)")
    attempts = 0
    reason = ""
    while True:
        attempts += 1
        try:
            data, ctype = _fetch_bytes(opener, url, timeout, max_bytes)
            line = _encode_thumbnail(data, ctype, size, quality)
            return _Result(True, line=line, attempts=attempts)
        except _Permanent as e:
            return _Result(False, reason=str(e), attempts=attempts)
        except _Transient as e:
            reason = str(e)
        except Exception as e:  # anything unexpected: record it, do not kill the run
            return _Result(False, reason=f"error ({type(e).__name__}: {e})", attempts=attempts)
        if attempts > retries:
            return _Result(False, reason=reason, attempts=attempts)
        time.sleep(backoff * (2 ** (attempts - 1)))


class _Rec(NamedTuple):
    """A finished URL, as kept in memory (small: millions of them for the big datasets)."""

    ok: bool
    attempts: int
    off: int = 0  # where its line starts in images.b64, when ok
    length: int = 0
    reason: str = ""  # when not ok


class _Journal:
    """Append-only record of finished URLs in ``<out_dir>/<split>_download.partial/``.

    ``images.b64`` holds the encoded lines (appended as they arrive), ``journal.jsonl``
    one JSON object per finished URL: ``{"url", "ok", "attempts", "off", "len"}`` or
    ``{"url", "ok": false, "attempts", "reason"}``. The image bytes are flushed before
    their journal line, so every journal line points at complete data; a torn last
    line (crash mid-write) is ignored on resume. ``meta.json`` holds the settings that
    change the encoded bytes; a journal with other settings is discarded.
    """

    def __init__(self, folder: Path, meta: dict):
        self.folder = folder
        self.meta = meta
        self.data_path = folder / "images.b64"
        self.log_path = folder / "journal.jsonl"
        self.meta_path = folder / "meta.json"
        self._lock_f = None
        self._data_f = None
        self._log_f = None
        self._read_f = None

    def open(self) -> dict[str, _Rec]:
        """Open (creating or resuming) and return the finished records by URL."""
        records: dict[str, _Rec] = {}
        if self.folder.exists():
            try:
                old = json.loads(self.meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old != self.meta:
                log.warning("%s: journal from other settings (%s, now %s); starting afresh", self.folder, old, self.meta)
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock()
        if not self.meta_path.exists():
            with atomic_open(self.meta_path, "w", encoding="utf-8") as f:
                json.dump(self.meta, f)
        data_size = self.data_path.stat().st_size if self.data_path.exists() else 0
        if self.log_path.exists():
            with open(self.log_path, "rb") as f:
                for raw in f:
                    try:
                        d = json.loads(raw)
                        url = str(d["url"])
                        if d["ok"]:
                            rec = _Rec(True, int(d["attempts"]), int(d["off"]), int(d["len"]))
                            if rec.off + rec.length > data_size:
                                continue  # data lost (should not happen: data is flushed first)
                        else:
                            rec = _Rec(False, int(d["attempts"]), reason=str(d["reason"]))
                    except (ValueError, KeyError, TypeError):
                        continue  # torn or foreign line
                    records[url] = rec
        self._data_f = open(self.data_path, "ab")
        self._log_f = open(self.log_path, "ab")
        self._data_pos = self._data_f.seek(0, os.SEEK_END)
        return records

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return
        f = open(self.folder / "lock", "a+b")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RuntimeError(f"{self.folder}: another download into this folder is running (lock held)") from None
        self._lock_f = f

    def add(self, url: str, res: _Result) -> _Rec:
        if res.ok:
            rec = _Rec(True, res.attempts, self._data_pos, len(res.line))
            self._data_f.write(res.line)
            self._data_f.write(b"\n")
            self._data_f.flush()
            self._data_pos += len(res.line) + 1
            d = {"url": url, "ok": True, "attempts": rec.attempts, "off": rec.off, "len": rec.length}
        else:
            rec = _Rec(False, res.attempts, reason=res.reason)
            d = {"url": url, "ok": False, "attempts": rec.attempts, "reason": rec.reason}
        self._log_f.write(json.dumps(d, ensure_ascii=True).encode("ascii") + b"\n")
        self._log_f.flush()
        return rec

    def start_reading(self) -> None:
        self._data_f.flush()
        self._read_f = open(self.data_path, "rb")

    def read_line(self, rec: _Rec) -> bytes:
        self._read_f.seek(rec.off)
        return self._read_f.read(rec.length)

    def close(self) -> None:
        for f in (self._data_f, self._log_f, self._read_f):
            if f is not None:
                f.close()
        self._data_f = self._log_f = self._read_f = None
        if self._lock_f is not None:
            self._lock_f.close()  # releases the flock
            self._lock_f = None


def download_images(
    url_table: str | Path,
    out_dir: str | Path,
    split: str,
    n_items: int | None = None,
    max_images: int = 3,
    size: int = 384,
    workers: int = 8,
    timeout: float = 10.0,
    retries: int = 2,
    backoff: float = 0.5,
    progress: bool = True,
    quality: int = 90,
    retry_failed: bool = False,
    keep_journal: bool = False,
) -> DownloadReport:
    """Download the images of a URL table into the authors' layout.

    ``url_table``: CSV/parquet with columns ``item``, ``url`` (several rows per item,
    order kept, at most ``max_images`` per item). Only ``http``, ``https`` and ``file``
    URLs are fetched; others are recorded failures. Each distinct URL is fetched once
    by a pool of ``workers`` threads (each request has ``timeout`` seconds; timeouts,
    5xx/408/429 answers and connection errors are retried up to ``retries`` times
    with exponential ``backoff`` (0.5 s, 1 s, 2 s, ...); 404 and other 4xx are not).
    Images are thumbnailed to fit within ``size`` x ``size`` (RGB, transparency on
    white, EXIF orientation applied) and stored as base64 JPEG (``quality``).

    Writes, atomically at the end, into ``out_dir``:

    - ``<split>_imgs_<size>_<max_images>.bin`` (``<split>_imgs_384_3.bin`` by default):
      one image a line, ordered by each URL's first ``(item, row)`` occurrence, so the
      order never depends on completion times;
    - ``..._map.npy``: int64 ``(n_items, max_images)``; an item's successful images in
      row order, left-packed, then ``-1`` (failed images are simply absent);
    - ``<split>_download_failures.csv``: ``item,url,reason,attempts`` per failed row.

    Resumable: finished URLs (images and failures) are journaled in
    ``<split>_download.partial/``; rerunning after an interruption fetches only the
    rest (journaled failures are reused unless ``retry_failed``) and produces
    byte-identical outputs. The journal is removed on success unless ``keep_journal``.
    """
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    url_table = Path(url_table)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    values, n, n_dropped = read_image_table(url_table, "url", max_images, n_items)
    # distinct URLs in (item, row) order of first occurrence: that is the .bin order
    order: dict[str, int] = {}
    n_rows = 0
    for lst in values:
        for url in lst:
            n_rows += 1
            if url not in order:
                order[url] = len(order)
    urls = list(order)
    bin_path, map_path = bin_paths(out_dir, split, size, max_images)
    failures_path = out_dir / f"{split}_download_failures.csv"
    out_dir.mkdir(parents=True, exist_ok=True)

    journal = _Journal(out_dir / f"{split}_download.partial", {"format": _JOURNAL_FORMAT, "size": int(size), "quality": int(quality)})
    done = journal.open()
    try:
        if retry_failed:
            done = {u: r for u, r in done.items() if r.ok}
        reused = sum(1 for u in urls if u in done)
        todo = [u for u in urls if u not in done]
        if reused:
            log.info("%s: resuming; %d of %d URL(s) already done", journal.folder, reused, len(urls))
        opener = urllib.request.build_opener()
        downloaded = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(urls), initial=reused, unit="img", desc=f"download {split}", dynamic_ncols=True)
        ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vixml-download")
        inflight: dict = {}
        it = iter(todo)
        max_inflight = 2 * workers

        def record(fut, url):
            nonlocal downloaded
            res = fut.result()
            done[url] = journal.add(url, res)
            downloaded += int(res.ok)
            if bar is not None:
                bar.update(1)

        def fill():
            while len(inflight) < max_inflight:
                url = next(it, None)
                if url is None:
                    return
                fut = ex.submit(_fetch_one, url, opener, timeout, retries, backoff, size, quality)
                inflight[fut] = url

        try:
            fill()
            while inflight:
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in finished:
                    record(fut, inflight[fut])
                    del inflight[fut]
                fill()
        except BaseException:
            # interrupted: stop queued work, keep what finished so a rerun need not refetch it
            for fut in inflight:
                fut.cancel()
            ex.shutdown(wait=True, cancel_futures=True)
            for fut, url in inflight.items():
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    try:
                        record(fut, url)
                    except Exception:  # pragma: no cover - best effort
                        pass
            raise
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()

        # ---- assemble the outputs, in (item, row) order ----
        line_of: dict[str, int] = {}
        ok_urls = []
        for url in urls:
            if done[url].ok:
                line_of[url] = len(ok_urls)
                ok_urls.append(url)
        image_map = np.full((n, max_images), -1, dtype=np.int64)
        failures = []
        for i, lst in enumerate(values):
            k = 0
            for url in lst:
                rec = done[url]
                if rec.ok:
                    image_map[i, k] = line_of[url]
                    k += 1
                else:
                    failures.append((i, url, rec.reason, rec.attempts))
        journal.start_reading()

        def lines():
            for url in ok_urls:
                rec = done[url]
                data = journal.read_line(rec)
                if len(data) != rec.length:
                    raise RuntimeError(f"{journal.data_path}: journal data for {url} is truncated; delete {journal.folder} and rerun")
                yield data

        n_images = write_image_bin(bin_path, lines())
        with atomic_path(map_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, image_map, allow_pickle=False)
        with atomic_open(failures_path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["item", "url", "reason", "attempts"])
            w.writerows(failures)
    finally:
        journal.close()
    if not keep_journal:
        shutil.rmtree(journal.folder, ignore_errors=True)

    report = DownloadReport(
        requested=n_rows,
        unique_urls=len(urls),
        downloaded=downloaded,
        failed=len(failures),
        reused=reused,
        dropped=n_dropped,
        n_images=n_images,
        n_items=n,
        items_with_images=int((image_map[:, 0] >= 0).sum()) if n else 0,
        seconds=time.monotonic() - t0,
        bin_path=bin_path,
        map_path=map_path,
        failures_path=failures_path,
    )
    if failures:
        log.warning("%d of %d image(s) failed; see %s", len(failures), n_rows, failures_path)
    log.info("%s", report)
    return report


# --------------------------------------------------------------------------------------
# open_image_source
# --------------------------------------------------------------------------------------


def open_image_source(data_dir: str | Path, split: str, kind: str = "bin", **kw) -> BinImageSource | FolderImageSource:
    """Open the images of ``split`` in ``data_dir``, for notebooks.

    - ``kind="bin"``: :func:`bin_source_for_split` (``<split>_imgs_384_3.bin`` + map);
      keywords ``n_items``, ``size``, ``max_images``.
    - ``kind="folder"``: :class:`FolderImageSource` with ``folder`` (default
      ``<data_dir>/<split>_images/``) and ``table`` (default
      ``<data_dir>/<split>_images.csv``, or ``.parquet`` when only that exists);
      other keywords go to the class.
    - ``kind="url"``: download with :func:`download_images` from ``url_table``
      (default ``<data_dir>/<split>_image_urls.csv`` / ``.parquet``) into ``data_dir``
      unless the ``.bin`` and map exist already (``redownload=True`` forces it), then
      open the result as ``"bin"``. Other keywords go to :func:`download_images`.
    """
    data_dir = Path(data_dir)

    def default_table(stem: str) -> Path:
        csv_p, pq_p = data_dir / f"{stem}.csv", data_dir / f"{stem}.parquet"
        return pq_p if (not csv_p.exists() and pq_p.exists()) else csv_p

    if kind == "bin":
        return bin_source_for_split(data_dir, split, **kw)
    if kind == "folder":
        folder = kw.pop("folder", data_dir / f"{split}_images")
        table = kw.pop("table", None) or kw.pop("table_path", None) or default_table(f"{split}_images")
        return FolderImageSource(folder, table, **kw)
    if kind == "url":
        url_table = kw.pop("url_table", None) or default_table(f"{split}_image_urls")
        redownload = kw.pop("redownload", False)
        size, max_images = kw.get("size", 384), kw.get("max_images", 3)
        n_items = kw.get("n_items")
        bin_path, map_path = bin_paths(data_dir, split, size, max_images)
        if redownload or not (bin_path.is_file() and map_path.is_file()):
            download_images(url_table, data_dir, split, **kw)
        return bin_source_for_split(data_dir, split, n_items=n_items, size=size, max_images=max_images)
    raise ValueError(f"unknown image source kind {kind!r}; expected 'bin', 'folder' or 'url'")
