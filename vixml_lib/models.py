"""The ViXML dual encoder: one Siamese module for queries and labels, built from a named config.

Usage::

    model = create_model("minilm-vixml")                 # a preset (MODEL_PRESETS)
    model = create_model("smollm2-vixml", lora_r=8)      # a preset with overrides
    model = create_model(ModelConfig(backbone="Qwen/Qwen2.5-0.5B", use_images=True))
    model = create_model("runs/x/model")                 # a folder written by model.save()
    emb = model(title_ids, title_lens, image_vectors, image_mask)   # [B, D] float32

The backbone is a transformers ``AutoModel`` (no LM head) loaded by :mod:`vixml_lib.backbones`
(offline GGUF included; layer cutting, attention dropout, LoRA there too). Decoders are
wrapped with peft LoRA (``lora_r=0``: full fine-tuning); encoders are fully fine-tuned. Each
image (one frozen-vision vector of ``vision_dim``) is projected by ``image_proj`` into the
token-embedding space and inserted as one token; :class:`~vixml_lib.prompt.PromptAssembler`
builds the prompt (template, see :mod:`vixml_lib.prompt`). Pooling is the mean over every
real position (prompt and image tokens included) or the last real position; embeddings are
L2-normalised. Tiny random-weight configs for tests: :func:`vixml_lib.testing.tiny_model_config`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import DTYPES, apply_lora, detect_kind, enable_checkpointing, get_tokenizer, load_backbone
from .config import config_from_dict
from .fusion import LateFusion
from .io_utils import atomic_path, write_json
from .prompt import AssembledBatch, PromptAssembler, PromptTemplate, get_template, without_images

log = logging.getLogger(__name__)

__all__ = ["ModelConfig", "MODEL_PRESETS", "model_config", "create_model", "load_model", "is_saved_model",
           "DualEncoder", "EncoderOutput"]

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "trainable.safetensors"


@dataclass
class ModelConfig:
    """Everything that defines a dual encoder (saved beside its weights).

    - ``backbone``: ``offline-minilm`` | ``offline-smollm2`` | a hub name | a folder |
      ``random-tiny-bert`` / ``random-tiny-llama`` (random weights, tests only);
    - ``kind``: ``auto`` (from the transformers config) | ``encoder`` | ``decoder``;
    - ``template``: ``auto`` (``encoder`` for encoders; ``text_image``, or ``text_only``
      without images, for decoders) | a name of ``prompt.TEMPLATES`` | a mapping of
      ``prompt.make_template`` arguments; ``template_overrides``: ``PromptTemplate`` fields
      (e.g. ``{"eos_token": "<|endoftext|>", "text_prefix": "Product"}``);
    - ``use_images``, ``vision_dim`` (1152 for SigLIP2 so400m), ``max_images``;
    - ``pooling``: ``mean`` (all real positions) | ``last``; ``normalize``: L2;
    - LoRA (decoders; encoders only with ``lora_on_encoder``): ``lora_r`` (0 = full
      fine-tuning), ``lora_alpha``, ``lora_rslora``, ``lora_dropout``,
      ``lora_target_modules`` (None = q,k,v,o,gate,up,down for decoders); authors:
      r=256, alpha=256, rsLoRA, dropout 0;
    - ``train_backbone=False`` freezes the backbone (only ``image_proj`` trains);
    - ``gradient_checkpointing``; ``dtype``: ``auto`` (fp32 weights, bf16 autocast on CUDA),
      ``float32`` (no autocast), ``bfloat16`` / ``float16`` (weights in that dtype);
      ``attn_implementation``: ``sdpa`` | ``eager`` (for attention maps);
    - ``seed``: initialisation of ``image_proj`` and of random backbones.
    """

    backbone: str = "offline-minilm"
    kind: str = "auto"
    template: Any = "auto"
    template_overrides: dict = field(default_factory=dict)
    use_images: bool = False
    vision_dim: int = 1152
    max_images: int = 3
    pooling: str = "mean"
    normalize: bool = True
    lora_r: int = 256
    lora_alpha: float = 256
    lora_rslora: bool = True
    lora_dropout: float = 0.0
    lora_target_modules: list | None = None
    lora_on_encoder: bool = False
    train_backbone: bool = True
    gradient_checkpointing: bool = False
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    # None: the backbone's own attention-probability dropout. 0.0 keeps PyTorch's fused
    # attention on CPU: with dropout it falls back to a path that builds the full
    # attention matrix (several times slower and more memory; benchmarks/bench_efficiency.py).
    attention_dropout: float | None = None
    # keep only the backbone's first N transformer layers (None: all). A CPU budget knob:
    # SmolLM2-135M's 30 layers encode ~30 items/s on 2 cores; its first 6 keep the
    # pretrained embeddings, attention sink included, at a fifth of the cost.
    num_layers: int | None = None
    # early: image vectors enter the backbone's token stream (ViXML); late: the backbone reads the
    # text alone and one attention layer fuses its pooled vector with the images (MUFIN-style)
    fusion: str = "early"
    trust_remote_code: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ("auto", "encoder", "decoder"):
            raise ValueError(f"kind must be auto, encoder or decoder, got {self.kind!r}")
        if self.fusion not in ("early", "late"):
            raise ValueError(f"fusion must be 'early' or 'late', got {self.fusion!r}")
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {self.pooling!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1 or None, got {self.num_layers}")
        if self.max_images < 0:
            raise ValueError(f"max_images must be >= 0, got {self.max_images}")
        if self.lora_target_modules is not None:
            self.lora_target_modules = list(self.lora_target_modules)
        self.template_overrides = dict(self.template_overrides or {})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "model config") -> ModelConfig:
        return config_from_dict(cls, dict(values), source=source)


_QWEN = dict(
    kind="decoder",
    use_images=True,
    dtype="bfloat16",  # bf16 weights, as the paper trains its decoders (LoRA adapters stay float32)
    template_overrides={"eos_token": "<|endoftext|>"},
    lora_r=256,
    lora_alpha=256,
    lora_rslora=True,
    gradient_checkpointing=True,
)

MODEL_PRESETS: dict[str, ModelConfig] = {
    "minilm": ModelConfig(backbone="offline-minilm", kind="encoder"),
    "minilm-vixml": ModelConfig(backbone="offline-minilm", kind="encoder", use_images=True),
    # the authors' encoder run (enc.sh): paraphrase-MiniLM-L3-v2 from the hub
    "minilm-l3-vixml": ModelConfig(backbone="sentence-transformers/paraphrase-MiniLM-L3-v2", kind="encoder",
                                   use_images=True),
    "distilbert": ModelConfig(backbone="distilbert-base-uncased", kind="encoder"),
    "distilbert-vixml": ModelConfig(backbone="distilbert-base-uncased", kind="encoder", use_images=True),
    # small LoRA rank for CPU runs (alpha = r, as the authors' r = alpha = 256)
    "smollm2": ModelConfig(backbone="offline-smollm2", kind="decoder", lora_r=16, lora_alpha=16),
    "smollm2-vixml": ModelConfig(backbone="offline-smollm2", kind="decoder", use_images=True, lora_r=16, lora_alpha=16),
    "qwen2.5-0.5b": ModelConfig(backbone="Qwen/Qwen2.5-0.5B", **{**_QWEN, "use_images": False}),
    "qwen2.5-0.5b-vixml": ModelConfig(backbone="Qwen/Qwen2.5-0.5B", **_QWEN),
    # the paper's decoder is the instruction-tuned Qwen2.5-3B (the authors' dec.sh)
    "qwen2.5-3b": ModelConfig(backbone="Qwen/Qwen2.5-3B-Instruct", **{**_QWEN, "use_images": False}),
    "qwen2.5-3b-vixml": ModelConfig(backbone="Qwen/Qwen2.5-3B-Instruct", **_QWEN),
    "qwen2.5-7b-vixml": ModelConfig(backbone="Qwen/Qwen2.5-7B", **_QWEN),
}


@dataclass
class EncoderOutput:
    """Details of one forward pass (see :meth:`DualEncoder.forward_details`)."""

    embeddings: torch.Tensor  # [B, D] float32, normalised when config.normalize
    pooled: torch.Tensor  # [B, D] float32 before normalisation
    last_hidden_state: torch.Tensor  # [B, T, D]
    batch: AssembledBatch  # the assembled prompt (masks, kinds, positions)
    attentions: tuple | None = None  # per layer [B, heads, T, T] (eager attention only)
    hidden_states: tuple | None = None


class DualEncoder(nn.Module):
    """One encoder for queries and labels (Siamese): backbone + image projection + prompt + pooling."""

    def __init__(self, config: ModelConfig, *, backbone: nn.Module | None = None, tokenizer=None):
        super().__init__()
        self.config = config
        if backbone is None:
            backbone, tok = load_backbone(config)
            tokenizer = tokenizer or tok
        elif tokenizer is None:
            tokenizer = get_tokenizer(config.backbone, config.trust_remote_code)
        self.tokenizer = tokenizer
        self.kind = config.kind if config.kind != "auto" else detect_kind(backbone.config)
        self.template: PromptTemplate = self._resolve_template()
        self.assembler = PromptAssembler(self.template, tokenizer)
        self.hidden_size = int(backbone.get_input_embeddings().embedding_dim)

        # trainable parts of the backbone
        use_lora = config.train_backbone and config.lora_r > 0 and (self.kind == "decoder" or config.lora_on_encoder)
        if config.gradient_checkpointing:
            enable_checkpointing(backbone)
        if use_lora:
            backbone = apply_lora(backbone, config, self.kind)
        else:
            backbone.requires_grad_(config.train_backbone)
        self.uses_lora = use_lora
        self.backbone = backbone
        self._forward_params = set(inspect.signature(self.base_model.forward).parameters)

        self.image_proj: nn.Linear | None = None
        self.fusion: LateFusion | None = None
        if config.use_images:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self.image_proj = nn.Linear(config.vision_dim, self.hidden_size)
                if config.fusion == "late":
                    self.fusion = LateFusion(self.hidden_size)

    # ---------------------------------------------------------------- construction helpers
    def _resolve_template(self) -> PromptTemplate:
        t = self.config.template
        if t == "auto":
            t = "encoder" if self.kind == "encoder" else ("text_image" if self.config.use_images else "text_only")
        elif isinstance(t, Mapping) and "kind" not in t:  # make_template arguments: the model's kind
            t = {**t, "kind": self.kind}
        self.full_template = get_template(t, **self.config.template_overrides)
        # late fusion: the backbone reads the same template without its image segments
        return without_images(self.full_template) if self.config.fusion == "late" else self.full_template

    @property
    def base_model(self) -> nn.Module:
        """The transformers model inside the (possibly peft-wrapped) backbone; its ``config``
        says the number of layers and heads."""
        b = self.backbone
        return b.get_base_model() if hasattr(b, "get_base_model") else b

    def resolved_config(self) -> ModelConfig:
        """The config with ``kind`` and an ``auto`` template resolved (what :meth:`save` writes)."""
        template = self.config.template
        if template == "auto":
            template = self.full_template.name
        return dataclasses.replace(self.config, kind=self.kind, template=template)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def embedding_dim(self) -> int:
        return self.hidden_size

    def token_embedding(self) -> nn.Module:
        return self.base_model.get_input_embeddings()

    # ---------------------------------------------------------------- forward
    def _autocast(self, device: torch.device):
        if device.type == "cuda" and self.config.dtype != "float32":
            dt = torch.float16 if self.config.dtype == "float16" else torch.bfloat16
            return torch.autocast(device_type="cuda", dtype=dt)
        return contextlib.nullcontext()

    def project_images(self, image_vectors, image_mask=None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(image_embeds [B, M, H], mask [B, M] bool or None)``: the images projected into the
        token-embedding space, at most ``max_images`` per item, on the model's device."""
        if self.image_proj is None or image_vectors is None:
            return None, None
        dev = self.device
        vec = torch.as_tensor(image_vectors).to(dev, non_blocking=True)
        if vec.dim() == 2:  # one image per item
            vec = vec[:, None]
        if vec.shape[-1] != self.config.vision_dim:
            raise ValueError(f"image vectors have dim {vec.shape[-1]}, "
                             f"the model expects vision_dim={self.config.vision_dim}")
        vec = vec[:, : self.config.max_images]
        mask = None
        if image_mask is not None:
            mask = torch.as_tensor(image_mask).to(dev, non_blocking=True).bool()
            mask = (mask[:, None] if mask.dim() == 1 else mask)[:, : self.config.max_images]
        return self.image_proj(vec.to(self.image_proj.weight.dtype)), mask

    def assemble(self, title_ids, title_lens, image_vectors=None, image_mask=None) -> AssembledBatch:
        """The assembled prompt of a batch (projected images included when the template has
        image slots), on the model's device."""
        dev = self.device
        title_ids = torch.as_tensor(title_ids).to(dev, non_blocking=True).long()
        title_lens = torch.as_tensor(title_lens).to(dev, non_blocking=True).long()
        image_embeds = mask = None
        if self.template.has_images:
            image_embeds, mask = self.project_images(image_vectors, image_mask)
        return self.assembler.assemble(title_ids, title_lens, self.token_embedding(), image_embeds, mask)

    def forward_details(
        self,
        title_ids,
        title_lens,
        image_vectors=None,
        image_mask=None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """Forward pass returning the embeddings together with the prompt and hidden states
        (attention maps need ``attn_implementation="eager"``)."""
        with self._autocast(self.device):
            batch = self.assemble(title_ids, title_lens, image_vectors, image_mask)
            kwargs = {}
            if "use_cache" in self._forward_params:
                kwargs["use_cache"] = False
            if output_attentions:
                kwargs["output_attentions"] = True
            if output_hidden_states:
                kwargs["output_hidden_states"] = True
            out = self.backbone(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kwargs)
        h = out.last_hidden_state
        if self.config.pooling == "mean":
            m = batch.attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (h.float() * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            pooled = h[torch.arange(h.shape[0], device=h.device), batch.last_positions.clamp_min(0)].float()
        if self.fusion is not None:  # late fusion: the pooled text vector meets the images here
            with self._autocast(self.device):
                images, mask = self.project_images(image_vectors, image_mask)
            emb = self.fusion(pooled, images, mask)
        else:
            emb = F.normalize(pooled, dim=-1) if self.config.normalize else pooled
        return EncoderOutput(
            embeddings=emb,
            pooled=pooled,
            last_hidden_state=h,
            batch=batch,
            attentions=getattr(out, "attentions", None),
            hidden_states=getattr(out, "hidden_states", None),
        )

    def forward(self, title_ids, title_lens, image_vectors=None, image_mask=None) -> torch.Tensor:
        """Embeddings [B, D] (float32, L2-normalised when ``config.normalize``).

        ``title_ids`` [B, L] int (right-padded, no special tokens; the token cache of the
        same backbone), ``title_lens`` [B]; ``image_vectors`` [B, M, vision_dim] (any float
        dtype), ``image_mask`` [B, M] (1 = real image; None = all real). Tensors or numpy
        arrays, on any device: they are moved to the model's device. Images are ignored
        unless ``config.use_images``.
        """
        return self.forward_details(title_ids, title_lens, image_vectors, image_mask).embeddings

    def tokenize(self, texts: list[str], max_len: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise raw titles as the token cache does (no special tokens, truncated to
        ``max_len``, right-padded): ``(ids [N, L] long, lengths [N] long)``, for demos."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]
        width = max([len(e) for e in enc] + [1])
        ids = torch.full((len(enc), width), self.assembler.pad_id, dtype=torch.long)
        for r, e in enumerate(enc):
            ids[r, : len(e)] = torch.tensor(e, dtype=torch.long)
        return ids, torch.tensor([len(e) for e in enc], dtype=torch.long)

    # ---------------------------------------------------------------- size
    def trainable_parameters(self) -> dict:
        """Counts of parameters: total, trainable, trainable in the backbone / image projection."""
        total = trainable = proj = 0
        for name, p in self.named_parameters():
            total += p.numel()
            if p.requires_grad:
                trainable += p.numel()
                if name.startswith(("image_proj.", "fusion.")):
                    proj += p.numel()
        return {
            "total": total,
            "trainable": trainable,
            "backbone_trainable": trainable - proj,
            "image_proj": proj,  # and the late-fusion layer, when there is one
            "trainable_fraction": trainable / max(total, 1),
            "lora": self.uses_lora,
        }

    # ---------------------------------------------------------------- persistence
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def save(self, folder: str | Path) -> Path:
        """Write ``model_config.json`` and ``trainable.safetensors`` (trainable weights only:
        LoRA adapters + projection, or the full encoder when it is fine-tuned)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = self.trainable_state_dict()
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "vixml_lib.models"})
        write_json(
            folder / CONFIG_FILE,
            {"format": "vixml-dual-encoder", "version": 1, "config": self.resolved_config().to_dict(),
             "trainable": sorted(tensors)},
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu", **overrides) -> DualEncoder:
        """Rebuild from the saved config (with ``overrides``, e.g. ``attn_implementation``) and
        load the saved trainable weights. ``trust_remote_code`` is off unless ``overrides`` turns
        it on: a saved ``model_config.json`` cannot switch on code execution."""
        from .pretrained import load_safetensors, read_saved_config

        folder = Path(folder)
        saved = read_saved_config(folder / CONFIG_FILE, allow_remote_code=bool(overrides.get("trust_remote_code")))
        config = ModelConfig.from_dict({**saved, **overrides}, source=str(folder / CONFIG_FILE))
        model = cls(config)
        state = load_safetensors(folder / WEIGHTS_FILE)
        result = model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{folder}: saved weights do not fit the model: unexpected {result.unexpected_keys[:5]}")
        missing = sorted(set(model.trainable_state_dict()) - set(state))
        if missing:
            raise ValueError(f"{folder}: trainable weights missing from the file: {missing[:5]}")
        return model.to(map_location)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, template={self.template.describe()!r}, pooling={self.config.pooling}"


def model_config(name_or_config: str | ModelConfig | Mapping = "minilm", **overrides) -> ModelConfig:
    """The one way to merge a preset with overrides: a preset name (:data:`MODEL_PRESETS`), a
    :class:`ModelConfig`, a mapping of its fields or a backbone name, with ``overrides``
    replacing config fields."""
    if isinstance(name_or_config, ModelConfig):
        base, source = name_or_config.to_dict(), "model config"
    elif isinstance(name_or_config, Mapping):
        base, source = dict(name_or_config), "model config"
    elif name_or_config in MODEL_PRESETS:
        base, source = MODEL_PRESETS[name_or_config].to_dict(), name_or_config
    else:
        base, source = {"backbone": name_or_config}, "model config"
    return ModelConfig.from_dict({**base, **overrides}, source=source)


def create_model(name_or_config: str | ModelConfig | Mapping = "minilm", **overrides) -> DualEncoder:
    """Build a :class:`DualEncoder` from anything :func:`model_config` takes, or from a folder
    written by :meth:`DualEncoder.save`; ``overrides`` replace config fields."""
    if isinstance(name_or_config, (str, Path)) and is_saved_model(name_or_config):
        return DualEncoder.load(name_or_config, **overrides)
    return DualEncoder(model_config(name_or_config, **overrides))


def is_saved_model(folder: str | Path) -> bool:
    """True when ``folder`` holds a model written by :meth:`DualEncoder.save`."""
    return (Path(folder) / CONFIG_FILE).is_file()


def load_model(folder: str | Path, map_location: str | torch.device = "cpu", **overrides) -> DualEncoder:
    """Load a model written by :meth:`DualEncoder.save`."""
    return DualEncoder.load(folder, map_location=map_location, **overrides)
