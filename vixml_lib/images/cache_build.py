"""Building a feature cache: encode every image of a source once, resumably.

:func:`build_feature_cache` writes the folder described in :mod:`vixml_lib.images.cache`.
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
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..errors import DataFormatError
from ..io_utils import read_json
from .cache import (
    DTYPE,
    FAILURES,
    FAILURES_PARTIAL,
    HEADER,
    MAP,
    PROGRESS,
    VALID,
    VECTORS,
    FeatureCache,
    read_header,
    validate_cache_map,
)
from .cache_write import (
    cache_key,
    fsync_dir,
    json_bytes,
    new_header,
    pwrite_all,
    remove_cache_files,
    write_durable,
    write_header,
    write_npy_durable,
)

log = logging.getLogger(__name__)

__all__ = ["build_feature_cache"]


# --------------------------------------------------------------------------------------
# the DataLoader side: images -> pixels, in fixed batches
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


def _loader(source, encoder, start: int, n: int, batch_size: int, num_workers: int):
    """Batches ``(image indices, pixels (B, 3, H, W) or None, failure reasons)`` of images ``[start, n)``."""
    import torch
    from torch.utils.data import DataLoader

    preprocess = getattr(encoder, "preprocessor", None) or encoder.preprocess
    device = getattr(encoder, "device", None)
    return DataLoader(
        _ImageDataset(source, preprocess), batch_sampler=_Batches(start, n, batch_size), collate_fn=_collate,
        num_workers=num_workers, pin_memory=bool(device is not None and torch.device(device).type == "cuda"),
        prefetch_factor=4 if num_workers > 0 else None, persistent_workers=False,
    )


# --------------------------------------------------------------------------------------
# encoding a range of images
# --------------------------------------------------------------------------------------


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


class _FailureLog:
    """Appends ``{"image", "items", "reason"}`` lines to an open file; the item lookup is
    built on the first failure only."""

    def __init__(self, f, image_map: np.ndarray):
        self.f = f
        self.image_map = image_map
        self._items_of = None

    def add(self, j: int, reason: str) -> None:
        if self._items_of is None:
            self._items_of = _items_using(self.image_map)
        rec = {"image": j, "items": self._items_of(j), "reason": reason}
        self.f.write((json.dumps(rec, ensure_ascii=True) + "\n").encode("ascii"))
        log.debug("image %d failed: %s", j, reason)


def _batch_vectors(encoder, px, n: int, dim: int) -> np.ndarray:
    """float16 (n, dim) vectors of a batch's pixels (zeros when no image of it could be read)."""
    vec = np.zeros((n, dim), dtype=DTYPE)
    if px is not None:
        import torch

        out_t = encoder.encode(px)
        got = out_t.detach().to("cpu", torch.float32).numpy() if hasattr(out_t, "detach") else np.asarray(out_t)
        if got.shape != (n, dim):
            raise ValueError(f"{encoder.name}: encode returned shape {got.shape}, expected {(n, dim)}")
        vec[:] = got.astype(DTYPE)
    return vec


def _commit_chunk(out: Path, fd: int, ff, rows_done: int) -> None:
    """Make a finished chunk durable: fsync the vectors and the failure log, then progress.json."""
    os.fsync(fd)
    ff.flush()
    os.fsync(ff.fileno())
    write_durable(out / PROGRESS, json_bytes({"rows_done": rows_done, "failures_bytes": ff.tell()}))


