"""Every setting checked at the door: types from the config dataclasses' annotations,
ranges and choices from ONE table (:data:`RULES`), notebook parameters from their defaults.

:func:`build_config` (behind :func:`vixml_lib.config.config_from_dict`, which every config
loader goes through) turns a mapping into a config dataclass:

1. the mapping must be a mapping; unknown keys are refused with the valid ones (and a
   near miss, ``difflib``);
2. each given value is checked against its field's annotation by
   :func:`vixml_lib.typecheck.check_value` (``str``, ``int``, ``float``, ``bool``,
   ``X | None``, ``list[X]``, ``dict[K, V]``, ``Literal[...]``, nested dataclasses);
   numbers written as text (YAML reads ``5e-4`` as a string) and integral floats for
   integers (``3.0``) are converted, since they are unambiguous; anything else of the wrong
   type is an error;
3. the value must pass its rule in :data:`RULES`, keyed ``"ClassName.field"``: ``">= 1"``,
   ``"> 0"``, ``"[0, 1)"`` (ranges; for lists, every element), a tuple of choices, or a
   :class:`Check` (a function and what it allows);
4. the dataclass is built; a ``ValueError`` of its own ``__post_init__`` is re-raised as a
   :class:`~vixml_lib.errors.ConfigError` naming the source.

Every error names the source (file), the key, the value and what is allowed. Fields the
table names must exist (``tests/test_validation.py`` checks it, so the table cannot rot).
"""
from __future__ import annotations

import ast
import codecs
import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, DeviceError
from .typecheck import check_value

__all__ = ["RULES", "CONFIG_CLASSES", "Check", "build_config", "check_value", "check_device_name",
           "check_encoding", "check_notebook_parameter", "suggest", "rule_allows"]


@dataclass(frozen=True)
class Check:
    """A rule as a function: ``test(value)`` returns None when fine, else why not; ``allowed``
    says what is (a string, or a function giving it, for lists known only at run time)."""

    test: Callable[[Any], str | None]
    allowed: str | Callable[[], str]

    def describe(self) -> str:
        return self.allowed() if callable(self.allowed) else self.allowed


# ----------------------------------------------------------------------------- named checks
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: Any, source: str = "device", key: str | None = None) -> str:
    """``name`` if it is ``auto | cpu | cuda | cuda:N``, else :class:`DeviceError` (syntax only:
    whether CUDA is there is :func:`vixml_lib.devices.resolve_device`'s question)."""
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name.strip()):
        raise DeviceError(source, "is not a device name", key=key, value=name, allowed="auto, cpu, cuda, cuda:N")
    return name.strip()


def check_encoding(name: Any, source: str = "encoding", key: str | None = None) -> str:
    """``name`` if Python knows the text encoding (``utf-8``, ``latin-1``, ...), else :class:`ConfigError`."""
    try:
        codecs.lookup(name)
    except (LookupError, TypeError):
        raise ConfigError(source, "is not a text encoding Python knows", key=key, value=name,
                          allowed="a codec name such as utf-8 or latin-1 (the official *.raw.txt files)") from None
    return name


def _device(value):
    return None if isinstance(value, str) and DEVICE_PATTERN.match(value.strip()) else "is not a device name"


def _encoding(value):
    try:
        codecs.lookup(value)
        return None
    except LookupError:
        return "is not a text encoding Python knows"


def _non_empty(value):
    return None if str(value).strip() else "is empty"


def _name(value):
    if not value.strip():
        return "is empty"
    return "must not contain a path separator" if "/" in value or "\\" in value else None


def _demo_presets() -> list[str]:
    from .data.demo.spec import PRESETS

    return sorted(PRESETS)


def _model_presets() -> list[str]:
    from .models import MODEL_PRESETS

    return sorted(MODEL_PRESETS)


def _dtypes() -> list[str]:
    from .backbones import DTYPES

    return list(DTYPES)


def one_of(names: Callable[[], list[str]], what: str) -> Check:
    """A rule: one of ``names()`` (a list known at run time), with a near-miss suggestion."""
    def test(value):
        valid = names()
        return None if value in valid else f"is not {what}{suggest(value, valid)}"

    return Check(test, lambda: ", ".join(names()))


DEVICE = Check(_device, "auto, cpu, cuda, cuda:N")
ENCODING = Check(_encoding, "a codec name such as utf-8 or latin-1")
NON_EMPTY = Check(_non_empty, "a non-empty string")
NAME = Check(_name, "a non-empty name without '/'")
PROBABILITY = "[0, 1]"
DROPOUT = "[0, 1)"

