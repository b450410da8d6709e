"""Errors raised for bad input: they name the file, line or item and what was expected."""
from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file does not follow the expected format.

    The message always starts with ``<file>:<line>:`` (or ``<file>:`` when the problem is
    not tied to one line), so editors and terminals can jump to the spot.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
