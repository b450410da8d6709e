"""Image store helpers for the authors' layout of product images.

The ViXML release keeps the images of one split in two files:

- ``<split>_imgs_384_3.bin``: one base64-encoded image (JPEG) a line, no newline inside
  a line; line ``j`` (0-based) is image ``j``.
- ``<split>_imgs_384_3_map.npy``: per item, the rows of its images in the ``.bin``
  (at most ``max_images``, here 3), padded with ``-1``.

The official map is a pickled object array. This workbench stores it as a plain
``int64`` array of shape ``(n_items, max_images)`` that loads with
``np.load(..., allow_pickle=False)``; :func:`convert_object_map` turns an official map
into that form once (it unpickles, so only use it on files you trust).

API: :func:`encode_image_line` / :func:`decode_image_line` (one line <-> one image),
:func:`write_image_bin` (atomic), :class:`ImageBin` (random access by line, with the
line index built once with numpy), :func:`read_image_map` (validated map) and
:func:`image_counts`.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataFormatError
from .io_utils import atomic_open, atomic_path

__all__ = [
    "encode_image_line",
    "decode_image_line",
    "write_image_bin",
    "ImageBin",
    "read_image_map",
    "image_counts",
    "convert_object_map",
]

_CHUNK = 1 << 24  # 16 MiB per read when indexing a .bin file


def encode_image_line(img: Image.Image, format: str = "JPEG", quality: int = 90) -> bytes:
    """Encode ``img`` as one ``.bin`` line: base64 of the encoded file, no newline."""
    if format.upper() in ("JPEG", "JPG") and img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    if format.upper() in ("JPEG", "JPG"):
        img.save(buf, format="JPEG", quality=int(quality))
    else:
        img.save(buf, format=format)
    return base64.b64encode(buf.getvalue())


def decode_image_line(line: bytes | str) -> Image.Image:
    """Decode one ``.bin`` line (base64 of an image file) into an RGB image.

    Surrounding whitespace (a trailing ``\\n`` or ``\\r\\n``) is ignored. Raises
    ``ValueError`` when the line is not base64 or not a readable image.
    """
    if isinstance(line, str):
        line = line.encode("ascii", errors="replace")
    line = line.strip()
    if not line:
        raise ValueError("empty line where a base64-encoded image was expected")
    try:
        data = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not valid base64 ({e})") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"base64 decodes to {len(data)} bytes that are not a readable image ({e})") from None


def write_image_bin(path: str | Path, lines: Iterable[bytes]) -> int:
    """Write base64 image lines to ``path`` (one a line), atomically. Returns the count.

    Each element must be one encoded image (e.g. from :func:`encode_image_line`) with
    no newline inside.
    """
    n = 0
    with atomic_open(path, "wb") as f:
        for line in lines:
            if isinstance(line, str):
                line = line.encode("ascii")
            if b"\n" in line or b"\r" in line:
                raise ValueError(f"{path}: image {n} contains a newline; lines must be single base64 strings")
            f.write(line)
            f.write(b"\n")
            n += 1
    return n


def _line_index(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets of every line in ``path`` (ends exclude the newline)."""
    size = path.stat().st_size
    newlines = []
    with open(path, "rb") as f:
        pos = 0
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            nl = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            if nl.size:
                newlines.append(nl.astype(np.int64) + pos)
            pos += len(chunk)
    ends = np.concatenate(newlines) if newlines else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], ends + 1]).astype(np.int64)
    if size > 0 and (ends.size == 0 or ends[-1] != size - 1):
        ends = np.concatenate([ends, [size]]).astype(np.int64)  # last line without "\n"
    else:
        starts = starts[:-1]
    return starts, ends


