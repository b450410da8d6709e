"""The authors' image store: one split's images in a ``.bin`` file, one base64 image a line.

The ViXML release keeps the images of one split in two files (:func:`bin_paths`):

- ``<split>_imgs_384_3.bin``: one base64-encoded image (JPEG) a line, no newline inside
  a line; line ``j`` (0-based) is image ``j``;
- ``<split>_imgs_384_3_map.npy``: per item, the rows of its images in the ``.bin``
  (see :mod:`vixml_lib.images.maps`).

This module holds the ``.bin`` side: :func:`encode_image_line` /
:func:`decode_image_line` (one line <-> one image), :func:`write_image_bin` (atomic),
:class:`ImageBin` (random access by line, with the line index built once with numpy),
:func:`to_rgb` (how any decoded image file is normalised before it is stored or encoded)
and :func:`check_image_index` (the one rule for image indices: ``-1`` is never "last").
"""
from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataFormatError
from ..io_utils import atomic_open

__all__ = [
    "bin_paths",
    "encode_image_line",
    "decode_image_line",
    "write_image_bin",
    "ImageBin",
    "to_rgb",
    "check_image_index",
    "count_lines",
    "ImageIndexError",
]

_CHUNK = 1 << 24  # 16 MiB per read when indexing a .bin file


def bin_paths(data_dir: str | Path, split: str, size: int = 384, max_images: int = 3) -> tuple[Path, Path]:
    """``(<data_dir>/<split>_imgs_<size>_<max_images>.bin, ..._map.npy)`` (384, 3: the authors' names)."""
    d = Path(data_dir)
    stem = f"{split}_imgs_{int(size)}_{int(max_images)}"
    return d / f"{stem}.bin", d / f"{stem}_map.npy"


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


def to_rgb(img: Image.Image) -> Image.Image:
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


def check_image_index(j, n: int, where: str) -> int:
    """``j`` as an ``int`` in ``[0, n)``; ``TypeError`` / ``IndexError`` naming ``where`` otherwise.

    Numpy integers are fine; negative indices are refused (``-1`` means "no image" in a
    map and must not silently pick the last image).
    """
    try:
        k = int(j)
    except (TypeError, ValueError):
        raise TypeError(f"image index must be an integer, got {type(j).__name__}") from None
    if k != j:
        raise TypeError(f"image index must be an integer, got {j!r}")
    if k < 0 or k >= n:
        hint = " (-1 in an image map means 'no image')" if k == -1 else ""
        raise ImageIndexError(where, f"image index {k} out of range; there are {n} images (0..{n - 1}){hint}")
    return k


class ImageIndexError(DataFormatError, IndexError):
    """An image index past the end of an image store (an ``IndexError`` and the project's error)."""


def count_lines(path: str | Path) -> int:
    """Number of lines (images) of a ``.bin``, as :class:`ImageBin` counts them (a last line
    without newline counts), reading the file in chunks."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


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

    def __enter__(self) -> ImageBin:
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

    def raw(self, i: int) -> bytes:
        """The base64 bytes of line ``i`` (without the line break)."""
        j = check_image_index(i, len(self), str(self.path))
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
        j = check_image_index(i, len(self), str(self.path))
        try:
            return decode_image_line(self.raw(j))
        except ValueError as e:
            raise DataFormatError(self.path, f"image {j}: {e}", line=j + 1) from None
