"""The downloader's journal: what a run finished, kept on disk so a rerun resumes.

A download into ``<out_dir>`` keeps ``<out_dir>/<split>_download.partial/`` while it
runs (removed on success unless ``keep_journal``):

- ``images.b64``: the encoded lines, appended as they arrive;
- ``journal.jsonl``: one JSON object per finished URL, ``{"url", "ok": true, "attempts",
  "off", "len"}`` (where its line lies in ``images.b64``) or ``{"url", "ok": false,
  "attempts", "reason"}``. The image bytes are flushed before their journal line, so
  every journal line points at complete data; a torn last line (crash mid-write) is
  ignored on resume;
- ``meta.json``: the settings that change the encoded bytes; a journal with other
  settings is discarded;
- ``lock``: an exclusive ``flock`` held while a download runs (a second download into
  the same folder fails at once).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from ..io_utils import atomic_open
from .download_fetch import FetchResult

log = logging.getLogger(__name__)

__all__ = ["JournalRecord", "DownloadJournal"]


class JournalRecord(NamedTuple):
    """A finished URL, as kept in memory (small: millions of them for the big datasets)."""

    ok: bool
    attempts: int
    off: int = 0  # where its line starts in images.b64, when ok
    length: int = 0
    reason: str = ""  # when not ok


def _parse_record(raw: bytes, data_size: int) -> tuple[str, JournalRecord] | None:
    """One journal line -> ``(url, record)``; None for a torn or foreign line, or lost data."""
    try:
        d = json.loads(raw)
        url = str(d["url"])
        if d["ok"]:
            rec = JournalRecord(True, int(d["attempts"]), int(d["off"]), int(d["len"]))
            if rec.off + rec.length > data_size:
                return None  # data lost (should not happen: data is flushed first)
        else:
            rec = JournalRecord(False, int(d["attempts"]), reason=str(d["reason"]))
    except (ValueError, KeyError, TypeError):
        return None  # torn or foreign line
    return url, rec


class DownloadJournal:
    """Append-only record of finished URLs in a ``<split>_download.partial/`` folder (see the module docstring)."""

    def __init__(self, folder: Path, meta: dict):
        self.folder = folder
        self.meta = meta
        self.data_path = folder / "images.b64"
        self.log_path = folder / "journal.jsonl"
        self.meta_path = folder / "meta.json"
        self._lock_f = None
        self._data_f = None
        self._log_f = None
        self._read_f = None

    def open(self) -> dict[str, JournalRecord]:
        """Open (creating or resuming) and return the finished records by URL."""
        self._discard_if_other_settings()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock()
        if not self.meta_path.exists():
            with atomic_open(self.meta_path, "w", encoding="utf-8") as f:
                json.dump(self.meta, f)
        records = self._read_records()
        self._data_f = open(self.data_path, "ab")
        self._log_f = open(self.log_path, "ab")
        self._data_pos = self._data_f.seek(0, os.SEEK_END)
        return records

    def _discard_if_other_settings(self) -> None:
        if not self.folder.exists():
            return
        try:
            old = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old != self.meta:
            log.warning("%s: journal from other settings (%s, now %s); starting afresh", self.folder, old, self.meta)
            shutil.rmtree(self.folder)

    def _read_records(self) -> dict[str, JournalRecord]:
        records: dict[str, JournalRecord] = {}
        data_size = self.data_path.stat().st_size if self.data_path.exists() else 0
        if self.log_path.exists():
            with open(self.log_path, "rb") as f:
                for raw in f:
                    parsed = _parse_record(raw, data_size)
                    if parsed is not None:
                        records[parsed[0]] = parsed[1]
        return records

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            return
        f = open(self.folder / "lock", "a+b")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RuntimeError(f"{self.folder}: another download into this folder is running (lock held)") from None
        self._lock_f = f

    def add(self, url: str, res: FetchResult) -> JournalRecord:
        """Record a finished URL (its line first, then the journal line) and return its record."""
        if res.ok:
            rec = JournalRecord(True, res.attempts, self._data_pos, len(res.line))
            self._data_f.write(res.line)
            self._data_f.write(b"\n")
            self._data_f.flush()
            self._data_pos += len(res.line) + 1
            d = {"url": url, "ok": True, "attempts": rec.attempts, "off": rec.off, "len": rec.length}
        else:
            rec = JournalRecord(False, res.attempts, reason=res.reason)
            d = {"url": url, "ok": False, "attempts": rec.attempts, "reason": rec.reason}
        self._log_f.write(json.dumps(d, ensure_ascii=True).encode("ascii") + b"\n")
        self._log_f.flush()
        return rec

    def start_reading(self) -> None:
        self._data_f.flush()
        self._read_f = open(self.data_path, "rb")

    def read_line(self, rec: JournalRecord) -> bytes:
        self._read_f.seek(rec.off)
        return self._read_f.read(rec.length)

    def close(self) -> None:
        for f in (self._data_f, self._log_f, self._read_f):
            if f is not None:
                f.close()
        self._data_f = self._log_f = self._read_f = None
        if self._lock_f is not None:
            self._lock_f.close()  # releases the flock
            self._lock_f = None
