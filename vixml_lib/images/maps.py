"""Item -> image maps: which images (rows of a ``.bin`` or of a source) each item has.

A map is an ``int64`` array of shape ``(n_items, max_images)`` (``max_images`` is 3 in
the ViXML release): row ``i`` lists item ``i``'s images, left-packed, padded with ``-1``
("no image"). The official release stores it as a pickled object array; this workbench
stores it as a plain ``int64`` array that loads with ``np.load(..., allow_pickle=False)``.
:func:`convert_object_map` turns an official map into that form once (it unpickles, so
only use it on files you trust).

API: :func:`read_image_map` (load + validate), :func:`validate_image_map` (an array
already in memory), :func:`load_map_array` (the safe ``np.load`` both readers share),
:func:`save_image_map` (atomic, no pickle), :func:`image_counts` and
:func:`convert_object_map`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, check_input_file
from ..io_utils import atomic_path

__all__ = [
    "read_image_map",
    "validate_image_map",
    "load_map_array",
    "save_image_map",
    "image_counts",
    "convert_object_map",
]


def load_map_array(path: str | Path, if_pickled: Callable[[Path], np.ndarray]) -> np.ndarray:
    """``np.load(path, allow_pickle=False)`` of an image map, with errors naming ``path``.

    A pickled (object) array is never unpickled here: ``if_pickled(path)`` decides what
    happens instead (raise a :class:`DataFormatError` saying how to proceed, or convert
    the file with :func:`convert_object_map`) and its result is returned.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: image map not found")
    check_input_file(path, "image map (.npy array of image rows per item)")
    pickled = False
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" not in str(e).lower():
            raise DataFormatError(path, f"not a readable .npy array ({e})") from None
        pickled = True
    except EOFError:
        raise DataFormatError(path, "empty file, expected a .npy array") from None
    except Exception as e:  # noqa: BLE001 - a damaged header fails in many ways (zipfile, tokenize, struct, ...)
        raise DataFormatError(path, f"not a readable .npy array ({type(e).__name__}: {e})") from None
    if pickled:
        arr = if_pickled(path)
    if not isinstance(arr, np.ndarray):  # an .npz archive
        if hasattr(arr, "close"):
            arr.close()
        raise DataFormatError(path, "expected a .npy array, found an .npz archive")
    return arr


def _refuse_pickled(path: Path) -> np.ndarray:
    raise DataFormatError(
        path,
        "this image map is a pickled object array (the official ViXML release format), which is "
        "not loaded for safety. If you trust the file, convert it once to a plain int64 array with "
        "vixml_lib.images.convert_object_map(src, dst, max_images=3) "
        "(equivalently: np.load(src, allow_pickle=True), pad each row with -1 to 3 columns, np.save).",
    )


def read_image_map(path: str | Path, n_items: int | None = None, n_images: int | None = None) -> np.ndarray:
    """Load an image map as ``int64`` of shape ``(n_items, max_images)``, ``-1`` padded.

    Loaded with ``allow_pickle=False``. A 1-D integer array is read as one image per
    item. Checks: integer dtype, at least one column, the number of rows when
    ``n_items`` is given, and every value in ``[-1, n_images)`` when ``n_images`` (the
    number of lines of the matching ``.bin``) is given.
    """
    arr = load_map_array(path, _refuse_pickled)
    return validate_image_map(arr, Path(path), n_items=n_items, n_images=n_images)


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


def save_image_map(path: str | Path, image_map: np.ndarray) -> None:
    """Write ``image_map`` to ``path`` as a plain ``.npy`` (no pickle), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, image_map, allow_pickle=False)


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
    save_image_map(dst, out)
    return out
