"""Whether derived files are up to date with their sources, by content, not by modification time.

A source is recorded as ``{"size", "mtime_ns", "ctime_ns", "sha256"}``. It is unchanged when
its size, mtime and ctime are those recorded (no reading needed), or else when its sha256 is
(a file touched but not changed). A file replaced by another one with an older mtime
(``cp -p``) changes its ctime, so it is hashed and found changed: comparing modification times
alone would have kept the stale derived files.

:class:`SourceStamp` keeps these records, with the settings the derived files were made with,
in one JSON file beside them (``prepare`` uses it for the raw-text and ``X_Y`` files); token
caches keep the sha256 of their sources in their own ``meta.json`` and use :func:`sha256_of`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..io_utils import read_json, write_json

__all__ = ["sha256_of", "file_record", "SourceStamp"]


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat(path: Path) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def file_record(path: str | Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """``path``'s record; its sha256 is taken from ``known`` (an older record) when the size
    and times are unchanged, else computed."""
    record = _stat(Path(path))
    if known and all(known.get(k) == v for k, v in record.items()) and known.get("sha256"):
        record["sha256"] = known["sha256"]
    else:
        record["sha256"] = sha256_of(path)
    return record


class SourceStamp:
    """The records of a set of named sources and the settings derived files were made with."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            data = read_json(self.path)
        except (OSError, ValueError):  # missing or unreadable: nothing is known to be fresh
            return {}
        return data if isinstance(data, dict) else {}

    def current(self, sources: dict[str, Path]) -> dict[str, dict[str, Any]]:
        """Fresh records of ``sources`` (hashing only the files whose size or times changed)."""
        known = self._read().get("sources", {})
        return {name: file_record(p, known.get(name) if isinstance(known, dict) else None)
                for name, p in sources.items()}

    def matches(self, records: dict[str, dict[str, Any]], settings: dict[str, Any]) -> bool:
        """True when the stamp was written for these source contents and settings."""
        data = self._read()
        stored = data.get("sources", {})
        if data.get("settings") != settings or not isinstance(stored, dict) or set(stored) != set(records):
            return False
        return all(isinstance(stored[n], dict) and stored[n].get("sha256") == r["sha256"] for n, r in records.items())

    def write(self, records: dict[str, dict[str, Any]], settings: dict[str, Any]) -> None:
        write_json(self.path, {"sources": records, "settings": settings})
