"""Run configuration: one dataclass per run, read from YAML (checked at the door, see
:mod:`vixml_lib.validation`) and saved beside the results."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .io_utils import atomic_open
from .validation import build_config


@dataclass
class PipelineConfig:
    """Everything a `vixml pipeline` run depends on.

    ``parameters`` go to every notebook that declares them in its ``parameters`` cell;
    ``notebook_parameters`` maps a notebook name (e.g. ``03_training``) to overrides for it.
    ``dataset`` is a folder under ``data_root``; when it is missing and ``demo_preset`` is
    set, the bundled demo catalogue is generated there first.
    """

    run_name: str = "demo"
    data_root: str = "data"
    dataset: str = "demo-small"
    demo_preset: str | None = "small"
    seed: int = 0
    notebooks: list[str] | None = None  # None: every numbered notebook in notebooks_dir
    notebooks_dir: str | None = None  # None: the repository's notebooks/ folder
    kernel: str | None = None  # None: the kernel named in each notebook
    export_html: bool = True
    # a rerun into a folder holding a run of another configuration: False refuses before
    # touching anything; True replaces the folder's run (a run of the same configuration resumes)
    overwrite: bool = False
    # seconds a notebook may run (None: no limit); past it the notebook ends with status "timeout"
    notebook_timeout: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    notebook_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.data_root) / self.dataset

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(cls, values: Mapping[str, Any] | None, source: str = "config"):
    """Build dataclass ``cls`` from a mapping, every value checked (:mod:`vixml_lib.validation`):
    unknown keys (listed with the valid ones), types (numbers written as text converted),
    the ranges and choices of :data:`vixml_lib.validation.RULES`, nested config dataclasses
    (e.g. ``TrainConfig.loss``) the same way. Errors are :class:`~vixml_lib.errors.ConfigError`
    naming ``source``, the key, the value and what is allowed."""
    return build_config(cls, values, source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (``{}`` when empty); :class:`ConfigError` naming the
    file when it is missing, not YAML, not UTF-8 or not a mapping (a list, a bare value)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(path, "is a folder; expected a YAML config file")
    if not path.is_file():
        raise ConfigError(path, "config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(path, f"not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(path, f"expected a mapping of settings (key: value lines), found a "
                                f"{type(values).__name__}")
    return values


def load_config(cls, path: str | Path | None, overrides: Mapping[str, Any] | None = None):
    """Read a YAML file into dataclass ``cls`` (defaults when ``path`` is None), then apply
    ``overrides`` (None values ignored). Everything is checked, see :func:`config_from_dict`."""
    values = read_config_file(path) if path is not None else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, values, source=str(path or "config"))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """``"key: old -> new"`` for every (dotted) setting whose value differs between two config
    dicts, top-level keys in ``ignore`` left out."""
    a = _flat({k: v for k, v in old.items() if k not in ignore})
    b = _flat({k: v for k, v in new.items() if k not in ignore})
    return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def save_config(config, path: str | Path) -> None:
    """Save a config dataclass as YAML (atomically), so every result carries its settings."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(dataclasses.asdict(config), f, sort_keys=False)