def _encode_range(source, encoder, out: Path, m: np.ndarray, start: int, n: int, batch_size: int, chunk_size: int,
                  num_workers: int, progress: bool, desc: str | None) -> None:
    """Encode images ``[start, n)`` into ``vectors.f16``, a durable chunk at a time."""
    from tqdm.auto import tqdm

    loader = _loader(source, encoder, start, n, batch_size, num_workers)
    dim = int(encoder.dim)
    row_bytes = dim * DTYPE.itemsize
    rows_done = start
    t0 = time.perf_counter()
    fd = os.open(out / VECTORS, os.O_RDWR)
    ff = open(out / FAILURES_PARTIAL, "ab")
    failures = _FailureLog(ff, m)
    bar = tqdm(total=n, initial=start, unit="img", desc=desc or f"encode {out.name}", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for idx, px, reasons in loader:
            s, e = idx[0], idx[-1] + 1
            vec = _batch_vectors(encoder, px, e - s, dim)
            for k, r in enumerate(reasons):
                if r:
                    vec[k] = 0
                    failures.add(s + k, r)
            pwrite_all(fd, vec.tobytes(), s * row_bytes)
            bar.update(e - s)
            if e % chunk_size == 0 or e == n:  # a chunk is finished: make it durable
                _commit_chunk(out, fd, ff, e)
                rows_done = e
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
# reuse, resume, start, finish
# --------------------------------------------------------------------------------------


def _read_progress(folder: Path) -> dict | None:
    try:
        p = read_json(folder / PROGRESS)
    except (OSError, ValueError):
        return None
    if not isinstance(p, dict) or not all(isinstance(p.get(k), int) for k in ("rows_done", "failures_bytes")):
        return None
    return p


def _reuse_finished(out: Path, n: int, encoder_name: str) -> FeatureCache | None:
    """The finished cache in ``out`` (its header matches the inputs), or None if it is damaged."""
    try:
        cache = FeatureCache.open(out)
    except (DataFormatError, OSError) as e:
        log.warning("%s: finished cache is damaged (%s); rebuilding", out, e)
        return None
    for name in (PROGRESS, FAILURES_PARTIAL):  # leftovers of a run killed while finishing
        if (out / name).exists():
            (out / name).unlink()
    log.info("%s: reusing the finished feature cache (%d images, %s)", out, n, encoder_name)
    return cache


def _resume_point(out: Path, old: dict, n: int, dim: int, batch_size: int, chunk_size: int) -> tuple | None:
    """``(rows_done, batch_size, chunk_size)`` to resume an interrupted build with (its failure log
    cut back to the last finished chunk), or None when its progress files are incomplete."""
    prog = _read_progress(out)
    bs, cs = old.get("batch_size"), old.get("chunk_size")
    vp, fp = out / VECTORS, out / FAILURES_PARTIAL
    if not fp.exists() and (out / FAILURES).exists():  # killed while finishing
        os.replace(out / FAILURES, fp)
    if not (prog is not None and isinstance(bs, int) and isinstance(cs, int) and bs >= 1 and cs % bs == 0
            and 0 <= prog["rows_done"] <= n and (prog["rows_done"] % cs == 0 or prog["rows_done"] == n)
            and vp.is_file() and vp.stat().st_size == n * dim * DTYPE.itemsize
            and fp.is_file() and fp.stat().st_size >= prog["failures_bytes"]):
        log.info("%s: the interrupted build cannot be resumed (incomplete progress files); restarting", out)
        return None
    if (bs, cs) != (batch_size, chunk_size):
        log.info("%s: resuming with the batch_size=%d, chunk_size=%d the build was started with", out, bs, cs)
    with open(fp, "r+b") as f:  # drop failure records of the unfinished chunk
        f.truncate(prog["failures_bytes"])
    log.info("%s: resuming an interrupted build at image %d of %d", out, prog["rows_done"], n)
    return prog["rows_done"], bs, cs


def _start_fresh(out: Path, key: dict, batch_size: int, chunk_size: int) -> None:
    """Empty the folder and write the files of a new build: header, sparse vectors, empty logs."""
    remove_cache_files(out)
    write_header(out, new_header(key, batch_size, chunk_size, origin="encoded"))
    with open(out / VECTORS, "wb") as f:
        f.truncate(key["count"] * key["dim"] * DTYPE.itemsize)  # sparse until written
        os.fsync(f.fileno())
    write_durable(out / FAILURES_PARTIAL, b"")
    write_durable(out / PROGRESS, json_bytes({"rows_done": 0, "failures_bytes": 0}))


def _finish(out: Path, m: np.ndarray, n: int) -> FeatureCache:
    """Derive ``valid.npy`` from the failure log and publish the final files; the header last."""
    header = read_json(out / HEADER)
    valid = np.ones(n, dtype=np.bool_)
    n_fail = 0
    with open(out / FAILURES_PARTIAL, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                valid[int(json.loads(line)["image"])] = False
                n_fail += 1
    write_npy_durable(out / MAP, m)
    write_npy_durable(out / VALID, valid)
    os.replace(out / FAILURES_PARTIAL, out / FAILURES)
    header.update(failures=n_fail, finished=True)
    write_header(out, header)
    (out / PROGRESS).unlink()
    fsync_dir(out)
    if n_fail:
        log.warning("%s: %d of %d images could not be read; they are masked (see %s)", out, n_fail, n,
                    out / FAILURES)
    return FeatureCache.open(out)


def build_feature_cache(source, encoder, out_dir: str | Path, batch_size: int = 64, num_workers: int = 2,
                        chunk_size: int = 4096, progress: bool = True, desc: str | None = None) -> FeatureCache:
    """Encode every image of ``source`` once with ``encoder`` into the cache folder ``out_dir``.

    ``source``: an image source (``image_map``, ``len``, ``load(j)``, ``fingerprint()``;
    see :mod:`vixml_lib.images.sources`). ``encoder``: a
    :class:`~vixml_lib.images.encoder_base.VisionEncoder` (``name``, ``dim``, ``fingerprint``,
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
    m = validate_cache_map(source.image_map, n, where)  # before any file is touched
    dim = int(encoder.dim)
    key = cache_key(encoder.name, getattr(encoder, "fingerprint", "") or "", dim, n, m, source.fingerprint())
    out.mkdir(parents=True, exist_ok=True)
    old = read_header(out)
    resume = None
    if old is not None and all(old.get(k) == v for k, v in key.items()):
        if old.get("finished"):
            cache = _reuse_finished(out, n, key["encoder"])
            if cache is not None:
                return cache
        else:
            resume = _resume_point(out, old, n, dim, batch_size, chunk_size)
    elif old is not None:
        changed = [k for k, v in key.items() if old.get(k) != v]
        log.info("%s: existing cache was made from other inputs (%s differ); rebuilding", out, ", ".join(changed))
    if resume is None:
        start = 0
        _start_fresh(out, key, batch_size, chunk_size)
    else:
        start, batch_size, chunk_size = resume
    if start < n:
        _encode_range(source, encoder, out, m, start, n, batch_size, chunk_size, num_workers, progress, desc)
    return _finish(out, m, n)
