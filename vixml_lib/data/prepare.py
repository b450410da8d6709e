"""Turn an XML-repository dataset folder into the files every XMC code base reads.

``<data_dir>/{trn,tst,lbl}.json.gz`` (one JSON object a line: ``uid``, ``title``,
``content``, and for trn/tst ``target_ind`` / ``target_rel``) become

- ``{trn,tst,lbl}.raw.txt``: one text a line (title, or title + " " + content);
- ``{trn,tst}_X_Y.txt``: header ``n_rows n_labels``, then ``label:value`` pairs a line.

Folders that already hold the raw/X_Y files (as the official downloads do after the
authors' ``extract_text_and_labels.py``) are validated and used as they are.

Derived files are rebuilt when the content of a json.gz file (or a setting) changed, not only
when it is newer (fingerprints in ``.vixml-prepared.json``, :mod:`vixml_lib.data.fingerprints`).
:func:`prepare_dataset` checks everything -- every json.gz line, the filters, the image maps
against their items and ``.bin`` files -- before it writes anything, then writes the five
files together or not at all, so a bad input or a full disk leaves the folder as it was.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DataFormatError, OutputError
from ..io_utils import atomic_path, read_json, write_json
from ..validation import check_encoding
from . import formats
from .fingerprints import SourceStamp
from .jsongz import read_json_split

log = logging.getLogger(__name__)

SPLITS = ("trn", "tst")
ALL_SPLITS = ("trn", "tst", "lbl")


STAMP_FILE = ".vixml-prepared.json"  # what the raw/X_Y files were made from (fingerprints)
BIN_LINES_FILE = ".vixml-bin-lines.json"  # line counts of the image .bin files, by size and times


def guess_title_only(data_dir: Path) -> bool:
    """XML-repository convention: ``*Titles*`` datasets use titles only."""
    name = Path(data_dir).resolve().name.lower()
    return "titles" in name or name.startswith("demo")


def _newer(outputs: list[Path], inputs: list[Path]) -> bool:
    if not all(p.exists() for p in outputs):
        return False
    return min(p.stat().st_mtime for p in outputs) >= max(p.stat().st_mtime for p in inputs)


def _write_all(writes: list[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write every file or none: each ``write(tmp)`` fills a temporary file beside its target;
    the temporaries are renamed into place only after all of them were written (a full disk
    half-way leaves the old files as they were)."""
    with contextlib.ExitStack() as stack:
        tmps = [(stack.enter_context(atomic_path(path)), write) for path, write in writes]
        for tmp, write in tmps:
            write(tmp)


def _outputs(data_dir: Path) -> list[Path]:
    return [data_dir / f"{s}.raw.txt" for s in ALL_SPLITS] + [data_dir / f"{s}_X_Y.txt" for s in SPLITS]


@dataclass
class _Conversion:
    """The parsed json.gz splits of a folder, ready to be written."""

    data_dir: Path
    texts: dict[str, list[str]]
    Y: dict[str, sp.csr_matrix]
    encoding: str
    stamp: SourceStamp
    records: dict
    settings: dict

    def write(self) -> list[Path]:
        """The five files, all or none; then the fingerprints of their sources."""
        d = self.data_dir
        writes = [(d / f"{s}.raw.txt", functools.partial(formats.write_texts, texts=self.texts[s],
                                                         encoding=self.encoding)) for s in ALL_SPLITS]
        writes += [(d / f"{s}_X_Y.txt", functools.partial(formats.write_xy, Y=self.Y[s])) for s in SPLITS]
        try:
            _write_all(writes)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutputError(f"{d}: no space left on the device while writing the converted files; "
                                  "nothing was changed (free some space and run prepare again)") from None
            raise
        try:
            self.stamp.write(self.records, self.settings)
        except OSError as e:  # the outputs are fine; they will be rebuilt next time
            log.warning("%s: could not record the sources' fingerprints (%s)", self.stamp.path, e)
        log.info("%s: wrote %s", d, ", ".join(p.name for p, _ in writes))
        return [p for p, _ in writes]


