"""The grid of a prompt-template ablation: factor levels -> distinct templates (cells) for one
model kind, and the training config of one cell for one backbone.

The grid is a dict of factor lists over the arguments of :func:`prompt.make_template`
(``text_prefix``, ``image_prefix``, ``eos``, ``order``, ``bos``, ...) plus ``images``
(image slots in the template AND image features in the model)::

    cells = expand_grid({"order": ["text_image", "image_text"], "text_prefix": [True, False],
                         "image_prefix": [True, False], "eos": [True, False], "images": [True, False]},
                        kind="decoder")

Every combination is assembled into its template, and combinations whose template is
identical (without images, ``order`` and ``image_prefix`` change nothing) are collapsed
into ONE cell: the first combination in grid order, named by the factors that matter for
it (``img1-text_image-tp1-ip0-eos1``, ``img0-tp1-eos0``), the others kept as its
``aliases``. The default grid (:data:`DEFAULT_FACTORS`) has 32 combinations and 20 cells
per model kind (16 with images, 4 without).
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..prompt import PromptTemplate, make_template

#: the paper's prompt ablation: 2^5 = 32 combinations, 20 distinct templates per model kind
DEFAULT_FACTORS: dict[str, list] = {
    "images": [True, False],
    "order": ["text_image", "image_text"],
    "text_prefix": [True, False],
    "image_prefix": [True, False],
    "eos": [True, False],
}

_ABBREV = {"text_prefix": "tp", "image_prefix": "ip", "eos": "eos", "bos": "bos", "images": "img"}
#: factors that are training settings, not template arguments: ``method`` (TrainConfig: ngame |
#: prime) and ``fusion`` (ModelConfig: early | late; it matters only in cells with images)
TRAINING_FACTORS = ("method", "fusion")
_TEMPLATE_ARGS = {p for p in inspect.signature(make_template).parameters if p not in ("kind", "name", "fields")}
_TEMPLATE_FIELDS = {f.name for f in dataclasses.fields(PromptTemplate)} - {"segments", "name"}
_NOT_TRAIN_SETTINGS = ("kind",)  # backbone settings that are not TrainConfig fields


@dataclass(frozen=True)
class Cell:
    """One distinct template of a grid for one model kind.

    ``template``: the :func:`make_template` arguments (``kind`` and ``name`` included), as
    ``TrainConfig.template`` takes them; ``factors``: the factor values of the cell, ``None``
    for a factor that does not change its template; ``aliases``: the names of the other
    combinations that assemble the same template.
    """

    name: str
    kind: str
    template: dict
    images: bool
    factors: dict
    aliases: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)  # the training factors' values: method, fusion
    reference: bool = False  # the paper's template for this kind (with or without images)

    def prompt_template(self, **overrides) -> PromptTemplate:
        """The :class:`PromptTemplate` (``overrides``: its fields, e.g. ``eos_token``)."""
        t = make_template(**self.template)
        return dataclasses.replace(t, **overrides) if overrides else t

    def describe(self, **overrides) -> str:
        return self.prompt_template(**overrides).describe()


def _value_name(factor: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{_ABBREV.get(factor, factor)}{int(value)}"
    if factor == "order":
        return str(value)
    text = re.sub(r"[^A-Za-z0-9_.]+", "_", str(value)).strip("_") or "empty"
    return f"{_ABBREV.get(factor, factor)}={text}"


def _combination_name(combo: Mapping[str, Any], factors: Sequence[str]) -> str:
    return "-".join(_value_name(f, combo[f]) for f in factors) or "default"


def _template_key(kind: str, args: Mapping[str, Any]) -> tuple:
    d = make_template(**{k: v for k, v in args.items() if k not in TRAINING_FACTORS}, kind=kind).to_dict()
    d.pop("name")
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def _images(args: Mapping[str, Any]) -> bool:
    return bool(args.get("images", True)) and args.get("order") != "text_only"


def _cell_key(kind: str, args: Mapping[str, Any]) -> tuple:
    """What makes two combinations one cell: the template, the method, and the fusion when
    the cell has images."""
    return (_template_key(kind, args), args.get("method"), args.get("fusion") if _images(args) else None)


def _reference_keys(kind: str) -> set[tuple]:
    """Keys of the paper's template for ``kind`` (with and without images)."""
    if kind == "encoder":
        base = dict(order="image_text", text_prefix=False, image_prefix=False, eos=True)
    else:
        base = dict(order="text_image", text_prefix=True, image_prefix=True, eos=True)
    return {_template_key(kind, {**base, "images": i}) for i in (True, False)}


