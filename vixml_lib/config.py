"""Run configuration: one dataclass per run, read from YAML and saved beside the results."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .io_utils import atomic_open


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
    parameters: dict[str, Any] = field(default_factory=dict)
    notebook_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.data_root) / self.dataset

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(cls, values: dict[str, Any], source: str = "config"):
    """Build dataclass ``cls`` from a dict; unknown keys are an error that lists the valid ones.

    A field whose type is itself a dataclass (e.g. ``TrainConfig.loss``) takes a mapping of
    that dataclass's fields, checked the same way."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                         f"valid settings: {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for name, value in values.items():
        kind = hints.get(name)
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            values[name] = config_from_dict(kind, value, source=f"{source}: {name}")
    return cls(**values)


def load_config(cls, path: str | Path | None, overrides: dict[str, Any] | None = None):
    """Read a YAML file into dataclass ``cls`` (defaults when ``path`` is None), then apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            try:
                values = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ValueError(f"{path}: not valid YAML: {e}") from None
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, values, source=str(path or "config"))


def save_config(config, path: str | Path) -> None:
    """Save a config dataclass as YAML (atomically), so every result carries its settings."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(dataclasses.asdict(config), f, sort_keys=False)