def _parse_if_changed(data_dir: Path, title_only: bool | None, encoding: str, force: bool) -> _Conversion | None:
    """The parsed splits when the raw/X_Y files must be (re)made, else None (up to date)."""
    check_encoding(encoding, source="prepare", key="encoding")
    title_only = guess_title_only(data_dir) if title_only is None else bool(title_only)
    inputs = {s: data_dir / f"{s}.json.gz" for s in ALL_SPLITS}
    stamp = SourceStamp(data_dir / STAMP_FILE)
    records = stamp.current(inputs)
    settings = {"title_only": title_only, "encoding": encoding}
    outputs = _outputs(data_dir)
    if not force and all(p.is_file() for p in outputs):
        if stamp.path.exists() and stamp.matches(records, settings):
            log.info("%s: raw/X_Y files are up to date", data_dir)
            return None
        # converted before fingerprints were kept: trust modification times only where we cannot write
        if not stamp.path.exists() and _newer(outputs, list(inputs.values())) and not os.access(data_dir, os.W_OK):
            log.warning("%s: read-only folder without %s: trusting that the raw/X_Y files are newer than the "
                        "json.gz files", data_dir, STAMP_FILE)
            return None
    texts, Y = {}, {}
    texts["lbl"], _ = read_json_split(inputs["lbl"], title_only, None)
    for s in SPLITS:
        texts[s], Y[s] = read_json_split(inputs[s], title_only, len(texts["lbl"]))
    return _Conversion(data_dir, texts, Y, encoding, stamp, records, settings)


def convert_json(data_dir: str | Path, title_only: bool | None = None, encoding: str = "utf-8",
                 force: bool = False) -> list[Path]:
    """Convert ``{trn,tst,lbl}.json.gz`` into raw text and ``X_Y`` files; returns the files written.

    Skipped (returns ``[]``) when the outputs were made from json.gz files of the same content
    (sha256) with the same settings, unless ``force``. Every split is parsed before anything is
    written, and the five files are replaced together or not at all.
    """
    conversion = _parse_if_changed(Path(data_dir), title_only, encoding, force)
    return conversion.write() if conversion is not None else []


@dataclass
class XMCDataset:
    """A prepared dataset: texts, label matrices, filter pairs and (optional) image maps."""

    path: Path
    texts: dict[str, list[str]]
    Y: dict[str, sp.csr_matrix]
    filters: dict[str, np.ndarray]
    image_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        return len(self.texts["lbl"])

    def summary(self) -> dict:
        return {
            "dataset": self.path.name,
            "n_train": len(self.texts["trn"]),
            "n_test": len(self.texts["tst"]),
            "n_labels": self.n_labels,
            "train_pairs": int(self.Y["trn"].nnz),
            "test_pairs": int(self.Y["tst"].nnz),
            "test_filter_pairs": int(len(self.filters["tst"])),
            "has_images": bool(self.image_maps),
        }


def _filter_path(data_dir: Path, split: str) -> Path:
    name = {"trn": "train", "tst": "test"}[split]
    return data_dir / f"filter_labels_{name}.txt"


def image_map_path(data_dir: Path, split: str) -> Path:
    """The item -> image map of a split, in the authors' layout."""
    from ..images.store import bin_paths

    return bin_paths(data_dir, split)[1]


def _bin_lines(data_dir: Path, bin_path: Path, counts: dict) -> int:
    """Number of images (lines) of a ``.bin``: remembered in ``BIN_LINES_FILE`` by size and
    times (counting reads the whole file); new counts are added to ``counts``."""
    from ..images.store import count_lines

    try:
        cache = read_json(data_dir / BIN_LINES_FILE)
    except (OSError, ValueError):
        cache = {}
    st = bin_path.stat()
    key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    known = cache.get(bin_path.name) if isinstance(cache, dict) else None
    if isinstance(known, dict) and known.get("stat") == key and isinstance(known.get("lines"), int):
        return known["lines"]
    counts[bin_path.name] = {"stat": key, "lines": count_lines(bin_path)}
    return counts[bin_path.name]["lines"]


def _remember_bin_lines(data_dir: Path, counts: dict) -> None:
    if not counts:
        return
    try:
        cache = read_json(data_dir / BIN_LINES_FILE)
    except (OSError, ValueError):
        cache = {}
    try:
        write_json(data_dir / BIN_LINES_FILE, {**(cache if isinstance(cache, dict) else {}), **counts})
    except OSError as e:  # a read-only folder: count again next time
        log.debug("could not remember the line counts of the .bin files: %s", e)


