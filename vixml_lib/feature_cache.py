"""The image feature cache: one frozen-encoder vector per image, on disk, resumable.

ViXML encodes every product image ONCE with a frozen vision model and trains on the
cached vectors. This module writes and reads that cache.

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

While building, two more files exist: ``progress.json`` (``rows_done``: images
finished, always a chunk boundary; ``failures_bytes``: length of the failure log at
that point) and ``failures.jsonl.partial``. After every chunk the vectors and the
failure log are fsynced, then ``progress.json`` is replaced atomically (and fsynced),
so a run killed at any moment (Ctrl-C, SIGKILL, power loss) resumes from the last
finished chunk. Batches are fixed slices ``[k * batch_size, (k + 1) * batch_size)`` of
the image range and chunks are whole batches, so a resumed build computes exactly the
same batches as an uninterrupted one and its files are byte-identical (on the same
machine and torch thread count: CPU math is deterministic for fixed shapes).

A finished cache whose header matches the inputs (encoder name and fingerprint, source
fingerprint, image map, count, dim) is reused without encoding anything; any change
rebuilds it from scratch.

Reading: :class:`FeatureCache` exposes the whole matrix as a read-only ``np.memmap``
(``.vectors``) but gathers batches with positioned reads of just the needed rows, so
random batches from a 9 GB cache (LF-AmazonTitles-1.3M) keep the resident size around
the batch size (~170 MB measured, against ~8.7 GB when the same reads go through the
memory map; see ``benchmarks/bench_image_cache.py``).

API: :func:`build_feature_cache`, :class:`FeatureCache` (``open``, ``read_batch``,
``vectors_for_images``), :func:`import_authors_features` (the authors' precomputed
SigLIP2 features), :func:`feature_cache_dir`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DataFormatError
from .images import validate_image_map
from .io_utils import read_json

log = logging.getLogger(__name__)

__all__ = [
    "FeatureCache",
    "build_feature_cache",
    "import_authors_features",
    "feature_cache_dir",
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
_ALL_FILES = (HEADER, VECTORS, MAP, VALID, FAILURES, PROGRESS, FAILURES_PARTIAL)
_KEY_FIELDS = ("encoder", "encoder_fingerprint", "dim", "count", "n_items", "max_images", "source_fingerprint",
               "map_sha256")
_DTYPE = np.dtype("<f2")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("/", "--"))


def feature_cache_dir(data_dir: str | Path, encoder_name: str, split: str) -> Path:
    """``<data_dir>/features/<encoder-slug>/<split>``: where a split's feature cache lives."""
    return Path(data_dir) / "features" / _slug(encoder_name) / split


# --------------------------------------------------------------------------------------
# small durable-file helpers
# --------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync the folder)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        k = os.pwrite(fd, view, offset)
        view, offset = view[k:], offset + k


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def _write_npy_durable(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    _write_durable(path, buf.getvalue())


def _map_sha256(m: np.ndarray) -> str:
    h = hashlib.sha256(f"int64{tuple(m.shape)}:".encode())
    h.update(np.ascontiguousarray(m, dtype="<i8").tobytes())
    return h.hexdigest()


def _remove_cache_files(folder: Path) -> None:
    for name in _ALL_FILES:
        p = folder / name
        if p.exists():
            p.unlink()
    for p in folder.glob(".*.tmp"):
        p.unlink()


def _validate_map(m: Any, n_images: int, where: str | Path) -> np.ndarray:
    """The map as int64 (n_items, max_images); every value must be in [-1, n_images)."""
    return validate_image_map(m, where, n_images=n_images, images_in="the source")


def _items_using(m: np.ndarray):
    """A function image j -> sorted list of item rows whose map uses j (built once, vectorised)."""
    flat = m.ravel()
    order = np.argsort(flat, kind="stable")
    vals = flat[order]
    rows = order // m.shape[1]

    def items(j: int) -> list[int]:
        lo, hi = np.searchsorted(vals, [j, j + 1])
        return sorted(set(int(r) for r in rows[lo:hi]))

    return items


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


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
    def open(cls, folder: str | Path) -> "FeatureCache":
        folder = Path(folder)
        hp = folder / HEADER
        if not hp.is_file():
            raise FileNotFoundError(f"{folder}: not a feature cache (no {HEADER}); build it with build_feature_cache")
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
        count, dim = header["count"], header["dim"]
        vp = folder / VECTORS
        expect = count * dim * _DTYPE.itemsize
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
        _validate_map(m, count, folder / MAP)
        if valid.dtype != np.bool_ or valid.shape != (count,):
            raise DataFormatError(folder / VALID, f"expected bool ({count},), found {valid.dtype} {valid.shape}")
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
                self._memmap = np.zeros((self.count, self.dim), dtype=_DTYPE)
            else:
                self._memmap = np.memmap(self.folder / VECTORS, dtype=_DTYPE, mode="r", shape=(self.count, self.dim))
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

    def __enter__(self) -> "FeatureCache":
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
        buf = np.empty((n, dim), dtype=_DTYPE)
        row_bytes = dim * _DTYPE.itemsize
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


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------


class _ImageDataset:
    """Image ``j`` of ``source`` -> ``(j, pixels or None, failure reason)``; runs in workers."""

    def __init__(self, source, preprocess):
        self.source = source
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, j: int):
        try:
            img = self.source.load(int(j))
            px = self.preprocess([img])[0]
            return int(j), px, ""
        except Exception as e:  # a bad image is recorded, never fatal
            msg = str(e).replace("\n", " ").strip()
            reason = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
            return int(j), None, reason[:1000]