#: The one table of ranges and choices, keyed ``"ClassName.field"`` (see the module docstring).
RULES: dict[str, str | tuple | Check] = {
    # PipelineConfig (vixml_lib.config)
    "PipelineConfig.run_name": NAME,
    "PipelineConfig.data_root": NON_EMPTY,
    "PipelineConfig.dataset": NON_EMPTY,
    "PipelineConfig.demo_preset": one_of(_demo_presets, "a demo preset"),
    "PipelineConfig.seed": ">= 0",
    "PipelineConfig.notebooks": NON_EMPTY,
    "PipelineConfig.notebook_timeout": "> 0",
    # TrainConfig (vixml_lib.training.config)
    "TrainConfig.data_dir": NON_EMPTY,
    "TrainConfig.out_dir": NON_EMPTY,
    "TrainConfig.method": ("ngame", "prime"),
    "TrainConfig.model": one_of(_model_presets, "a model preset (vixml_lib.models.MODEL_PRESETS)"),
    "TrainConfig.vision_encoder": NON_EMPTY,
    "TrainConfig.max_len": ">= 1",
    "TrainConfig.encoding": ENCODING,
    "TrainConfig.positive_sampling": ("uniform", "propensity"),
    "TrainConfig.epochs": ">= 1",
    "TrainConfig.batch_size": ">= 1",
    "TrainConfig.max_steps_per_epoch": ">= 1",
    "TrainConfig.lr": "> 0",
    "TrainConfig.lr_image_proj": ">= 0",
    "TrainConfig.weight_decay": ">= 0",
    "TrainConfig.adam_eps": "> 0",
    "TrainConfig.warmup_steps": ">= 0",
    "TrainConfig.grad_clip": "> 0",
    "TrainConfig.cluster_warmup_epochs": ">= 0",
    "TrainConfig.cluster_size": ">= 1",
    "TrainConfig.cluster_refresh_every": ">= 1",
    "TrainConfig.cluster_double_at": ">= 1",
    "TrainConfig.cluster_encode_dtype": ("float32", "float16"),
    "TrainConfig.eval_every": ">= 1",
    "TrainConfig.eval_max_queries": ">= 1",
    "TrainConfig.eval_subset_queries": ">= 1",
    "TrainConfig.checkpoint_every_steps": ">= 1",
    "TrainConfig.max_labels": ">= 1",
    "TrainConfig.k": ">= 1",
    "TrainConfig.recall_k": ">= 1",
    "TrainConfig.retrieval": ("exact", "faiss-flat", "faiss-ivf"),
    "TrainConfig.A": "> 0",
    "TrainConfig.B": ">= 0",
    "TrainConfig.encode_batch_size": ">= 1",
    "TrainConfig.seed": ">= 0",
    "TrainConfig.device": DEVICE,
    "TrainConfig.threads": ">= 1",
    # ModelConfig (vixml_lib.models)
    "ModelConfig.backbone": NON_EMPTY,
    "ModelConfig.kind": ("auto", "encoder", "decoder"),
    "ModelConfig.vision_dim": ">= 1",
    "ModelConfig.max_images": ">= 0",
    "ModelConfig.pooling": ("mean", "last"),
    "ModelConfig.fusion": ("early", "late"),
    "ModelConfig.lora_r": ">= 0",
    "ModelConfig.lora_alpha": "> 0",
    "ModelConfig.lora_dropout": DROPOUT,
    "ModelConfig.dtype": one_of(_dtypes, "a dtype"),
    # built-in attention only: transformers loads a hub name here as a kernel (code) from the hub
    "ModelConfig.attn_implementation": ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"),
    "ModelConfig.attention_dropout": DROPOUT,
    "ModelConfig.num_layers": ">= 1",
    "ModelConfig.seed": ">= 0",
    # LossConfig (vixml_lib.losses)
    "LossConfig.k": ">= 1",
    "LossConfig.margin": ">= 0",
    "LossConfig.min_margin": ">= 0",
    "LossConfig.max_margin": ">= 0",
    "LossConfig.tau": "> 0",
    "LossConfig.tie_gradient": ("half", "zero"),
    "LossConfig.w_xu": ">= 0",
    "LossConfig.w_xz": ">= 0",
    "LossConfig.w_ux": ">= 0",
    "LossConfig.w_reg": ">= 0",
    "LossConfig.reg_margin": ">= 0",
    # PrimeConfig (vixml_lib.prime)
    "PrimeConfig.free_vectors": ">= 1",
    "PrimeConfig.free_vector_init": ("xavier", "cluster_mean"),
    "PrimeConfig.heads": ">= 1",
    "PrimeConfig.feedforward": ">= 1",
    "PrimeConfig.dropout": DROPOUT,
    "PrimeConfig.lr": "> 0",
    "PrimeConfig.centroids": ("stale", "exact", "ema"),
    "PrimeConfig.ema": "[0, 1)",
}

#: Where the classes the table names live (module, class), for the test that keeps it honest.
CONFIG_CLASSES = {
    "PipelineConfig": "vixml_lib.config",
    "TrainConfig": "vixml_lib.training.config",
    "ModelConfig": "vixml_lib.models",
    "LossConfig": "vixml_lib.losses",
    "PrimeConfig": "vixml_lib.prime",
}


