"""Backbones: loading a transformers model for a named backbone, and the surgery the
workbench applies to it (keep the first N layers, attention dropout, activation
checkpointing, LoRA adapters).

Names are resolved by :func:`vixml_lib.pretrained.resolve` (offline packages, hub names,
folders) or are one of the random test backbones of :mod:`vixml_lib.testing`. De-quantising a
GGUF file takes half a minute, so GGUF backbones are de-quantised once into a disk cache
(:mod:`vixml_lib.gguf_cache`) and, within a process, kept in memory
(:data:`CACHE_GGUF_WEIGHTS`) and rebuilt from the kept weights, with only the layers asked for.
"""
from __future__ import annotations

import copy
import functools
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import gguf_cache
from .pretrained import load_tokenizer, resolve
from .testing import RANDOM_BACKBONES

if TYPE_CHECKING:
    from .models import ModelConfig

__all__ = [
    "DTYPES", "DECODER_LORA_TARGETS", "ENCODER_LORA_TARGETS", "get_tokenizer", "detect_kind", "load_backbone",
    "keep_first_layers", "set_attention_dropout", "enable_checkpointing", "apply_lora", "clear_backbone_cache",
]

DTYPES = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DECODER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ENCODER_LORA_TARGETS = ["query", "key", "value", "dense"]  # BERT-like (only with lora_on_encoder)


@functools.lru_cache(maxsize=8)
def get_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer of a named backbone, loaded once per process (GGUF parsing takes seconds).

    Random backbones (``random-tiny-*``) get their :class:`RandomWordTokenizer`.
    """
    if name in RANDOM_BACKBONES:
        return RANDOM_BACKBONES[name][1]()
    return load_tokenizer(name, trust_remote_code=trust_remote_code)


def detect_kind(hf_config) -> str:
    """``encoder`` or ``decoder`` from a transformers config (``is_decoder``, model type,
    architectures)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(hf_config, "is_decoder", False):
        return "decoder"
    archs = getattr(hf_config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return "decoder"
    mt = getattr(hf_config, "model_type", "")
    if mt in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


#: keep the de-quantised weights of GGUF backbones in memory (CPU) for later create_model calls
CACHE_GGUF_WEIGHTS = True
_GGUF_CACHE: dict[tuple, tuple] = {}


def _layer_index(name: str) -> int | None:
    """The layer number in a parameter name such as ``layers.3.mlp.up_proj.weight``."""
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a in ("layers", "layer", "h") and b.isdigit():
            return int(b)
    return None


def clear_backbone_cache() -> None:
    """Forget the in-memory copies of de-quantised GGUF backbones."""
    _GGUF_CACHE.clear()


def load_backbone(config: ModelConfig):
    """(transformers model without head, tokenizer) for ``config.backbone``."""
    from transformers import AutoModel

    dtype = DTYPES[config.dtype]
    if config.backbone in RANDOM_BACKBONES:
        make_cfg, _ = RANDOM_BACKBONES[config.backbone]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = AutoModel.from_config(make_cfg(), attn_implementation=config.attn_implementation)
        model = model.to(dtype)
    else:
        src = resolve(config.backbone)
        key = (src.path, src.gguf_file, str(dtype), config.trust_remote_code)
        if src.gguf_file and key in _GGUF_CACHE:
            # de-quantising a GGUF file takes many seconds: rebuild from the kept weights
            hf_config, state = _GGUF_CACHE[key]
            hf_config = copy.deepcopy(hf_config)
            n = config.num_layers
            if n is not None and n < hf_config.num_hidden_layers:  # build only the layers kept
                hf_config.num_hidden_layers = n
                if isinstance(getattr(hf_config, "layer_types", None), list):
                    hf_config.layer_types = hf_config.layer_types[:n]
                state = {k: v for k, v in state.items() if _layer_index(k) is None or _layer_index(k) < n}
            model = AutoModel.from_config(hf_config, attn_implementation=config.attn_implementation, dtype=dtype)
            model.load_state_dict(state, strict=True)
        else:
            # local cache first, the hub only when reachable: one line when the model is unavailable
            # (a GGUF file through its de-quantised copy on disk: seconds, not half a minute)
            model = gguf_cache.load(AutoModel.from_pretrained, src, dtype=dtype,
                                    attn_implementation=config.attn_implementation,
                                    trust_remote_code=config.trust_remote_code)
            if src.gguf_file and CACHE_GGUF_WEIGHTS:
                _GGUF_CACHE[key] = (
                    copy.deepcopy(model.config),
                    {k: v.detach().clone() for k, v in model.state_dict().items()},
                )
    if config.attention_dropout is not None:
        set_attention_dropout(model, config.attention_dropout)
    if config.num_layers is not None:
        keep_first_layers(model, config.num_layers)
    tokenizer = get_tokenizer(config.backbone, config.trust_remote_code)
    return model, tokenizer


def keep_first_layers(model: nn.Module, n: int) -> nn.Module:
    """Truncate a transformers backbone to its first ``n`` transformer layers, in place.

    The layer stack is the module list whose length is ``config.num_hidden_layers``
    (``layers`` for Llama/Qwen, ``encoder.layer`` for BERT); the config (and its per-layer
    ``layer_types``, when present) is updated to match.
    """
    total = int(model.config.num_hidden_layers)
    if n > total:
        raise ValueError(f"num_layers={n}, but the backbone has only {total} layers")
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == total]
    if not stacks:
        raise ValueError(f"cannot find the layer list of {type(model).__name__} to keep {n} of {total} layers")
    stack = stacks[0]
    del stack[n:]
    model.config.num_hidden_layers = n
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:n]
    return model


def set_attention_dropout(model: nn.Module, p: float) -> int:
    """Set the attention-probability dropout of a transformers backbone (BERT family:
    ``*SelfAttention.dropout``; Llama/Qwen family: ``attention_dropout``). Returns how
    many attention modules were changed."""
    changed = 0
    for module in model.modules():
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = float(p)
            changed += 1
        elif type(module).__name__.endswith("SelfAttention") and isinstance(
                getattr(module, "dropout", None), nn.Dropout):
            module.dropout.p = float(p)
            changed += 1
    for name in ("attention_probs_dropout_prob", "attention_dropout"):
        if hasattr(model.config, name):
            setattr(model.config, name, float(p))
    return changed


def enable_checkpointing(model) -> None:
    """Activation checkpointing on a transformers model (non-reentrant)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def apply_lora(backbone: nn.Module, config: ModelConfig, kind: str) -> nn.Module:
    """Wrap ``backbone`` with peft LoRA adapters as ``config`` says (rank, alpha, rsLoRA,
    dropout, target modules: q,k,v,o,gate,up,down for decoders by default). The adapters'
    initialisation is seeded with ``config.seed + 1``."""
    from peft import LoraConfig, get_peft_model

    targets = config.lora_target_modules or (DECODER_LORA_TARGETS if kind == "decoder" else ENCODER_LORA_TARGETS)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        use_rslora=config.lora_rslora,
        target_modules=list(targets),
        bias="none",
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft still calls transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(config.seed + 1)
        return get_peft_model(backbone, lora)
