"""Image sources: where the feature-cache builder reads images from.

The builder (frozen vision model -> one vector per image) reads images through a small
duck-typed contract, written here as a :class:`typing.Protocol`::

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
  image a line, :mod:`vixml_lib.images.store`) + ``<split>_imgs_384_3_map.npy`` (plain
  int64 map, :mod:`vixml_lib.images.maps`). The map is validated against the number of
  lines of the ``.bin`` at construction, so a map pointing past the end fails before any
  work. :func:`bin_source_for_split` builds one from ``(data_dir, split)``.
- :class:`FolderImageSource`: a folder of image files + a table (CSV with a header, or
  parquet; :mod:`vixml_lib.images.tables`) with columns ``item`` and ``file``. Missing
  files are not an error at construction (they are counted and logged); ``load`` raises
  ``FileNotFoundError``.
- :func:`open_image_source`: pick one of the above by name, for notebooks; ``kind="url"``
  first downloads a table of URLs into the authors' layout
  (:func:`vixml_lib.images.download.download_images`).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ..errors import DataFormatError
from .download import download_images
from .maps import read_image_map
from .store import ImageBin, bin_paths, check_image_index, to_rgb
from .tables import read_image_table

log = logging.getLogger(__name__)

__all__ = [
    "ImageSource",
    "BinImageSource",
    "FolderImageSource",
    "bin_source_for_split",
    "open_image_source",
]

_HASH_CHUNK = 1 << 22  # 4 MiB per read when hashing


@runtime_checkable
class ImageSource(Protocol):
    """What the feature-cache builder needs from an image store (see the module docstring)."""

    image_map: np.ndarray

    def __len__(self) -> int: ...

    def load(self, j: int) -> Image.Image: ...

    def fingerprint(self) -> str: ...


def _hash_file(h: hashlib._Hash, path: Path) -> None:
    """Feed ``path`` into ``h`` in chunks, preceded by its length (so concatenations are unambiguous)."""
    h.update(f"{path.stat().st_size}:".encode())
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_HASH_CHUNK)
            if not chunk:
                break
            h.update(chunk)


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
            "build it with vixml_lib.images.download.download_images, or use a FolderImageSource)"
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
        self.files, self.image_map = self._index_files(values, n)
        self._fingerprint: str | None = None
        self.n_missing = 0
        if check_files:
            missing = [f for f in self.files if not (self.folder / f).is_file()]
            self.n_missing = len(missing)
            if missing:
                log.warning(
                    "%s: %d of %d image file(s) listed in %s are missing (e.g. %s); loading them will fail",
                    self.folder, len(missing), len(self.files), self.table_path, missing[:3],
                )

    def _index_files(self, values: list[list[str]], n: int) -> tuple[list[str], np.ndarray]:
        """Distinct files in first-occurrence order, and the map (n, max_images) of their indices."""
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
        return files, image_map

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
        return self.folder / self.files[check_image_index(j, len(self), str(self.folder))]

    def load(self, j: int) -> Image.Image:
        p = self.path(j)
        try:
            with Image.open(p) as im:
                im.load()
                img = to_rgb(im)
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
    - ``kind="url"``: download with :func:`~vixml_lib.images.download.download_images`
      from ``url_table`` (default ``<data_dir>/<split>_image_urls.csv`` / ``.parquet``)
      into ``data_dir`` unless the ``.bin`` and map exist already (``redownload=True``
      forces it), then open the result as ``"bin"``. Other keywords go to
      ``download_images``.
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
