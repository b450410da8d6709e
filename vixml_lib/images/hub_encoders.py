"""Vision encoders from the Hugging Face hub (or a local folder), loaded with transformers.

Any transformers vision model by hub name or local folder: the vision tower is loaded
with ``trust_remote_code=False`` (for a dual encoder such as SigLIP or CLIP only its
vision half, through the class transformers maps its ``vision_config`` to), together
with its ``AutoImageProcessor``; the vector is the model's ``pooler_output`` (SigLIP:
the attention-pooling head, 1152-d for so400m). Weights come from the local Hugging Face
cache first; the hub is contacted only when the model is not cached, and never when
``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` is set or ``local_files_only=True``
is passed. A model that cannot be found raises :class:`VisionModelUnavailable` (an
``OSError``) naming it and saying why (not cached; offline or hub unreachable).
"""
from __future__ import annotations

import hashlib
import logging
import os

import torch

from .encoder_base import HFImagePreprocessor, VisionEncoder
from .offline_encoders import list_offline_encoders

log = logging.getLogger(__name__)

__all__ = ["VisionModelUnavailable", "create_hub_encoder"]


class VisionModelUnavailable(OSError):
    """A named vision model is neither in the local cache nor downloadable."""


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _unavailable(name: str, err: Exception, tried_online: bool) -> VisionModelUnavailable:
    where = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    how = ("it is not in the local Hugging Face cache and the hub could not be reached (no internet?)"
           if tried_online else
           "it is not in the local Hugging Face cache and downloading is off (offline mode: HF_HUB_OFFLINE=1, "
           "TRANSFORMERS_OFFLINE=1 or local_files_only=True)")
    return VisionModelUnavailable(
        f"vision model {name!r} is not available: {how}. Cache it on a machine with internet "
        f"(`huggingface-cli download {name}`) and copy the cache ({where}), or pass a local folder as the name, "
        f"or import the authors' precomputed features with vixml_lib.images.authors.import_authors_features, "
        f"or use an offline encoder ({', '.join(list_offline_encoders())}). Underlying error: "
        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    )


def _from_pretrained(fn, name: str, local_files_only: bool | None, **kw):
    """Call ``fn(name, ...)`` from the cache first, then (if allowed) online."""
    if local_files_only is None:
        local_files_only = _hub_offline()
    try:
        return fn(name, local_files_only=True, **kw)
    except OSError as e:
        if local_files_only or os.path.isdir(name):
            raise _unavailable(name, e, tried_online=False) from e
    try:
        return fn(name, local_files_only=False, **kw)
    except OSError as e:
        raise _unavailable(name, e, tried_online=True) from e


def _load_model(name: str, local_files_only: bool | None):
    """``(config, model, vision config)``: the vision tower only, for a dual encoder."""
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = _from_pretrained(AutoConfig.from_pretrained, name, local_files_only, trust_remote_code=False)
    vcfg = getattr(config, "vision_config", None)
    if vcfg is None:
        model = _from_pretrained(AutoModel.from_pretrained, name, local_files_only, config=config,
                                 trust_remote_code=False)
        return config, model, config
    # a dual encoder (SigLIP, CLIP, ...): load only its vision tower
    try:
        cls = MODEL_MAPPING[type(vcfg)]
    except KeyError:
        raise ValueError(f"{name}: transformers has no vision model class for {type(vcfg).__name__}") from None
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the text tower's weights are skipped on purpose: no load report
    try:
        model = _from_pretrained(cls.from_pretrained, name, local_files_only, config=vcfg)
    finally:
        hf_logging.set_verbosity(level)
    log.info("%s: loaded the vision tower (%s); the text tower is not loaded", name, cls.__name__)
    return config, model, vcfg


def create_hub_encoder(name: str, device, dtype, local_files_only: bool | None) -> VisionEncoder:
    """Load the transformers vision model ``name`` (hub name or local folder) as a frozen encoder."""
    from transformers import AutoImageProcessor

    config, model, cfg = _load_model(name, local_files_only)
    processor = _from_pretrained(AutoImageProcessor.from_pretrained, name, local_files_only, trust_remote_code=False)
    image_size = getattr(cfg, "image_size", None)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    if image_size is None:
        size = getattr(processor, "size", None) or {}
        image_size = size.get("height") or size.get("shortest_edge") or 224
    model = model.to(device).eval()
    with torch.inference_mode():  # probe the pooled size once
        out = model(pixel_values=torch.zeros(1, 3, int(image_size), int(image_size), device=device))
    pooled = getattr(out, "pooler_output", None)
    dim = int(pooled.shape[-1]) if pooled is not None else int(out.last_hidden_state.shape[-1])
    return VisionEncoder(name, model, HFImagePreprocessor(processor, int(image_size)), dim=dim,
                         image_size=int(image_size), device=device, dtype=dtype,
                         fingerprint=_hub_fingerprint(name, config))


def _hub_fingerprint(name: str, config) -> str:
    """Hub model: name@commit. Local folder: a hash of its config and weight files' names and sizes."""
    if os.path.isdir(name):
        h = hashlib.sha256()
        for fn in sorted(os.listdir(name)):
            path = os.path.join(name, fn)
            if not os.path.isfile(path):
                continue
            if fn.endswith(".json"):
                with open(path, "rb") as f:
                    h.update(fn.encode() + b":" + f.read())
            elif fn.endswith((".safetensors", ".bin", ".pt", ".pth")):
                h.update(f"{fn}:{os.path.getsize(path)}".encode())
        return f"{name}:{h.hexdigest()}"
    revision = getattr(config, "_commit_hash", None) or ""
    return f"{name}@{revision}" if revision else name
