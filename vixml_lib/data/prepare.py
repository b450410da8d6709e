"""Turn an XML-repository dataset folder into the files every XMC code base reads.

``<data_dir>/{trn,tst,lbl}.json.gz`` (one JSON object a line: ``uid``, ``title``,
``content``, and for trn/tst ``target_ind`` / ``target_rel``) become

- ``{trn,tst,lbl}.raw.txt``: one text a line (title, or title + " " + content);
- ``{trn,tst}_X_Y.txt``: header ``n_rows n_labels``, then ``label:value`` pairs a line.

Folders that already hold the raw/X_Y files (as the official downloads do after the
authors' ``extract_text_and_labels.py``) are validated and used as they are.
"""
from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import DataFormatError
from . import formats

log = logging.getLogger(__name__)

SPLITS = ("trn", "tst")
ALL_SPLITS = ("trn", "tst", "lbl")


def _clean(text: str) -> str:
    return " ".join(text.split())


def _read_json_split(path: Path, title_only: bool, n_labels: int | None):
    """Read one json.gz split: texts and, when ``n_labels`` is given, a label matrix."""
    texts, indptr, indices, values = [], [0], [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                raise DataFormatError(path, "empty line, expected one JSON object", lineno)
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(path, f"not valid JSON ({e.msg})", lineno) from None
            if not isinstance(obj, dict) or "title" not in obj:
                raise DataFormatError(path, "expected an object with a 'title' field", lineno)
            text = str(obj["title"])
            if not title_only:
                text = f"{text} {obj.get('content', '') or ''}"
            texts.append(_clean(text))
            if n_labels is None:
                continue
            ind = obj.get("target_ind")
            rel = obj.get("target_rel", [1.0] * len(ind) if isinstance(ind, list) else None)
            if not isinstance(ind, list) or not all(isinstance(i, int) for i in ind):
                raise DataFormatError(path, f"'target_ind' must be a list of integers (uid {obj.get('uid')!r})", lineno)
            if not isinstance(rel, list) or len(rel) != len(ind):
                raise DataFormatError(
                    path, f"'target_rel' must be a list as long as 'target_ind' ({len(ind)}) "
                    f"(uid {obj.get('uid')!r})", lineno
                )
            bad = [i for i in ind if not 0 <= i < n_labels]
            if bad:
                raise DataFormatError(
                    path, f"label index {bad[0]} out of range [0, {n_labels}) (uid {obj.get('uid')!r})", lineno
                )
            if len(set(ind)) != len(ind):
                raise DataFormatError(path, f"repeated label index in 'target_ind' (uid {obj.get('uid')!r})", lineno)
            order = np.argsort(ind)
            indices.extend(np.asarray(ind, dtype=np.int64)[order].tolist())
            values.extend(np.asarray(rel, dtype=np.float32)[order].tolist())
            indptr.append(len(indices))
    if n_labels is None:
        return texts, None
    Y = sp.csr_matrix(
        (np.asarray(values, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
        shape=(len(texts), n_labels),
    )
    return texts, Y


def guess_title_only(data_dir: Path) -> bool:
    """XML-repository convention: ``*Titles*`` datasets use titles only."""
    name = Path(data_dir).resolve().name.lower()
    return "titles" in name or name.startswith("demo")


def _newer(outputs: list[Path], inputs: list[Path]) -> bool:
    if not all(p.exists() for p in outputs):
        return False
    return min(p.stat().st_mtime for p in outputs) >= max(p.stat().st_mtime for p in inputs)


def convert_json(data_dir: str | Path, title_only: bool | None = None, encoding: str = "utf-8",
                 force: bool = False) -> list[Path]:
    """Convert ``{trn,tst,lbl}.json.gz`` into raw text and ``X_Y`` files; returns the files written.

    Skipped (returns ``[]``) when the outputs are newer than the inputs, unless ``force``.
    """
    data_dir = Path(data_dir)
    title_only = guess_title_only(data_dir) if title_only is None else title_only
    inputs = [data_dir / f"{s}.json.gz" for s in ALL_SPLITS]
    outputs = [data_dir / f"{s}.raw.txt" for s in ALL_SPLITS] + [data_dir / f"{s}_X_Y.txt" for s in SPLITS]
    if not force and _newer(outputs, inputs):
        log.info("%s: raw/X_Y files are up to date", data_dir)
        return []
    lbl_texts, _ = _read_json_split(inputs[2], title_only, None)
    split_data = {s: _read_json_split(data_dir / f"{s}.json.gz", title_only, len(lbl_texts)) for s in SPLITS}
    # Write only after every split parsed, so a bad file leaves nothing new behind.
    formats.write_texts(data_dir / "lbl.raw.txt", lbl_texts, encoding=encoding)
    for s, (texts, Y) in split_data.items():
        formats.write_texts(data_dir / f"{s}.raw.txt", texts, encoding=encoding)
        formats.write_xy(data_dir / f"{s}_X_Y.txt", Y)
    log.info("%s: wrote %s", data_dir, ", ".join(p.name for p in outputs))
    return outputs


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


def load_dataset(data_dir: str | Path, encoding: str = "utf-8", images: bool = True) -> XMCDataset:
    """Read and cross-check a prepared dataset folder.

    Checks: label matrices agree with the number of labels, each split has as many
    texts as label rows, filter pairs are in range, image maps have a row per item.
    A missing filter file means no filtering (the authors ask for an empty file).
    """
    data_dir = Path(data_dir)
    missing = [p.name for s in ALL_SPLITS for p in [data_dir / f"{s}.raw.txt"] if not p.exists()]
    missing += [f"{s}_X_Y.txt" for s in SPLITS if not (data_dir / f"{s}_X_Y.txt").exists()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: missing {', '.join(missing)}; run `vixml prepare --data {data_dir}` "
            "(it converts trn/tst/lbl.json.gz)"
        )
    texts = {s: formats.read_texts(data_dir / f"{s}.raw.txt", encoding=encoding) for s in ALL_SPLITS}
    n_labels = len(texts["lbl"])
    Y, filters, maps = {}, {}, {}
    for s in SPLITS:
        path = data_dir / f"{s}_X_Y.txt"
        Y[s] = formats.read_xy(path)
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
    if images:
        from ..images import read_image_map

        for s in ALL_SPLITS:
            mpath = image_map_path(data_dir, s)
            if mpath.exists():
                maps[s] = read_image_map(mpath, n_items=len(texts[s]))
    return XMCDataset(data_dir, texts, Y, filters, maps)


def prepare_dataset(
    data_dir: str | Path, title_only: bool | None = None, encoding: str = "utf-8", force: bool = False
) -> XMCDataset:
    """Convert json.gz files when present (and stale), then load and cross-check everything."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such dataset folder")
    if all((data_dir / f"{s}.json.gz").exists() for s in ALL_SPLITS):
        convert_json(data_dir, title_only=title_only, encoding=encoding, force=force)
    return load_dataset(data_dir, encoding=encoding)