def _assemble(data_dir: Path, texts: dict[str, list[str]], Y: dict[str, sp.csr_matrix], images: bool,
              check_bins: bool, counts: dict) -> XMCDataset:
    """Cross-check texts, label matrices, filters and image maps; the dataset when all agree."""
    for s in ALL_SPLITS:
        if not texts[s]:
            raise DataFormatError(data_dir / f"{s}.raw.txt", "empty file: the split has no items")
    n_labels = len(texts["lbl"])
    filters = {}
    for s in SPLITS:
        path = data_dir / f"{s}_X_Y.txt"
        if Y[s].shape[1] != n_labels:
            raise DataFormatError(path, f"header says {Y[s].shape[1]} labels but lbl.raw.txt has {n_labels} lines", 1)
        if Y[s].shape[0] != len(texts[s]):
            raise DataFormatError(
                path, f"{Y[s].shape[0]} label rows but {s}.raw.txt has {len(texts[s])} texts "
                "(they must match row for row)"
            )
        fpath = _filter_path(data_dir, s)
        if fpath.exists():
            filters[s] = formats.read_filter(fpath, shape=Y[s].shape)
        else:
            log.warning("%s not found: no (query, label) pairs are filtered for %s", fpath, s)
            filters[s] = np.zeros((0, 2), dtype=np.int64)
    maps = {}
    if images:
        from ..images import read_image_map
        from ..images.store import bin_paths

        for s in ALL_SPLITS:
            bin_path, mpath = bin_paths(data_dir, s)
            if mpath.exists():
                n_images = _bin_lines(data_dir, bin_path, counts) if check_bins and bin_path.is_file() else None
                maps[s] = read_image_map(mpath, n_items=len(texts[s]), n_images=n_images)
    return XMCDataset(data_dir, texts, Y, filters, maps)


def load_dataset(data_dir: str | Path, encoding: str = "utf-8", images: bool = True,
                 check_bins: bool = False) -> XMCDataset:
    """Read and cross-check a prepared dataset folder.

    Checks: every split has texts, label matrices agree with the number of labels, each
    split has as many texts as label rows, filter pairs are in range, image maps have a row
    per item (and, with ``check_bins``, point at lines that exist in their ``.bin``).
    A missing filter file means no filtering (the authors ask for an empty file).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such dataset folder")
    check_encoding(encoding, source="dataset", key="encoding")
    missing = [p.name for p in _outputs(data_dir) if not p.is_file()]
    if missing:
        absent = [f"{s}.json.gz" for s in ALL_SPLITS if not (data_dir / f"{s}.json.gz").is_file()]
        how = (f"put {', '.join(absent)} there too" if absent and len(absent) < 3
               else f"run `vixml prepare --data {data_dir}`")
        raise FileNotFoundError(f"{data_dir}: missing {', '.join(missing)}; {how} "
                                "(prepare converts trn/tst/lbl.json.gz)")
    texts = {s: formats.read_texts(data_dir / f"{s}.raw.txt", encoding=encoding) for s in ALL_SPLITS}
    Y = {s: formats.read_xy(data_dir / f"{s}_X_Y.txt") for s in SPLITS}
    counts: dict = {}
    ds = _assemble(data_dir, texts, Y, images, check_bins, counts)
    _remember_bin_lines(data_dir, counts)
    return ds


def prepare_dataset(
    data_dir: str | Path, title_only: bool | None = None, encoding: str = "utf-8", force: bool = False
) -> XMCDataset:
    """Convert json.gz files when present (and changed), then cross-check everything (image
    maps against their ``.bin`` files included); files are written only when all is well."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: {'not a folder' if data_dir.exists() else 'no such dataset folder'}")
    check_encoding(encoding, source="prepare", key="encoding")
    present = [s for s in ALL_SPLITS if (data_dir / f"{s}.json.gz").exists()]
    conversion = None
    if len(present) == len(ALL_SPLITS):
        conversion = _parse_if_changed(data_dir, title_only, encoding, force)
    elif present and force:
        absent = [f"{s}.json.gz" for s in ALL_SPLITS if s not in present]
        raise FileNotFoundError(f"{data_dir}: cannot convert: missing {', '.join(absent)}")
    if conversion is None:
        return load_dataset(data_dir, encoding=encoding, check_bins=True)
    counts: dict = {}
    ds = _assemble(data_dir, conversion.texts, conversion.Y, True, True, counts)
    conversion.write()
    _remember_bin_lines(data_dir, counts)
    return ds
