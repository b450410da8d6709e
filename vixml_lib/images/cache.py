"""The image feature cache: one frozen-encoder vector per image, on disk. Format and reader.

ViXML encodes every product image ONCE with a frozen vision model and trains on the
cached vectors. This module defines the cache folder and reads it; it is written by
:func:`vixml_lib.images.cache_build.build_feature_cache` (encoding a source) or
:func:`vixml_lib.images.authors.import_authors_features` (the authors' precomputed
SigLIP2 features), both through :mod:`vixml_lib.images.cache_write`.

Format (one folder per dataset split and encoder, conventionally
``<data_dir>/features/<encoder-slug>/<split>/``, see :func:`feature_cache_dir`; no
pickle anywhere, every ``.npy`` loads with ``allow_pickle=False``):

- ``header.json``: ``format`` ("vixml-feature-cache"), ``format_version``, ``encoder``
  (name), ``encoder_fingerprint``, ``dim``, ``count`` (number of images), ``n_items``,
  ``max_images``, ``dtype`` ("float16"), ``byte_order`` ("little"), ``source_fingerprint``,
  ``map_sha256``, ``batch_size`` / ``chunk_size`` (they fix the batches, hence the exact
  bytes), ``origin`` ("encoded" or "imported"), ``failures`` (count) and ``finished``.
  It holds no timestamps, so two builds of the same inputs are byte-identical.
- ``vectors.f16``: raw little-endian float16, ``count x dim``, row ``j`` = image ``j``
  of the source (every image is encoded once, however many items use it). Rows of
  failed images are zeros.
- ``map.npy``: the source's image map, int64 ``(n_items, max_images)``, ``-1`` padded,
  stored as it is (so rows keep pointing at image indices of the source).
- ``valid.npy``: bool ``(count,)``, False for images that could not be read. An item
  slot is usable when ``map >= 0 and valid[map]``: :meth:`FeatureCache.read_batch`
  returns exactly that as its mask, so failed images are masked like missing ones.
- ``failures.jsonl``: one JSON object a line per failed image:
  ``{"image": j, "items": [rows using it], "reason": "..."}``.

While building, two more files exist: ``progress.json`` and ``failures.jsonl.partial``
(see :mod:`vixml_lib.images.cache_build` for how a killed build resumes).

Reading: :class:`FeatureCache` exposes the whole matrix as a read-only ``np.memmap``
(``.vectors``) but gathers batches with positioned reads of just the needed rows, so
random batches from a 9 GB cache (LF-AmazonTitles-1.3M) keep the resident size around
the batch size (~170 MB measured, against ~8.7 GB when the same reads go through the
memory map; see ``benchmarks/bench_image_cache.py``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError
from ..io_utils import read_json
from .maps import validate_image_map

__all__ = [
    "FeatureCache",
    "feature_cache_dir",
    "read_header",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "vixml-feature-cache"
FORMAT_VERSION = 1
HEADER = "header.json"
VECTORS = "vectors.f16"
MAP = "map.npy"
VALID = "valid.npy"
FAILURES = "failures.jsonl"
PROGRESS = "progress.json"
FAILURES_PARTIAL = "failures.jsonl.partial"
ALL_FILES = (HEADER, VECTORS, MAP, VALID, FAILURES, PROGRESS, FAILURES_PARTIAL)
KEY_FIELDS = ("encoder", "encoder_fingerprint", "dim", "count", "n_items", "max_images", "source_fingerprint",
              "map_sha256")  # the header fields that must match the inputs for a cache to be reused
DTYPE = np.dtype("<f2")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("/", "--"))


def feature_cache_dir(data_dir: str | Path, encoder_name: str, split: str) -> Path:
    """``<data_dir>/features/<encoder-slug>/<split>``: where a split's feature cache lives."""
    return Path(data_dir) / "features" / _slug(encoder_name) / split


def validate_cache_map(m: Any, n_images: int, where: str | Path) -> np.ndarray:
    """The map as int64 (n_items, max_images); every value must be in [-1, n_images)."""
    return validate_image_map(m, where, n_images=n_images, images_in="the source")


def read_header(folder: Path) -> dict | None:
    """The folder's ``header.json`` if it is a feature-cache header (finished or not), else None."""
    try:
        h = read_json(folder / HEADER)
    except (OSError, ValueError):
        return None
    return h if isinstance(h, dict) and h.get("format") == FORMAT else None