# ----------------------------------------------------------------------------- rules
_RANGE = re.compile(r"^\s*(>=|>|<=|<)\s*(-?[\d.e+-]+)\s*$")
_INTERVAL = re.compile(r"^\s*([\[(])\s*(-?[\d.e+-]+)\s*,\s*(-?[\d.e+-]+)\s*([\])])\s*$")


def _rule_test(spec) -> tuple[Callable[[Any], str | None], str]:
    """(test, allowed) of a rule spec: ``">= 1"``, ``"[0, 1)"``, a tuple of choices or a Check.
    In ``allowed``, ``{kind}`` stands for "an integer" or "a number" (the value's type)."""
    if isinstance(spec, Check):
        return spec.test, spec.describe()
    if isinstance(spec, tuple):
        return (lambda v: None if v in spec else f"is not a choice{suggest(v, spec)}"), ", ".join(map(str, spec))
    m = _RANGE.match(spec)
    if m:
        op, bound = m.group(1), float(m.group(2))
        ok = {">=": bound.__le__, ">": bound.__lt__, "<=": bound.__ge__, "<": bound.__gt__}[op]
        return (lambda v: None if ok(v) else "is out of range"), f"{{kind}} {op} {m.group(2)}"
    m = _INTERVAL.match(spec)
    if m:
        lo, hi = float(m.group(2)), float(m.group(3))
        lo_ok = (lambda v: v >= lo) if m.group(1) == "[" else (lambda v: v > lo)
        hi_ok = (lambda v: v <= hi) if m.group(4) == "]" else (lambda v: v < hi)
        return (lambda v: None if lo_ok(v) and hi_ok(v) else "is out of range"), f"{{kind}} in {spec.strip()}"
    raise ValueError(f"validation rule {spec!r} is not understood (use '>= 1', '[0, 1)', a tuple or a Check)")


def rule_allows(key: str, value: Any) -> bool:
    """True when the rule of ``key`` (``"ClassName.field"``) accepts ``value`` (True without a rule)."""
    if key not in RULES:
        return True
    return _rule_test(RULES[key])[0](value) is None


def _apply_rule(rule_key: str, value: Any, source: str, key: str) -> None:
    if rule_key not in RULES or value is None:
        return
    test, allowed = _rule_test(RULES[rule_key])
    items = value if isinstance(value, (list, tuple)) else [value]
    for i, item in enumerate(items):
        if item is None:
            continue
        try:
            why = test(item)
        except TypeError:
            why = "has the wrong type"
        if why:
            where = f"{key}[{i}]" if isinstance(value, (list, tuple)) else key
            kind = "an integer" if isinstance(item, int) else "a number"
            raise ConfigError(source, why, key=where, value=item, allowed=allowed.replace("{kind}", kind))


# ----------------------------------------------------------------------------- dataclasses
def suggest(name: str, valid) -> str:
    """`` (did you mean X?)`` for a near miss of ``name`` among ``valid``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _hints(cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: check the fields we can
        import sys

        namespace = vars(sys.modules[cls.__module__])
        hints = {}
        for f in dataclasses.fields(cls):
            try:
                hints[f.name] = eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307
            except Exception:
                hints[f.name] = Any
        return hints


def build_config(cls, values: Any, source: str = "config", prefix: str = ""):
    """Dataclass ``cls`` from the mapping ``values``, every given value checked (module docstring).

    ``source`` names where the values come from (a file); ``prefix`` the key of a nested
    config (``loss``), so that errors say ``loss.k``."""
    where = f"{prefix}: " if prefix else ""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(source, f"{where}expected a mapping of {cls.__name__} settings (key: value lines), "
                                  f"found {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        hint = suggest(unknown[0], fields) if len(unknown) == 1 else ""
        raise ConfigError(source, f"{where}unknown setting(s) {', '.join(unknown)}{hint}",
                          allowed=f"the {cls.__name__} settings {', '.join(sorted(fields))}")
    hints = _hints(cls)
    checked = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        value = check_value(value, hints.get(name, Any), source, key)
        _apply_rule(f"{cls.__name__}.{name}", value, source, key)
        checked[name] = value
    try:
        return cls(**checked)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # the dataclass's own cross-field checks
        raise ConfigError(source, f"{where}{e}") from None


# ----------------------------------------------------------------------------- notebook parameters
def _literal(source: str) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def check_notebook_parameter(value: Any, default_source: str | None, source: str, key: str) -> Any:
    """``value`` for a notebook parameter, checked against the type of its default in the
    notebook's ``parameters`` cell (``default_source``, the text papermill reports); errors
    name ``source`` (the parameters file) and ``key``.

    null is always accepted (the notebooks use it for "not set"); an int where the default is
    a float is fine; numbers written as text are converted. Defaults that are not literals
    (or are None) accept anything."""
    ok, default = _literal(default_source) if default_source is not None else (False, None)
    if not ok or default is None or value is None:
        return value
    tp = {bool: bool, int: int, float: float, str: str, list: list, tuple: list, dict: dict}.get(type(default))
    if tp is None:
        return value
    return check_value(value, tp, source, key)
