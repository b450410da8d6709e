"""Building a demo dataset in a folder: :func:`make_demo_dataset` samples the catalogue,
writes its files into a temporary sibling folder and renames it into place, so that an
interrupted build leaves nothing half-written; ``demo_meta.json``, written last, marks a
complete build and lets a later call reuse it."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...io_utils import read_json, write_json
from .catalogue import Builder
from .spec import DemoSpec, resolve_spec, spec_dict
from .vocabulary import TYPES
from .writers import META_FILE, demo_files, write_splits

__all__ = ["GENERATOR_VERSION", "make_demo_dataset"]

GENERATOR_VERSION = 1

_DESCRIPTION = (
    "Synthetic product catalogue. Families = brand + material + product type (24 types with synonyms, e.g. "
    "Couch/sofa, Sneakers/trainers, Mug/cup); each family is sold in 2-6 visual variants (colour x pattern), each "
    "variant one label (sometimes two: a size edition). Label titles usually omit the colour, so labels of a family "
    "have (near-)identical titles and differ only in their images (type silhouette in the variant's colour and "
    "pattern, jittered per view). Queries are related products (accessories) of a Zipf-popular family variant; their "
    "titles use the brand, the material and mostly a synonym of the type, and name the colour in ~20%; their images "
    "show the variant. Targets: the variant's labels plus same-colour labels of related families of the brand. A few "
    "queries are copies of labels; those self pairs are excluded from targets and listed in filter_labels_*.txt."
)


def make_demo_dataset(out_dir: str | os.PathLike, preset: str | DemoSpec = "tiny", seed: int = 0,
                      overwrite: bool = False) -> Path:
    """Build the demo catalogue ``preset`` ("tiny", "small" or a :class:`DemoSpec`) in ``out_dir``.

    Deterministic: the same (preset, seed) gives byte-identical files. When ``out_dir``
    already holds a complete build of the same preset and seed (its ``demo_meta.json``
    says so and all files are there), it is returned as is. A build of another preset
    or seed raises ``FileExistsError`` unless ``overwrite=True``. The dataset is built
    in a temporary sibling directory and renamed into place at the end, so an
    interrupted build leaves nothing half-written. Returns ``Path(out_dir)``.
    """
    spec = resolve_spec(preset)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    out_dir = Path(out_dir)
    if _check_existing(out_dir, spec, seed, overwrite):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        counts = _build(tmp, spec, seed)
        _write_meta(tmp, spec, seed, counts)  # last: marks the build complete
        os.chmod(tmp, 0o755)  # mkdtemp creates a private folder
        _move_into_place(tmp, out_dir, spec, seed)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _build(out: Path, spec: DemoSpec, seed: int) -> dict[str, Any]:
    """Sample the catalogue and write its files (all but the meta file) into ``out``; return its counts."""
    b = Builder(spec, seed)
    splits = b.sample()
    trn, tst = splits["trn"], splits["tst"]
    counts: dict[str, Any] = {"n_labels": len(b.labels), "n_train": len(trn), "n_test": len(tst),
                              "n_families": len(b.families), "n_brands": len(b.brands), "n_types": len(TYPES)}
    counts.update(write_splits(out, b, splits, spec.max_images))
    counts["avg_labels_per_train_query"] = round(float(np.mean([len(q.targets) for q in trn])), 4)
    counts["avg_labels_per_test_query"] = round(float(np.mean([len(q.targets) for q in tst])), 4)
    counts["avg_variants_per_family"] = round(float(np.mean([len(f.variants) for f in b.families])), 4)
    return counts


def _write_meta(out: Path, spec: DemoSpec, seed: int, counts: dict[str, Any]) -> None:
    """``demo_meta.json``: how the dataset was made, its counts and the size of every file."""
    meta = {
        "generator": "vixml_lib.data.demo",
        "generator_version": GENERATOR_VERSION,
        "preset": spec.name,
        "seed": seed,
        "spec": spec_dict(spec),
        "counts": counts,
        "files": {name: (out / name).stat().st_size for name in demo_files()},
        "description": _DESCRIPTION,
    }
    write_json(out / META_FILE, meta)
    os.chmod(out / META_FILE, 0o644)  # mkstemp creates private files


def _move_into_place(tmp: Path, out_dir: Path, spec: DemoSpec, seed: int) -> None:
    """Rename the finished build ``tmp`` to ``out_dir``, replacing an older build there."""
    trash = None
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, trash / "old")
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # another process won the race: accept its build if it is the one we wanted
        if _check_existing(out_dir, spec, seed, overwrite=False):
            return
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def _check_existing(out_dir: Path, spec: DemoSpec, seed: int, overwrite: bool) -> bool:
    """True when ``out_dir`` already holds this exact dataset; raise when it holds another."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    marker = out_dir / META_FILE
    if not marker.exists():
        if any(out_dir.iterdir()):
            raise FileExistsError(
                f"{out_dir}: directory is not empty and holds no {META_FILE}, so it is not a demo dataset; "
                f"refusing to replace it (even with overwrite=True). Choose another directory or empty it."
            )
        return False
    try:
        meta = read_json(marker)
    except (OSError, ValueError):
        meta = {}
    same = (
        meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("preset") == spec.name
        and meta.get("seed") == seed
        and meta.get("spec") == spec_dict(spec)
    )
    files = meta.get("files", {})
    complete = same and all(
        (out_dir / name).is_file() and (out_dir / name).stat().st_size == size for name, size in files.items()
    ) and set(files) == set(demo_files())
    if complete:
        return True
    if overwrite:
        return False
    if same:
        why = "files listed in its marker are missing or have changed size"
    else:
        why = (f"it was made with preset={meta.get('preset')!r}, seed={meta.get('seed')!r}, "
               f"generator_version={meta.get('generator_version')!r}")
        if meta.get("preset") == spec.name and meta.get("seed") == seed:
            why += " but different spec fields"
    raise FileExistsError(
        f"{out_dir}: holds a demo dataset that does not match preset={spec.name!r}, seed={seed} "
        f"(generator_version={GENERATOR_VERSION}): {why}. Pass overwrite=True to rebuild it, or use another directory."
    )
