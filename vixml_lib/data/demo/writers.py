"""Writing a sampled demo catalogue in the LF-AmazonTitles layout (see ``METHOD.md``).

Files (in the output folder): ``trn.json.gz``, ``tst.json.gz``, ``lbl.json.gz`` (one JSON
object a line: ``uid``, ``title``, ``content``, and ``target_ind`` / ``target_rel`` for
queries); ``<split>_imgs_384_3.bin`` (one base64 JPEG a line) and
``<split>_imgs_384_3_map.npy`` (plain int64, ``(n_items, max_images)``, -1 padded);
``filter_labels_test.txt`` / ``filter_labels_train.txt`` (``row label`` lines);
``<split>_attributes.csv`` (hidden ground truth per item, for probes); and
``demo_meta.json`` (:data:`META_FILE`, written last by :mod:`.build`), marking a complete
build. Every writer is deterministic: gzip headers carry no timestamp nor file name.
"""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...images.store import bin_paths
from .catalogue import Builder, Item
from .vocabulary import COLOURS, PATTERNS, TYPES

__all__ = ["META_FILE", "SPLITS", "demo_files", "write_splits"]

META_FILE = "demo_meta.json"
SPLITS = ("trn", "tst", "lbl")

_ATTR_COLUMNS = ["row", "uid", "kind", "category", "type", "family", "brand", "material", "variant", "colour",
                 "pattern", "edition", "n_targets", "title_mentions_colour", "title_mentions_pattern",
                 "title_uses_synonym", "content_mentions_colour", "n_images", "copy_of_label"]


def demo_files() -> list[str]:
    """Names of the files of a demo dataset (besides ``demo_meta.json``)."""
    names = [f"{s}.json.gz" for s in SPLITS]
    names += [p.name for s in SPLITS for p in bin_paths(".", s)]  # the authors' file names always say 384_3
    names += [f"{s}_attributes.csv" for s in SPLITS]
    names += ["filter_labels_test.txt", "filter_labels_train.txt"]
    return names


def write_splits(out: Path, b: Builder, splits: dict[str, list[Item]], max_images: int) -> dict[str, int]:
    """Write every file but the meta file; return the image and filter counts for the meta file."""
    counts: dict[str, int] = {}
    for split, items in splits.items():
        _write_jsonl_gz(out / f"{split}.json.gz", items, with_targets=split != "lbl")
        counts[f"n_images_{split}"] = _write_images(out, split, items, max_images)
        _write_attributes(out / f"{split}_attributes.csv", b, items, "label" if split == "lbl" else "query")
    counts["n_filter_test"] = _write_filter(out / "filter_labels_test.txt", splits["tst"])
    counts["n_filter_train"] = _write_filter(out / "filter_labels_train.txt", splits["trn"])
    return counts


def _write_jsonl_gz(path: Path, items: list[Item], with_targets: bool) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        for it in items:
            obj: dict[str, Any] = {"uid": it.uid, "title": it.title, "content": it.content}
            if with_targets:
                obj["target_ind"] = list(it.targets)
                obj["target_rel"] = [1.0] * len(it.targets)
            gz.write(json.dumps(obj, ensure_ascii=False).encode("utf-8"))
            gz.write(b"\n")


def _write_images(out: Path, split: str, items: list[Item], max_images: int) -> int:
    mp = np.full((len(items), max_images), -1, dtype=np.int64)  # (n_items, max_images) line numbers, -1 padded
    n = 0
    bin_path, map_path = bin_paths(out, split)
    with open(bin_path, "wb") as f:
        for i, it in enumerate(items):
            for j, line in enumerate(it.image_lines):
                f.write(line)
                f.write(b"\n")
                mp[i, j] = n
                n += 1
    with open(map_path, "wb") as f:
        np.save(f, mp, allow_pickle=False)
    return n


def _write_attributes(path: Path, b: Builder, items: list[Item], kind: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(_ATTR_COLUMNS)
        for i, it in enumerate(items):
            fam = b.families[it.fid]
            ci, pi = fam.variants[it.variant]
            w.writerow([i, it.uid, kind, fam.category, TYPES[fam.type_idx][0], it.fid, b.brands[fam.brand],
                        fam.material.lower(), it.variant, COLOURS[ci][0], PATTERNS[pi], it.edition, len(it.targets),
                        int(it.title_colour), int(it.title_pattern), int(it.title_synonym), int(it.content_colour),
                        len(it.image_lines), it.copy_of_label])


def _write_filter(path: Path, items: list[Item]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, it in enumerate(items):
            if it.copy_of_label >= 0:
                f.write(f"{i} {it.copy_of_label}\n")
                n += 1
    return n