def _collate(samples):
    import torch

    idx = [s[0] for s in samples]
    reasons = [s[2] for s in samples]
    ok = [s[1] for s in samples if s[1] is not None]
    if not ok:
        return idx, None, reasons
    zero = torch.zeros_like(ok[0])
    px = torch.stack([s[1] if s[1] is not None else zero for s in samples])
    return idx, px, reasons


class _Batches:
    """Fixed batches ``[k*bs, (k+1)*bs)`` of the image range ``[start, n)`` (start on a boundary)."""

    def __init__(self, start: int, n: int, batch_size: int):
        self.start, self.n, self.bs = start, n, batch_size

    def __iter__(self):
        for s in range(self.start, self.n, self.bs):
            yield list(range(s, min(s + self.bs, self.n)))

    def __len__(self) -> int:
        return max(0, -(-(self.n - self.start) // self.bs))


def _read_progress(folder: Path) -> dict | None:
    try:
        p = read_json(folder / PROGRESS)
    except (OSError, ValueError):
        return None
    if not isinstance(p, dict) or not isinstance(p.get("rows_done"), int) or not isinstance(p.get("failures_bytes"), int):
        return None
    return p


def _try_header(folder: Path) -> dict | None:
    try:
        h = read_json(folder / HEADER)
    except (OSError, ValueError):
        return None
    return h if isinstance(h, dict) and h.get("format") == FORMAT else None


def build_feature_cache(source, encoder, out_dir: str | Path, batch_size: int = 64, num_workers: int = 2,
                        chunk_size: int = 4096, progress: bool = True, desc: str | None = None) -> FeatureCache:
    """Encode every image of ``source`` once with ``encoder`` into the cache folder ``out_dir``.

    ``source``: an image source (``image_map``, ``len``, ``load(j)``, ``fingerprint()``;
    see :mod:`vixml_lib.image_sources`). ``encoder``: a
    :class:`~vixml_lib.vision.VisionEncoder` (``name``, ``dim``, ``fingerprint``,
    ``preprocessor`` or ``preprocess``, ``encode``). Images are decoded and preprocessed
    by ``num_workers`` DataLoader workers (0: in this process) while the model encodes;
    a tqdm bar shows images/s. ``chunk_size`` (rounded up to whole batches) is how often
    progress is made durable.

    - The map is validated first: a value outside ``[-1, len(source))`` raises
      :class:`DataFormatError` naming the item row, before anything is written.
    - A corrupt or unreadable image is logged to ``failures.jsonl`` and masked, never
      fatal.
    - Interrupted (Ctrl-C, kill)? Call again with the same inputs: it resumes from the
      last finished chunk and ends with the same bytes as an uninterrupted build. A
      resumed build keeps the batch and chunk sizes it was started with.
    - A finished cache for the same inputs is reused; different inputs rebuild it.

    Returns the opened :class:`FeatureCache`.
    """
    out = Path(out_dir)
    batch_size, num_workers = int(batch_size), int(num_workers)
    if batch_size < 1 or num_workers < 0 or int(chunk_size) < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1 and num_workers >= 0, got {batch_size}, "
                         f"{chunk_size}, {num_workers}")
    chunk_size = -(-int(chunk_size) // batch_size) * batch_size
    n = int(len(source))
    where = getattr(source, "map_path", None) or f"<image map of {type(source).__name__}>"
    m = _validate_map(source.image_map, n, where)  # before any file is touched
    dim = int(encoder.dim)
    key = {
        "encoder": str(encoder.name),
        "encoder_fingerprint": str(getattr(encoder, "fingerprint", "") or ""),
        "dim": dim,
        "count": n,
        "n_items": int(m.shape[0]),
        "max_images": int(m.shape[1]),
        "source_fingerprint": str(source.fingerprint()),
        "map_sha256": _map_sha256(m),
    }
    out.mkdir(parents=True, exist_ok=True)
    old = _try_header(out)
    start, resume = 0, False
    if old is not None and all(old.get(k) == v for k, v in key.items()):
        if old.get("finished"):
            try:
                cache = FeatureCache.open(out)
            except (DataFormatError, OSError) as e:
                log.warning("%s: finished cache is damaged (%s); rebuilding", out, e)
            else:
                for name in (PROGRESS, FAILURES_PARTIAL):  # leftovers of a run killed while finishing
                    if (out / name).exists():
                        (out / name).unlink()
                log.info("%s: reusing the finished feature cache (%d images, %s)", out, n, key["encoder"])
                return cache
        else:
            prog = _read_progress(out)
            bs, cs = old.get("batch_size"), old.get("chunk_size")
            vp, fp = out / VECTORS, out / FAILURES_PARTIAL
            if not fp.exists() and (out / FAILURES).exists():  # killed while finishing
                os.replace(out / FAILURES, fp)
            if (prog is not None and isinstance(bs, int) and isinstance(cs, int) and bs >= 1 and cs % bs == 0
                    and 0 <= prog["rows_done"] <= n and (prog["rows_done"] % cs == 0 or prog["rows_done"] == n)
                    and vp.is_file() and vp.stat().st_size == n * dim * _DTYPE.itemsize
                    and fp.is_file() and fp.stat().st_size >= prog["failures_bytes"]):
                if (bs, cs) != (batch_size, chunk_size):
                    log.info("%s: resuming with the batch_size=%d, chunk_size=%d the build was started with",
                             out, bs, cs)
                batch_size, chunk_size = bs, cs
                start, resume = prog["rows_done"], True
                with open(fp, "r+b") as f:  # drop failure records of the unfinished chunk
                    f.truncate(prog["failures_bytes"])
                log.info("%s: resuming an interrupted build at image %d of %d", out, start, n)
            else:
                log.info("%s: the interrupted build cannot be resumed (incomplete progress files); restarting", out)
    elif old is not None:
        changed = [k for k, v in key.items() if old.get(k) != v]
        log.info("%s: existing cache was made from other inputs (%s differ); rebuilding", out, ", ".join(changed))
    if not resume:
        _remove_cache_files(out)
        header = dict(format=FORMAT, format_version=FORMAT_VERSION, **key, dtype="float16", byte_order="little",
                      vectors_file=VECTORS, batch_size=batch_size, chunk_size=chunk_size, origin="encoded",
                      failures=0, finished=False)
        _write_durable(out / HEADER, _json_bytes(header))
        with open(out / VECTORS, "wb") as f:
            f.truncate(n * dim * _DTYPE.itemsize)  # sparse until written
            os.fsync(f.fileno())
        _write_durable(out / FAILURES_PARTIAL, b"")
        _write_durable(out / PROGRESS, _json_bytes({"rows_done": 0, "failures_bytes": 0}))
    header = read_json(out / HEADER)

    if start < n:
        _encode_range(source, encoder, out, m, start, n, batch_size, chunk_size, num_workers, progress, desc)

    # finish: derive valid.npy from the failure log, publish the final files
    valid = np.ones(n, dtype=np.bool_)
    n_fail = 0
    with open(out / FAILURES_PARTIAL, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                valid[int(json.loads(line)["image"])] = False
                n_fail += 1
    _write_npy_durable(out / MAP, m)
    _write_npy_durable(out / VALID, valid)
    os.replace(out / FAILURES_PARTIAL, out / FAILURES)
    header.update(failures=n_fail, finished=True)
    _write_durable(out / HEADER, _json_bytes(header))
    (out / PROGRESS).unlink()
    _fsync_dir(out)
    if n_fail:
        log.warning("%s: %d of %d images could not be read; they are masked (see %s)", out, n_fail, n,
                    out / FAILURES)
    return FeatureCache.open(out)


def _encode_range(source, encoder, out: Path, m: np.ndarray, start: int, n: int, batch_size: int, chunk_size: int,
                  num_workers: int, progress: bool, desc: str | None) -> None:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    preprocess = getattr(encoder, "preprocessor", None) or encoder.preprocess
    ds = _ImageDataset(source, preprocess)
    device = getattr(encoder, "device", None)
    loader = DataLoader(
        ds, batch_sampler=_Batches(start, n, batch_size), collate_fn=_collate, num_workers=num_workers,
        pin_memory=bool(device is not None and torch.device(device).type == "cuda"),
        prefetch_factor=4 if num_workers > 0 else None, persistent_workers=False,
    )
    dim = int(encoder.dim)
    row_bytes = dim * _DTYPE.itemsize
    items_of = None
    rows_done = start
    t0 = time.perf_counter()
    fd = os.open(out / VECTORS, os.O_RDWR)
    ff = open(out / FAILURES_PARTIAL, "ab")
    bar = tqdm(total=n, initial=start, unit="img", desc=desc or f"encode {out.name}", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for idx, px, reasons in loader:
            s, e = idx[0], idx[-1] + 1
            vec = np.zeros((e - s, dim), dtype=_DTYPE)
            if px is not None:
                out_t = encoder.encode(px)
                got = out_t.detach().to("cpu", torch.float32).numpy() if hasattr(out_t, "detach") else np.asarray(out_t)
                if got.shape != (e - s, dim):
                    raise ValueError(f"{encoder.name}: encode returned shape {got.shape}, expected {(e - s, dim)}")
                vec[:] = got.astype(_DTYPE)
            for k, r in enumerate(reasons):
                if r:
                    vec[k] = 0
                    if items_of is None:
                        items_of = _items_using(m)
                    rec = {"image": s + k, "items": items_of(s + k), "reason": r}
                    ff.write((json.dumps(rec, ensure_ascii=True) + "\n").encode("ascii"))
                    log.debug("image %d failed: %s", s + k, r)
            _pwrite_all(fd, vec.tobytes(), s * row_bytes)
            bar.update(e - s)
            if e % chunk_size == 0 or e == n:  # a chunk is finished: make it durable
                os.fsync(fd)
                ff.flush()
                os.fsync(ff.fileno())
                rows_done = e
                _write_durable(out / PROGRESS, _json_bytes({"rows_done": e, "failures_bytes": ff.tell()}))
    except KeyboardInterrupt:
        log.warning("%s: interrupted after %d of %d images; call build_feature_cache again to resume", out,
                    rows_done, n)
        raise
    finally:
        bar.close()
        ff.close()
        os.close(fd)
    dt = time.perf_counter() - t0
    log.info("%s: encoded %d images in %.1f s (%.0f images/s)", out, n - start, dt, (n - start) / max(dt, 1e-9))


# --------------------------------------------------------------------------------------
# importing the authors' precomputed features
# --------------------------------------------------------------------------------------


def _cheap_file_fingerprint(path: Path) -> str:
    """size + sha256 of the first and last MiB: identifies a large file without reading it all."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return h.hexdigest()


def _load_authors_map(map_path: Path, allow_pickle_map: bool, max_images: int) -> np.ndarray:
    try:
        arr = np.load(map_path, allow_pickle=False)
    except ValueError as e:
        if "pickle" not in str(e).lower():
            raise DataFormatError(map_path, f"not a readable .npy array ({e})") from None
        if not allow_pickle_map:
            raise DataFormatError(
                map_path,
                "this image map is a pickled object array (the official ViXML release format). Loading it "
                "runs pickle, which can execute code, so it is refused by default. If you trust the file, pass "
                "allow_pickle_map=True (it is converted once with vixml_lib.images.convert_object_map and the "
                "cache stores a plain int64 map), or convert it yourself with that function.",
            ) from None
        from .images import convert_object_map

        log.warning("%s: unpickling the authors' object-array image map (allow_pickle_map=True); only do this for "
                    "files you trust", map_path)
        fd, tmp = tempfile.mkstemp(suffix=".npy")
        os.close(fd)
        try:
            arr = convert_object_map(map_path, tmp, max_images=max_images)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        if not map_path.exists():
            raise FileNotFoundError(f"{map_path}: image map not found") from None
        raise DataFormatError(map_path, f"not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise DataFormatError(map_path, "expected a .npy array, found an .npz archive")
    return arr


def import_authors_features(npy_path: str | Path, map_path: str | Path, out_dir: str | Path,
                            encoder_name: str = "google/siglip2-so400m-patch14-384", *,
                            allow_pickle_map: bool = False, max_images: int = 3, chunk_rows: int = 65536,
                            progress: bool = True) -> FeatureCache:
    """Turn the authors' precomputed image features into a feature cache (no encoding needed).

    ``npy_path``: ``<split>_embs_imgs_3_1152_siglip2.npy`` (n_images x 1152, float32 or
    float16), opened with ``mmap_mode="r", allow_pickle=False`` and copied to float16
    in chunks of ``chunk_rows`` rows, so memory stays bounded for any size.
    ``map_path``: ``<split>_imgs_384_3_map.npy``, either a plain int64 array (this
    workbench's format) or the authors' pickled object array of per-item lists / -1.

    Safety default: a pickled map is REFUSED (``DataFormatError`` saying how to proceed)
    because unpickling a downloaded file can run arbitrary code. Pass
    ``allow_pickle_map=True`` for a file you trust: it is converted once through
    :func:`vixml_lib.images.convert_object_map` (with a logged warning) and the cache then
    holds a plain int64 map, so it is never unpickled again.

    The header's ``source_fingerprint`` is a cheap fingerprint of the feature file (its
    size and first/last MiB), so re-importing the same files reuses the cache.
    """
    npy_path, map_path, out = Path(npy_path), Path(map_path), Path(out_dir)
    try:
        feats = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DataFormatError(npy_path, f"not a plain numeric .npy array ({e})") from None
    except OSError as e:
        if not npy_path.exists():
            raise FileNotFoundError(f"{npy_path}: feature file not found") from None
        raise DataFormatError(npy_path, f"not a readable .npy array ({e})") from None
    if not isinstance(feats, np.ndarray) or feats.ndim != 2 or feats.dtype.kind != "f":
        raise DataFormatError(npy_path, f"expected a 2-D float array (n_images, dim), found "
                                        f"{getattr(feats, 'dtype', '?')} {getattr(feats, 'shape', '?')}")
    n, dim = int(feats.shape[0]), int(feats.shape[1])
    m = _validate_map(_load_authors_map(map_path, allow_pickle_map, max_images), n, map_path)
    key = {
        "encoder": str(encoder_name),
        "encoder_fingerprint": f"{encoder_name}:imported",
        "dim": dim,
        "count": n,
        "n_items": int(m.shape[0]),
        "max_images": int(m.shape[1]),
        "source_fingerprint": "authors-npy:" + _cheap_file_fingerprint(npy_path),
        "map_sha256": _map_sha256(m),
    }
    out.mkdir(parents=True, exist_ok=True)
    old = _try_header(out)
    if old is not None and old.get("finished") and all(old.get(k) == v for k, v in key.items()):
        try:
            cache = FeatureCache.open(out)
        except (DataFormatError, OSError):
            pass
        else:
            log.info("%s: reusing the imported feature cache", out)
            return cache
    _remove_cache_files(out)
    header = dict(format=FORMAT, format_version=FORMAT_VERSION, **key, dtype="float16", byte_order="little",
                  vectors_file=VECTORS, batch_size=0, chunk_size=int(chunk_rows), origin="imported", failures=0,
                  finished=False)
    _write_durable(out / HEADER, _json_bytes(header))
    from tqdm.auto import tqdm

    src_mm = getattr(feats, "_mmap", None)  # to drop pages already copied (bounded resident size)
    with open(out / VECTORS, "wb") as f, tqdm(total=n, unit="img", desc=f"import {out.name}",
                                              disable=not progress) as bar:
        for s in range(0, n, max(1, int(chunk_rows))):
            block = np.asarray(feats[s:s + chunk_rows])
            b16 = block.astype(_DTYPE)
            finite = np.isfinite(b16).all(axis=1)
            if not finite.all():
                r = s + int(np.flatnonzero(~finite)[0])
                raise DataFormatError(npy_path, f"row {r}: non-finite value (NaN/inf, or too large for float16)")
            f.write(b16.tobytes())
            bar.update(len(block))
            if src_mm is not None and hasattr(src_mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                try:
                    src_mm.madvise(mmap.MADV_DONTNEED)
                except (OSError, ValueError):  # pragma: no cover
                    pass
        f.flush()
        os.fsync(f.fileno())
    _write_npy_durable(out / MAP, m)
    _write_npy_durable(out / VALID, np.ones(n, dtype=np.bool_))
    _write_durable(out / FAILURES, b"")
    header["finished"] = True
    _write_durable(out / HEADER, _json_bytes(header))
    log.info("%s: imported %d image vectors (dim %d) from %s", out, n, dim, npy_path)
    return FeatureCache.open(out)