def _check_header(hp: Path) -> dict:
    """Read and check ``header.json`` of a finished cache; DataFormatError saying what is wrong."""
    try:
        header = read_json(hp)
    except ValueError as e:
        raise DataFormatError(hp, f"not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataFormatError(hp, f"not a feature-cache header (expected format {FORMAT!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(hp, f"format_version {header.get('format_version')!r} is not supported "
                                  f"(this code reads version {FORMAT_VERSION}); rebuild the cache")
    if not header.get("finished"):
        raise DataFormatError(hp, "the cache is unfinished (an interrupted build); rerun build_feature_cache "
                                  "with the same inputs to resume it")
    for k in ("dim", "count", "n_items", "max_images"):
        if not isinstance(header.get(k), int) or header[k] < 0:
            raise DataFormatError(hp, f"field {k!r} must be a non-negative integer, got {header.get(k)!r}")
    if header.get("dtype") != "float16" or header.get("byte_order", "little") != "little":
        raise DataFormatError(hp, f"unsupported vector dtype {header.get('dtype')!r} / byte order "
                                  f"{header.get('byte_order')!r}; expected little-endian float16")
    return header


def _check_files(folder: Path, header: dict) -> tuple[np.ndarray, np.ndarray]:
    """Check the vectors' size and load the map and valid arrays against the header."""
    count, dim = header["count"], header["dim"]
    vp = folder / VECTORS
    expect = count * dim * DTYPE.itemsize
    if not vp.is_file() or vp.stat().st_size != expect:
        got = vp.stat().st_size if vp.is_file() else "missing"
        raise DataFormatError(vp, f"expected {expect} bytes ({count} x {dim} float16), found {got}")
    try:
        m = np.load(folder / MAP, allow_pickle=False)
        valid = np.load(folder / VALID, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataFormatError(folder, f"cannot read {MAP} / {VALID} ({e})") from None
    if m.dtype != np.int64 or m.shape != (header["n_items"], header["max_images"]):
        raise DataFormatError(folder / MAP, f"expected int64 {(header['n_items'], header['max_images'])}, "
                                            f"found {m.dtype} {m.shape}")
    validate_cache_map(m, count, folder / MAP)
    if valid.dtype != np.bool_ or valid.shape != (count,):
        raise DataFormatError(folder / VALID, f"expected bool ({count},), found {valid.dtype} {valid.shape}")
    return m, valid


class FeatureCache:
    """Read access to a finished feature cache folder (see the module docstring).

    ``FeatureCache.open(folder)`` validates the header and the files; nothing is loaded
    whole except the (small) map and valid arrays. ``vectors`` is the whole float16
    matrix as a read-only ``np.memmap``. ``read_batch(items)`` and
    ``vectors_for_images(idx)`` read only the rows they need, with positioned reads
    (``os.preadv``, one per run of consecutive rows) into a fresh buffer rather than
    through the memory map: on current Linux kernels the page cache uses large folios
    and touching one 2 KiB row of a mapping maps up to 2 MiB into the process, so
    random reads through a map inflate the resident size towards the file size
    (9 GB for LF-AmazonTitles-1.3M); positioned reads keep it at the size of the batch.
    Picklable: DataLoader workers reopen the file lazily.
    """

    def __init__(self, folder: Path, header: dict, image_map: np.ndarray, valid: np.ndarray):
        self.folder = Path(folder)
        self.header = header
        self.image_map = image_map
        self.valid = valid
        self._fd: int | None = None
        self._pid: int | None = None
        self._memmap: np.ndarray | None = None

    # ---- construction
    @classmethod
    def open(cls, folder: str | Path) -> FeatureCache:
        folder = Path(folder)
        hp = folder / HEADER
        if not hp.is_file():
            raise FileNotFoundError(f"{folder}: not a feature cache (no {HEADER}); build it with build_feature_cache")
        header = _check_header(hp)
        m, valid = _check_files(folder, header)
        return cls(folder, header, m, valid)

    # ---- properties
    @property
    def dim(self) -> int:
        return int(self.header["dim"])

    @property
    def count(self) -> int:
        """Number of images (rows of ``vectors.f16``)."""
        return int(self.header["count"])

    @property
    def n_items(self) -> int:
        return int(self.image_map.shape[0])

    @property
    def max_images(self) -> int:
        return int(self.image_map.shape[1])

    @property
    def encoder(self) -> str:
        return str(self.header["encoder"])

    @property
    def n_failures(self) -> int:
        return int(self.header.get("failures", 0))

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return (f"FeatureCache({str(self.folder)!r}, encoder={self.encoder!r}, n_items={self.n_items}, "
                f"max_images={self.max_images}, images={self.count}, dim={self.dim})")

    @property
    def mask(self) -> np.ndarray:
        """bool (n_items, max_images): slot holds a usable image vector."""
        return self._slot_mask(self.image_map)

    def failures(self) -> list[dict]:
        """The records of ``failures.jsonl``."""
        p = self.folder / FAILURES
        if not p.exists():
            return []
        with open(p, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    @property
    def vectors(self) -> np.ndarray:
        """The whole float16 matrix (count, dim) as a read-only memmap (nothing is loaded).

        Fine for sequential scans; for random access prefer :meth:`read_batch` /
        :meth:`vectors_for_images`, which keep the resident size small.
        """
        if self._memmap is None:
            if self.count * self.dim == 0:
                self._memmap = np.zeros((self.count, self.dim), dtype=DTYPE)
            else:
                self._memmap = np.memmap(self.folder / VECTORS, dtype=DTYPE, mode="r", shape=(self.count, self.dim))
        return self._memmap

    # ---- file handle (reopened per process)
    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.folder / VECTORS, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None
        self._memmap = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_fd=None, _pid=None, _memmap=None)
        return state

    # ---- reads
    def _slot_mask(self, rows: np.ndarray) -> np.ndarray:
        ok = rows >= 0
        ok[ok] = self.valid[rows[ok]]
        return ok

    def _gather(self, idx: np.ndarray, extra_zero_row: bool = False) -> np.ndarray:
        """float32 rows of sorted unique image indices ``idx`` (one positioned read per run of
        consecutive rows), plus a final row of zeros when ``extra_zero_row``."""
        n, dim = int(idx.size), self.dim
        out = np.empty((n + int(extra_zero_row), dim), dtype=np.float32)
        if extra_zero_row:
            out[n] = 0.0
        if n == 0 or dim == 0:
            return out
        if not hasattr(os, "preadv"):  # pragma: no cover - non-POSIX: read through the map
            out[:n] = self.vectors[idx]
            return out
        buf = np.empty((n, dim), dtype=DTYPE)
        row_bytes = dim * DTYPE.itemsize
        cut = np.flatnonzero(np.diff(idx) != 1) + 1
        starts = idx[np.concatenate(([0], cut))].tolist()
        lens = np.diff(np.concatenate(([0], cut, [n]))).tolist()
        fd = self._file()
        mv = memoryview(buf).cast("B")
        pos = 0
        for s, ln in zip(starts, lens):
            want = ln * row_bytes
            off = s * row_bytes
            got = 0
            while got < want:
                k = os.preadv(fd, [mv[pos + got:pos + want]], off + got)
                if k <= 0:
                    raise DataFormatError(self.folder / VECTORS, f"short read at row {s + got // row_bytes}; "
                                                                 f"the file was truncated")
                got += k
            pos += want
        out[:n] = buf
        return out

    def read_batch(self, items: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and mask of some items.

        Returns ``(vectors, mask)``: float32 ``(B, max_images, dim)`` (zeros where the mask
        is False) and bool ``(B, max_images)`` (True where the item has a usable image).
        Only the needed rows of ``vectors.f16`` are read (each distinct image once).
        """
        items = np.asarray(items)
        if items.ndim != 1 or (items.size and items.dtype.kind not in "iu"):
            raise TypeError(f"items must be a 1-D array of integer item indices, got {items.dtype} {items.shape}")
        items = items.astype(np.int64, copy=False)
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            bad = items[(items < 0) | (items >= self.n_items)][0]
            raise IndexError(f"{self.folder}: item index {int(bad)} out of range; the cache has {self.n_items} items")
        rows = self.image_map[items]
        mask = self._slot_mask(rows)
        uniq, inv = np.unique(rows[mask], return_inverse=True)
        src = self._gather(uniq, extra_zero_row=True)  # last row: zeros for masked slots
        pos = np.full(rows.shape, uniq.size, dtype=np.intp)
        pos[mask] = inv.reshape(-1)
        return np.take(src, pos, axis=0), mask

    def vectors_for_images(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 ``(len(idx), dim)`` vectors of images ``idx`` (zeros for failed images)."""
        idx = np.asarray(idx)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"idx must be a 1-D array of integer image indices, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            bad = idx[(idx < 0) | (idx >= self.count)][0]
            raise IndexError(f"{self.folder}: image index {int(bad)} out of range; the cache has {self.count} images")
        uniq, inv = np.unique(idx, return_inverse=True)
        vec = self._gather(uniq)[inv]
        vec[~self.valid[idx]] = 0.0
        return vec