def expand_grid(factors: Mapping[str, Sequence] | None = None, kind: str = "decoder",
                fixed: Mapping[str, Any] | None = None) -> list[Cell]:
    """The distinct cells of a factor grid for one model kind (``decoder`` | ``encoder``).

    ``factors``: factor -> list of levels (default :data:`DEFAULT_FACTORS`); a factor is
    an argument of :func:`prompt.make_template`, ``images``, or a training factor
    (:data:`TRAINING_FACTORS`: ``method``, ``fusion``). ``fixed``: arguments of
    ``make_template`` shared by every cell (e.g. ``{"bos": False}``, or ``{"images":
    False}`` for a text-only grid). Without an ``images`` factor or fixed value, images are on.
    Combinations are enumerated in the order of ``factors`` (the first factor varies
    slowest); identical templates collapse into the first one, the others become its aliases.
    """
    factors = dict(DEFAULT_FACTORS if factors is None else factors)
    fixed = dict(fixed or {})
    if kind not in ("decoder", "encoder"):
        raise ValueError(f"kind must be 'decoder' or 'encoder', got {kind!r}")
    for where, names in (("factor", factors), ("fixed setting", fixed)):
        valid = _TEMPLATE_ARGS | _TEMPLATE_FIELDS | set(TRAINING_FACTORS)
        unknown = sorted(set(names) - valid)
        if unknown:
            raise ValueError(f"unknown grid {where}(s) {unknown}; valid: {', '.join(sorted(valid))}")
    both = sorted(set(factors) & set(fixed))
    if both:
        raise ValueError(f"{both} given both as factors and as fixed settings")
    for f, levels in factors.items():
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or len(levels) == 0:
            raise ValueError(f"factor {f!r} needs a non-empty list of levels, got {levels!r}")
        if len(set(map(repr, levels))) != len(levels):
            raise ValueError(f"factor {f!r} lists a level twice: {list(levels)}")
    if "images" not in factors:
        fixed.setdefault("images", True)
    names = list(factors)
    combos = [dict(zip(names, values)) for values in itertools.product(*(factors[f] for f in names))]
    keys = [_cell_key(kind, {**fixed, **c}) for c in combos]

    def relevant(combo: dict, key: tuple) -> list[str]:
        """The factors for which another level changes this combination's cell."""
        return [f for f in names
                if any(_cell_key(kind, {**fixed, **combo, f: v}) != key for v in factors[f] if v != combo[f])]

    groups: dict[tuple, list[dict]] = {}
    for combo, key in zip(combos, keys):
        groups.setdefault(key, []).append(combo)
    reference = _reference_keys(kind)
    cells, taken = [], set()
    for key, members in groups.items():
        first = members[0]
        matters = relevant(first, key)
        name = _combination_name(first, matters)
        if name in taken:  # only with interacting factors: fall back to the full combination
            name = _combination_name(first, names)
        taken.add(name)
        args = {**fixed, **first}
        template = {k: v for k, v in args.items() if k not in TRAINING_FACTORS} | {"kind": kind, "name": name}
        cells.append(Cell(
            name=name, kind=kind, template=template, images=_images(args),
            factors={f: (first[f] if f in matters else None) for f in names},
            aliases=tuple(_combination_name(c, names) for c in members[1:]),
            reference=key[0] in reference,
            settings={f: args[f] for f in TRAINING_FACTORS if f in args},
        ))
    return cells


def backbone_kind(settings: Mapping[str, Any]) -> str:
    """``encoder`` or ``decoder`` for a backbone's settings: its ``kind`` setting, else the
    ``kind`` of its ``model_overrides``, else the preset's, else the backbone's config."""
    from ..backbones import detect_kind
    from ..models import MODEL_PRESETS
    from ..testing import RANDOM_BACKBONES

    kind = settings.get("kind") or dict(settings.get("model_overrides") or {}).get("kind")
    preset = MODEL_PRESETS.get(settings.get("model", "minilm-vixml"))
    if kind in (None, "auto") and preset is not None:
        kind = preset.kind
    if kind in ("encoder", "decoder"):
        return kind
    if kind not in (None, "auto"):
        raise ValueError(f"kind must be encoder or decoder, got {kind!r}")
    if preset is None:
        raise ValueError(f"unknown model preset {settings.get('model')!r}")
    name = dict(settings.get("model_overrides") or {}).get("backbone", preset.backbone)
    if name in RANDOM_BACKBONES:
        return detect_kind(RANDOM_BACKBONES[name][0]())
    from transformers import AutoConfig

    from ..pretrained import resolve

    src = resolve(name)
    return detect_kind(AutoConfig.from_pretrained(src.path, **src.kwargs()))


def cell_config(cell: Cell, settings: Mapping[str, Any], out_dir: str | Path, **common):
    """The :class:`TrainConfig` of one cell: ``common`` settings (data_dir, schedule, ...),
    then the backbone's ``settings``, then the cell's template and images (which replace a
    ``template`` / ``use_images`` of the backbone's settings)."""
    from ..recipes import merge_settings
    from ..training import make_train_config

    values = merge_settings(common, {k: v for k, v in settings.items() if k not in _NOT_TRAIN_SETTINGS})
    values.update(template=dict(cell.template), use_images=cell.images, out_dir=str(out_dir))
    if "method" in cell.settings:
        values["method"] = cell.settings["method"]
    if "fusion" in cell.settings:
        values["model_overrides"] = {**dict(values.get("model_overrides") or {}), "fusion": cell.settings["fusion"]}
    return make_train_config(values, source=f"cell {cell.name}")
