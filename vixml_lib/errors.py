"""Errors raised for bad input: they name the file, line, key or item and what was expected.

Every error the workbench raises for bad input derives from :class:`VixmlError` (a
``ValueError``, so ``except ValueError`` keeps working); the ``vixml`` command prints it as
one line and exits with status 2 (:mod:`vixml_lib.cli`).

- :class:`DataFormatError`: a data file does not follow its format (``<file>:<line>: ...``);
- :class:`ConfigError`: a setting of a config file or dict is wrong (``<source>: <key>: ...``);
- :class:`DeviceError`: a device setting names no usable device;
- :class:`ModelUnavailable`: a named model is not available (offline and not cached);
- :class:`OutputError`: outputs could not be written (a full disk); nothing half-written is left.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class VixmlError(ValueError):
    """The base class of the workbench's own errors for bad input (one clear line each)."""


class DataFormatError(VixmlError):
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


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigError(VixmlError):
    """A setting is wrong: ``<source>: <key>: <value> <reason>; allowed: <allowed>``.

    ``source`` is the file (or "train config", "notebook 03_training", ...), ``key`` the
    setting's dotted name (``loss.k``); ``key`` and ``value`` may be omitted for problems of
    the whole config (e.g. "expected a mapping").
    """

    _NO_VALUE = object()

    def __init__(self, source: str | Path, message: str, key: str | None = None, value: Any = _NO_VALUE,
                 allowed: str | None = None):
        self.source, self.key, self.reason, self.allowed = str(source), key, message, allowed
        self.value = None if value is self._NO_VALUE else value
        parts = [self.source]
        if key is not None:
            parts.append(f"{key} = {_shown(value)}" if value is not self._NO_VALUE else key)
        text = ": ".join(parts) + f": {message}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class DeviceError(ConfigError):
    """A device setting is not ``auto | cpu | cuda | cuda:N``, or names a device this machine lacks."""


class ModelUnavailable(VixmlError):
    """A named model (backbone, tokenizer) is neither shipped offline, a folder, nor in the local cache."""


class OutputError(VixmlError):
    """Outputs could not be written (e.g. no space left); the message says what was kept."""


def check_input_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a Path when it is a readable file; else ``FileNotFoundError`` (missing) or
    :class:`DataFormatError` (a folder, unreadable), each naming the path and ``what`` was expected."""
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(path, f"is a folder, expected a {what}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected a {what})")
    if not path.is_file():
        raise DataFormatError(path, f"is not a regular file, expected a {what}")
    return path
