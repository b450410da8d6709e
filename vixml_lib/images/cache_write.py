"""Writing a feature-cache folder durably: what the builder and the importer share.

Every file that marks progress is written atomically and fsynced (temp file, fsync,
rename, fsync the folder), so a process killed at any moment leaves either the old or
the new file, never a torn one. The cache *key* (:func:`cache_key`) is the part of the
header that must match the inputs for a cache to be reused; :func:`new_header` is the
header of a cache being written (``finished`` False until the last step).
The format itself is described in :mod:`vixml_lib.images.cache`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .cache import ALL_FILES, FORMAT, FORMAT_VERSION, HEADER, VECTORS

__all__ = [
    "cache_key",
    "new_header",
    "write_header",
    "write_durable",
    "write_npy_durable",
    "json_bytes",
    "pwrite_all",
    "fsync_dir",
    "remove_cache_files",
]


def fsync_dir(folder: Path) -> None:
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


def write_durable(path: Path, data: bytes) -> None:
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
    fsync_dir(path.parent)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``os.pwrite`` all of ``data`` at ``offset`` (looping over short writes)."""
    view = memoryview(data)
    while view:
        k = os.pwrite(fd, view, offset)
        view, offset = view[k:], offset + k


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def write_npy_durable(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_durable(path, buf.getvalue())


def _map_sha256(m: np.ndarray) -> str:
    h = hashlib.sha256(f"int64{tuple(m.shape)}:".encode())
    h.update(np.ascontiguousarray(m, dtype="<i8").tobytes())
    return h.hexdigest()


def cache_key(encoder: str, encoder_fingerprint: str, dim: int, count: int, image_map: np.ndarray,
              source_fingerprint: str) -> dict:
    """The header fields that must match the inputs for an existing cache to be reused."""
    return {
        "encoder": str(encoder),
        "encoder_fingerprint": str(encoder_fingerprint),
        "dim": int(dim),
        "count": int(count),
        "n_items": int(image_map.shape[0]),
        "max_images": int(image_map.shape[1]),
        "source_fingerprint": str(source_fingerprint),
        "map_sha256": _map_sha256(image_map),
    }


def new_header(key: dict, batch_size: int, chunk_size: int, origin: str) -> dict:
    """The header of a cache being written: ``key`` + the format fields, ``finished`` False."""
    return dict(format=FORMAT, format_version=FORMAT_VERSION, **key, dtype="float16", byte_order="little",
                vectors_file=VECTORS, batch_size=batch_size, chunk_size=chunk_size, origin=origin,
                failures=0, finished=False)


def write_header(folder: Path, header: dict) -> None:
    write_durable(folder / HEADER, json_bytes(header))


def remove_cache_files(folder: Path) -> None:
    """Delete every cache file (and leftover temp files) of ``folder``, to start afresh."""
    for name in ALL_FILES:
        p = folder / name
        if p.exists():
            p.unlink()
    for p in folder.glob(".*.tmp"):
        p.unlink()
