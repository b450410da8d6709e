"""Reaching inside the backbone from outside, with forward hooks (no change to the model):
the key and value projections of every attention layer (Llama-family ``self_attn.k_proj``
/ ``v_proj``, BERT-family ``attention.self.key`` / ``value``; LoRA-wrapped modules count
with their adapters) and the attention mask the backbone is called with.

:func:`capture_projections` records the projections' outputs during a forward pass;
:func:`backbone_call_hook` sees (and may replace) the keyword arguments the
:class:`~vixml_lib.models.DualEncoder` passes to its backbone.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .placements import backbone_config

#: module-name endings of the key and value projections, per model family
PROJECTION_NAMES = {
    "llama": (r"self_attn\.k_proj", r"self_attn\.v_proj"),  # Llama, Qwen2, Mistral, SmolLM2 ...
    "bert": (r"attention\.self\.key", r"attention\.self\.value"),  # BERT, MiniLM ...
}


def _layer_of(name: str) -> int:
    """The layer index in a module name (``...layers.3.self_attn.k_proj`` -> 3)."""
    found = re.findall(r"\.(\d+)\.", f".{name}.")
    if not found:
        raise ValueError(f"module {name!r} has no layer index in its name")
    return int(found[-1])


def projection_modules(model) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(keys, values)``: the key and value projection modules of ``model``'s backbone (a
    :class:`~vixml_lib.models.DualEncoder` or a transformers model), one per layer, in
    layer order. ``ValueError`` naming the families known when none is found."""
    root = getattr(model, "backbone", model)
    named = list(root.named_modules())
    for key_re, value_re in PROJECTION_NAMES.values():
        keys = [(n, m) for n, m in named if re.search(rf"(^|\.){key_re}$", n)]
        values = [(n, m) for n, m in named if re.search(rf"(^|\.){value_re}$", n)]
        if keys and len(keys) == len(values):
            keys.sort(key=lambda nm: _layer_of(nm[0]))
            values.sort(key=lambda nm: _layer_of(nm[0]))
            return [m for _, m in keys], [m for _, m in values]
    raise ValueError("no key/value projections found in the backbone; known module names: "
                     + ", ".join(f"{fam}: {k} / {v}" for fam, (k, v) in PROJECTION_NAMES.items()))


def kv_heads(model) -> int:
    """The number of key-value heads of the backbone (grouped-query attention: fewer than
    the query heads)."""
    cfg = backbone_config(model)
    return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


@dataclass
class Projections:
    """What :func:`capture_projections` recorded: per layer, the key and value projection
    outputs [B, T, kv_heads * head_dim] of the LAST forward pass."""

    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)


@contextlib.contextmanager
def capture_projections(model) -> Iterator[Projections]:
    """Record the key and value projections of every layer during the forward passes run
    inside the ``with`` block (each pass overwrites the previous one); hooks removed after."""
    keys, values = projection_modules(model)
    rec = Projections([None] * len(keys), [None] * len(values))

    def saver(store: list, i: int) -> Callable:
        def hook(_module, _args, output):
            store[i] = output.detach()
        return hook

    handles = [m.register_forward_hook(saver(rec.keys, i)) for i, m in enumerate(keys)]
    handles += [m.register_forward_hook(saver(rec.values, i)) for i, m in enumerate(values)]
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def backbone_call_hook(model, fn: Callable[[dict], dict | None]):
    """Call ``fn(kwargs)`` with the keyword arguments of every call of ``model.backbone``
    (``inputs_embeds``, ``attention_mask`` ...) inside the ``with`` block; a dict it returns
    replaces them. The hook is removed after."""
    def hook(_module, args, kwargs):
        new = fn(kwargs)
        return (args, new) if new is not None else None

    handle = model.backbone.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()