class ImageBin:
    """Random access to the images of a ``.bin`` file (one base64 image a line).

    The line offsets are computed once when the file is opened (a vectorised scan for
    newlines, in chunks, so large files are fine). ``len(b)`` is the number of lines,
    ``b.raw(i)`` the base64 bytes of line ``i`` (0-based), ``b.image(i)`` the decoded
    RGB image. Indices are line numbers as stored in the image map; negative indices
    are refused (``-1`` means "no image" in a map and must not silently pick the last
    line). Usable as a context manager; the file handle is reopened lazily after
    ``close()`` or in a forked worker.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: image .bin file not found")
        self._starts, self._ends = _line_index(self.path)
        self._f = None
        self._pid = None

    def __len__(self) -> int:
        return int(self._starts.size)

    def __repr__(self) -> str:
        return f"ImageBin({str(self.path)!r}, n_images={len(self)})"

    def __enter__(self) -> "ImageBin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_f"] = None
        state["_pid"] = None
        return state

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _check(self, i) -> int:
        try:
            j = int(i)
        except (TypeError, ValueError):
            raise TypeError(f"image index must be an integer, got {type(i).__name__}") from None
        if j != i:
            raise TypeError(f"image index must be an integer, got {i!r}")
        n = len(self)
        if j < 0 or j >= n:
            hint = " (-1 in an image map means 'no image')" if j == -1 else ""
            raise IndexError(f"{self.path}: image index {j} out of range; the file has {n} images (0..{n - 1}){hint}")
        return j

    def raw(self, i: int) -> bytes:
        """The base64 bytes of line ``i`` (without the line break)."""
        j = self._check(i)
        start, end = int(self._starts[j]), int(self._ends[j])
        if self._f is None or self._pid != os.getpid():
            self._f = open(self.path, "rb")
            self._pid = os.getpid()
        if hasattr(os, "pread"):
            data = os.pread(self._f.fileno(), end - start, start)
        else:  # pragma: no cover - non-POSIX
            self._f.seek(start)
            data = self._f.read(end - start)
        if data.endswith(b"\r"):
            data = data[:-1]
        return data

    def image(self, i: int) -> Image.Image:
        """The image on line ``i``, decoded to RGB. Bad data -> DataFormatError naming the line."""
        j = self._check(i)
        try:
            return decode_image_line(self.raw(j))
        except ValueError as e:
            raise DataFormatError(self.path, f"image {j}: {e}", line=j + 1) from None


def read_image_map(path: str | Path, n_items: int | None = None, n_images: int | None = None) -> np.ndarray:
    """Load an image map as ``int64`` of shape ``(n_items, max_images)``, ``-1`` padded.

    Loaded with ``allow_pickle=False``. A 1-D integer array is read as one image per
    item. Checks: integer dtype, at least one column, the number of rows when
    ``n_items`` is given, and every value in ``[-1, n_images)`` when ``n_images`` (the
    number of lines of the matching ``.bin``) is given.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataFormatError(
                path,
                "this image map is a pickled object array (the official ViXML release format), which is "
                "not loaded for safety. If you trust the file, convert it once to a plain int64 array with "
                "vixml_lib.images.convert_object_map(src, dst, max_images=3) "
                "(equivalently: np.load(src, allow_pickle=True), pad each row with -1 to 3 columns, np.save).",
            ) from None
        raise DataFormatError(path, f"not a readable .npy array ({e})") from None
    except OSError as e:
        if not path.exists():
            raise FileNotFoundError(f"{path}: image map not found") from None
        raise DataFormatError(path, f"not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise DataFormatError(path, "expected a .npy array, found an .npz archive")
    return validate_image_map(arr, path, n_items=n_items, n_images=n_images)


def validate_image_map(arr, where: str | Path, n_items: int | None = None, n_images: int | None = None,
                       images_in: str = "the .bin") -> np.ndarray:
    """Check an image map (integer dtype, shape ``(n_items, max_images)``, values in
    ``[-1, n_images)``) and return it as contiguous ``int64``; errors name ``where``,
    the item row and the bad value."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise DataFormatError(where, f"image map must hold integers, found dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DataFormatError(where, f"image map must have shape (n_items, max_images), found {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if n_items is not None and arr.shape[0] != n_items:
        raise DataFormatError(where, f"image map has {arr.shape[0]} rows but there are {n_items} items")
    bad = arr < -1
    if n_images is not None:
        bad |= arr >= n_images
    if bad.any():
        r, c = np.argwhere(bad)[0]
        valid = f"-1 or 0..{n_images - 1}" if n_images is not None else ">= -1"
        extra = f" ({images_in} has {n_images} images)" if n_images is not None else ""
        raise DataFormatError(
            where,
            f"item row {int(r)} (0-based), column {int(c)}: image index {int(arr[r, c])} is out of range{extra}; "
            f"valid values are {valid}; {int(bad.sum())} bad value(s) in all",
        )
    return arr


def image_counts(image_map: np.ndarray) -> np.ndarray:
    """Number of images of each item (entries >= 0 per row), as int64."""
    m = np.asarray(image_map)
    if m.ndim == 1:
        m = m[:, None]
    return (m >= 0).sum(axis=1).astype(np.int64)


def convert_object_map(src: str | Path, dst: str | Path, max_images: int = 3) -> np.ndarray:
    """Convert an official (pickled, object-dtype) image map to a plain int64 ``.npy``.

    Unpickles ``src``: only use it on files you trust. Each element may be a list or
    array of image rows, a single row number, or ``-1`` / ``None`` / empty for "no image";
    rows are kept in order, truncated to ``max_images`` and padded with ``-1``. The
    result is written to ``dst`` atomically and returned.
    """
    obj = np.load(src, allow_pickle=True)
    out = np.full((len(obj), max_images), -1, dtype=np.int64)
    for i, el in enumerate(obj):
        if el is None:
            continue
        rows = [int(v) for v in np.atleast_1d(np.asarray(el, dtype=np.int64)) if int(v) >= 0]
        rows = rows[:max_images]
        out[i, : len(rows)] = rows
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, out, allow_pickle=False)
    return out
