"""Where the image goes in the prompt, and the model the analysis runs.

The prompts are assembled by the model's own :class:`~vixml_lib.prompt.PromptAssembler`
(the code path training uses), under several placements of the image:

==================== =================================================================
``text_image``       ``This product text <title> and its image <img> EOS`` (the paper's)
``image_text``       ``and its image <img> This product text <title> EOS``: the image
                     PREFIX comes first, so position 0 is still a text token
``image_first``      ``<img> This product text <title> EOS``: the image vector itself
                     at position 0
``image_after_prefix`` ``This product text <img> <title> EOS``
``text_only``        ``This product text <title> EOS``
==================== =================================================================

(SmolLM2 and Qwen2.5 prepend no BOS, so position 0 is whatever the template puts first.)

Attention maps need explicit attention probabilities: the model is built with
``attn_implementation="eager"`` (:func:`create_analysis_model`, :func:`require_eager`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from ..prompt import PromptAssembler, PromptTemplate, get_template

#: placement label -> arguments of :func:`vixml_lib.prompt.make_template`
PLACEMENTS: dict[str, dict] = {
    "text_image": {"order": "text_image"},
    "image_text": {"order": "image_text"},
    "image_first": {"order": "image_text", "image_prefix": False},
    "image_after_prefix": {"order": "image_after_prefix"},
    "text_only": {"order": "text_only"},
}
PLACEMENT_NOTES = {
    "text_image": "the paper's: text, then image prefix and image",
    "image_text": "image prefix first: position 0 is a TEXT token",
    "image_first": "the image vector itself at position 0",
    "image_after_prefix": "image right after the text prefix",
    "text_only": "no image slot",
}


# --------------------------------------------------------------------------- the model


def backbone_config(model) -> Any:
    """The transformers config of a :class:`~vixml_lib.models.DualEncoder`'s backbone (or of
    a transformers model); ``None`` when it has none."""
    return getattr(getattr(model, "base_model", model), "config", None)


def attention_shape(model) -> tuple[int, int]:
    """``(layers, heads)`` of the model's backbone."""
    cfg = backbone_config(model)
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def require_eager(model) -> None:
    """Raise ``ValueError`` unless ``model`` computes explicit attention probabilities."""
    impl = getattr(backbone_config(model), "_attn_implementation", None)
    if impl != "eager":
        raise ValueError(
            f"attention maps need attn_implementation='eager', this model uses {impl!r}: build it with "
            "create_model(..., attn_implementation='eager') / load_model(folder, attn_implementation='eager') "
            "or create_analysis_model(...)"
        )


def create_analysis_model(name_or_config: Any, *, vision_dim: int | None = None, device: str | torch.device = "cpu",
                          **overrides):
    """A :class:`~vixml_lib.models.DualEncoder` for attention analysis: eager attention,
    eval mode, on ``device``; the image projection is freshly initialised (untrained)."""
    from ..models import create_model

    if vision_dim is not None:
        overrides["vision_dim"] = int(vision_dim)
    overrides["attn_implementation"] = "eager"
    return create_model(name_or_config, **overrides).to(device).eval()


def untrained_like(model, device: str | torch.device | None = None):
    """The model ``model`` started from: the same saved config (backbone, layers, template,
    LoRA settings) with fresh adapters (LoRA starts as the identity, so the backbone is the
    pretrained one) and a freshly initialised image projection; eager attention."""
    return create_analysis_model(model.resolved_config(), device=device or model.device)


def forward_with_attentions(model, inputs: Mapping[str, Any], *, hidden_states: bool = False):
    """``model.forward_details`` on ``inputs`` with the attention maps (and the hidden states
    when ``hidden_states``); ``ValueError`` when the backbone returns none."""
    out = model.forward_details(**inputs, output_attentions=True, output_hidden_states=hidden_states)
    if not out.attentions:
        raise ValueError("the backbone returned no attention maps; use attn_implementation='eager'")
    return out


# --------------------------------------------------------------------------- templates


def placement_template(model, spec: str | Mapping | PromptTemplate) -> PromptTemplate:
    """The template of a placement for ``model``: a label of :data:`PLACEMENTS`, a mapping of
    ``make_template`` arguments or a template, with the model's kind and template overrides
    (e.g. its EOS token), as the model itself would build it."""
    if isinstance(spec, str) and spec in PLACEMENTS:
        spec = {**PLACEMENTS[spec], "name": spec}
    if isinstance(spec, Mapping):
        spec = {"kind": getattr(model, "kind", "decoder"), **dict(spec)}
    return get_template(spec, **dict(model.config.template_overrides))


@contextlib.contextmanager
def use_template(model, template: PromptTemplate):
    """Temporarily assemble ``model``'s prompts with ``template`` (weights unchanged)."""
    old = model.template, model.assembler
    model.template, model.assembler = template, PromptAssembler(template, model.tokenizer)
    try:
        yield model
    finally:
        model.template, model.assembler = old


@contextlib.contextmanager
def evaluating(model, template: PromptTemplate):
    """``model`` in eval mode assembling with ``template``; its mode and template come back after."""
    was_training = model.training
    model.eval()
    try:
        with use_template(model, template):
            yield model
    finally:
        model.train(was_training)


def same_template(a: PromptTemplate, b: PromptTemplate) -> bool:
    """Whether two templates assemble the same prompt (their names aside)."""
    return dataclasses.replace(a, name="") == dataclasses.replace(b, name="")
