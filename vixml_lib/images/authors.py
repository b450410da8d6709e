"""Importing the authors' precomputed image features into a feature cache (no encoding).

The ViXML release ships, per split, ``<split>_embs_imgs_3_1152_siglip2.npy`` (one SigLIP2
vector per image, ``n_images x 1152``) next to ``<split>_imgs_384_3_map.npy`` (the item ->
image map, a pickled object array). :func:`import_authors_features` turns the pair into
the cache folder of :mod:`vixml_lib.images.cache`, so training runs without the vision
model. A pickled map is refused unless the caller says the file is trusted.
"""
from __future__ import annotations

import hashlib
import logging
import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataFormatError
from .cache import DTYPE, FAILURES, MAP, VALID, VECTORS, FeatureCache, read_header, validate_cache_map
from .cache_write import cache_key, new_header, remove_cache_files, write_durable, write_header, write_npy_durable
from .maps import convert_object_map, load_map_array

log = logging.getLogger(__name__)

__all__ = ["import_authors_features"]


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
    """The map as an array; a pickled one is refused, or converted when ``allow_pickle_map``."""

    def if_pickled(path: Path) -> np.ndarray:
        if not allow_pickle_map:
            raise DataFormatError(
                path,
                "this image map is a pickled object array (the official ViXML release format). Loading it "
                "runs pickle, which can execute code, so it is refused by default. If you trust the file, pass "
                "allow_pickle_map=True (it is converted once with vixml_lib.images.convert_object_map and the "
                "cache stores a plain int64 map), or convert it yourself with that function.",
            )
        log.warning("%s: unpickling the authors' object-array image map (allow_pickle_map=True); only do this for "
                    "files you trust", path)
        fd, tmp = tempfile.mkstemp(suffix=".npy")
        os.close(fd)
        try:
            return convert_object_map(path, tmp, max_images=max_images)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    return load_map_array(map_path, if_pickled)


def _open_features(npy_path: Path) -> np.ndarray:
    """The feature matrix (n_images, dim), memory-mapped, float; errors name the file."""
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
    return feats


def _copy_vectors(feats: np.ndarray, npy_path: Path, out: Path, chunk_rows: int, progress: bool) -> None:
    """Copy ``feats`` to ``vectors.f16`` as float16, ``chunk_rows`` rows at a time (bounded memory:
    the pages of the source already copied are dropped); a non-finite value is an error."""
    from tqdm.auto import tqdm

    n = int(feats.shape[0])
    src_mm = getattr(feats, "_mmap", None)  # to drop pages already copied (bounded resident size)
    with open(out / VECTORS, "wb") as f, tqdm(total=n, unit="img", desc=f"import {out.name}",
                                              disable=not progress) as bar:
        for s in range(0, n, max(1, int(chunk_rows))):
            block = np.asarray(feats[s:s + chunk_rows])
            b16 = block.astype(DTYPE)
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
    feats = _open_features(npy_path)
    n, dim = int(feats.shape[0]), int(feats.shape[1])
    m = validate_cache_map(_load_authors_map(map_path, allow_pickle_map, max_images), n, map_path)
    key = cache_key(encoder_name, f"{encoder_name}:imported", dim, n, m,
                    "authors-npy:" + _cheap_file_fingerprint(npy_path))
    out.mkdir(parents=True, exist_ok=True)
    old = read_header(out)
    if old is not None and old.get("finished") and all(old.get(k) == v for k, v in key.items()):
        try:
            cache = FeatureCache.open(out)
        except (DataFormatError, OSError):
            pass
        else:
            log.info("%s: reusing the imported feature cache", out)
            return cache
    remove_cache_files(out)
    header = new_header(key, batch_size=0, chunk_size=int(chunk_rows), origin="imported")
    write_header(out, header)
    _copy_vectors(feats, npy_path, out, chunk_rows, progress)
    write_npy_durable(out / MAP, m)
    write_npy_durable(out / VALID, np.ones(n, dtype=np.bool_))
    write_durable(out / FAILURES, b"")
    header["finished"] = True
    write_header(out, header)
    log.info("%s: imported %d image vectors (dim %d) from %s", out, n, dim, npy_path)
    return FeatureCache.open(out)
