"""Interventions at inference, applied from outside the model (hooks and templates), each a
context manager around any forward pass (``model(...)``, ``encode``, ``evaluate_model``):

- ``mask_pos<k>``: key position ``k`` is masked out of attention for every query but
  itself, in every layer and head, by a custom 4-D additive attention mask handed to the
  backbone (:func:`intervention_mask`). Each query's softmax then runs over the other
  keys, so its attention still sums to 1 (what StreamingLLM's "window attention" does to
  the initial tokens);
- ``mean_kv_pos<k>``: the key and value projections at position ``k`` are replaced, in
  every layer, by their mean over the item's other real positions (Sun et al.'s "set to
  the mean" ablation, taken per item). The mean over the whole item lets position ``k``
  carry later tokens' content to earlier queries; for an embedding model, which pools a
  whole prompt at once, nothing is generated from it;
- ``placement:<name>``: the prompt assembled with another placement of the image
  (:data:`~vixml_lib.sinks.placements.PLACEMENTS`), weights unchanged;
- ``move_image``: the image moved to the other end: to position 0 (``image_first``) for a
  model trained with its image after the title, to the end (``text_image``) for one
  trained with it before;
- ``none``: the model as it is.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .capture import backbone_call_hook, projection_modules
from .placements import PLACEMENTS, placement_template, use_template

KINDS = ("none", "mask", "mean_kv", "placement", "move_image")


@dataclass(frozen=True)
class Intervention:
    """One intervention: ``kind`` (:data:`KINDS`), the key ``position`` of ``mask`` /
    ``mean_kv``, the ``placement`` label of ``placement``; ``name`` as given."""

    name: str
    kind: str
    position: int | None = None
    placement: str | None = None


def parse_intervention(spec: str | Intervention) -> Intervention:
    """An :class:`Intervention` from its name (see the module docstring); ``ValueError``
    listing the valid forms otherwise."""
    if isinstance(spec, Intervention):
        return spec
    s = str(spec).strip()
    if s in ("none", "move_image"):
        return Intervention(s, s)
    m = re.fullmatch(r"(mask|mean_kv)_pos(\d+)", s)
    if m:
        return Intervention(s, m.group(1), position=int(m.group(2)))
    if s.startswith("placement:") and s.split(":", 1)[1] in PLACEMENTS:
        return Intervention(s, "placement", placement=s.split(":", 1)[1])
    raise ValueError(f"unknown intervention {spec!r}; valid: none, mask_pos<k>, mean_kv_pos<k>, move_image, "
                     f"placement:<{'|'.join(PLACEMENTS)}>")


def moved_placement(template) -> str:
    """Where ``move_image`` puts the image for a model with ``template``: ``image_first``
    when the template has its images after the title, ``text_image`` when before."""
    segs = list(template.segments)
    if "images" not in segs:
        raise ValueError(f"template {template.describe()!r} has no image to move")
    return "text_image" if segs.index("images") < segs.index("title") else "image_first"


# --------------------------------------------------------------------------- masks


def intervention_mask(real: torch.Tensor, *, causal: bool, drop: int | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 4-D additive attention mask [B, 1, T, T] (0 = attend, the dtype's minimum =
    masked) from ``real`` [B, T] bool: keys at padding masked, future keys masked when
    ``causal``, and key ``drop`` masked for every query but itself (so no real query is
    left without a key: under causal attention query ``drop`` keeps its own key).

    Without ``drop`` it is the mask transformers builds from the 2-D mask (same outputs)."""
    real = real.bool()
    B, T = real.shape
    pos = torch.arange(T, device=real.device)
    allowed = real[:, None, :].expand(B, T, T).clone()  # [B, query, key]
    if causal:
        allowed &= pos[None, :, None] >= pos[None, None, :]
    if drop is not None and 0 <= drop < T:
        allowed[:, :, drop] &= pos == drop
    mask = torch.zeros(B, 1, T, T, dtype=dtype, device=real.device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


@contextlib.contextmanager
def mask_key_position(model, position: int) -> Iterator[None]:
    """Inside the block, ``model`` (a :class:`~vixml_lib.models.DualEncoder`) attends to key
    ``position`` only from that position itself (:func:`intervention_mask`; causal for
    decoders)."""
    causal = getattr(model, "kind", "decoder") == "decoder"

    def replace(kwargs: dict) -> dict:
        emb = kwargs["inputs_embeds"]
        new = intervention_mask(kwargs["attention_mask"].bool(), causal=causal, drop=position, dtype=emb.dtype)
        return {**kwargs, "attention_mask": new}

    with backbone_call_hook(model, replace):
        yield


def mean_at_position(out: torch.Tensor, real: torch.Tensor, position: int) -> torch.Tensor:
    """``out`` [B, T, F] with row ``position`` replaced by the mean over the row's other real
    positions (rows without ``position`` or without another real position unchanged)."""
    real = real.bool()
    if position >= out.shape[1]:
        return out
    others = real.clone()
    others[:, position] = False
    n = others.sum(1)  # [B]
    mean = (out.float() * others[..., None]).sum(1) / n.clamp_min(1)[:, None]  # [B, F]
    ok = (n > 0) & real[:, position]
    new = out.clone()
    new[ok, position] = mean[ok].to(out.dtype)
    return new


@contextlib.contextmanager
def mean_kv_position(model, position: int) -> Iterator[None]:
    """Inside the block, the key and value projections of every layer of ``model`` at
    ``position`` are replaced by their mean over each item's other real positions
    (:func:`mean_at_position`)."""
    keys, values = projection_modules(model)
    state: dict[str, torch.Tensor] = {}

    def grab(kwargs: dict) -> None:
        state["real"] = kwargs["attention_mask"].bool()

    def replace(_module, _args, output):
        return mean_at_position(output, state["real"], position)

    handles = [m.register_forward_hook(replace) for m in (*keys, *values)]
    try:
        with backbone_call_hook(model, grab):
            yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def intervene(model, spec: str | Intervention) -> Iterator[Intervention]:
    """Apply one intervention (a name or an :class:`Intervention`) inside the block; yields
    the intervention with ``move_image`` resolved to its ``placement``."""
    iv = parse_intervention(spec)
    if iv.kind == "none":
        yield iv
    elif iv.kind == "mask":
        with mask_key_position(model, iv.position):
            yield iv
    elif iv.kind == "mean_kv":
        with mean_kv_position(model, iv.position):
            yield iv
    else:
        label = iv.placement if iv.kind == "placement" else moved_placement(model.template)
        with use_template(model, placement_template(model, label)):
            yield Intervention(iv.name, iv.kind, placement=label)
