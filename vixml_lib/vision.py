"""Frozen vision encoders, created by name: one image -> one pooled vector.

ViXML turns each product image into ONE vector with a frozen vision model (SigLIP2
so400m-patch14-384, 1152-d pooled output), computed once and cached (see
:mod:`vixml_lib.feature_cache`). :func:`create_vision_encoder` builds a
:class:`VisionEncoder` from a name:

- ``google/siglip2-so400m-patch14-384`` (the paper's model) or any other transformers
  vision model by hub name or local folder: the vision tower is loaded with
  ``trust_remote_code=False`` (for a dual encoder such as SigLIP or CLIP only its vision
  half, through the class transformers maps its ``vision_config`` to), together with
  its ``AutoImageProcessor``; the vector is the model's ``pooler_output`` (SigLIP: the
  attention-pooling head, 1152-d for so400m). Weights come from the local Hugging Face
  cache first; the hub is contacted only when the model is not cached, and never when
  ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` is set or ``local_files_only=True``
  is passed. A model that cannot be found raises :class:`VisionModelUnavailable` (an
  ``OSError``) naming it and saying why (not cached; offline or hub unreachable).
- ``offline-random-siglip``: the SAME transformers code path
  (``SiglipVisionModel`` + SigLIP normalisation, mean = std = 0.5) with a small config
  (64 px, patch 8, 1 layer, width 384) and FIXED weights drawn from
  ``numpy.random.default_rng`` per tensor (seeded by the tensor's name), so they are
  identical on every machine and torch version (:attr:`VisionEncoder.fingerprint` is a
  SHA-256 of the weights and is checked against the reference value). It is not a
  trained model: a random ViT whose features keep the colour and pattern of the demo
  catalogue's products linearly separable (the product shape less so; accuracies below,
  test in ``tests/test_vision.py``), so the whole image pipeline runs offline. ``offline-random-siglip-tiny`` is a cheaper variant
  (1 layer, width 128) for fast tests.

``VisionEncoder.preprocess`` runs in DataLoader workers: it is a call to
:attr:`VisionEncoder.preprocessor`, a small picklable object that holds no model, so
pass that (not the encoder) to worker processes.
"""
from __future__ import annotations

import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

__all__ = [
    "VisionEncoder",
    "VisionModelUnavailable",
    "ImagePreprocessor",
    "HFImagePreprocessor",
    "OfflineSpec",
    "OFFLINE_ENCODERS",
    "PAPER_ENCODER",
    "create_vision_encoder",
    "list_offline_encoders",
    "offline_state_dict",
]

PAPER_ENCODER = "google/siglip2-so400m-patch14-384"


class VisionModelUnavailable(OSError):
    """A named vision model is neither in the local cache nor downloadable."""


# --------------------------------------------------------------------------------------
# preprocessing (picklable, no model inside)
# --------------------------------------------------------------------------------------


class ImagePreprocessor:
    """Resize to ``image_size`` x ``image_size``, scale to [0, 1], normalise per channel.

    Pure and picklable: numpy math in float32, the same bytes out for the same images on
    every run. ``mean = std = 0.5`` is SigLIP's normalisation (pixels -> [-1, 1]).
    """

    def __init__(self, image_size: int, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                 resample: int = Image.Resampling.BILINEAR):
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.resample = int(resample)

    def __repr__(self) -> str:
        return f"ImagePreprocessor(image_size={self.image_size}, mean={self.mean}, std={self.std})"

    def one(self, img: Image.Image) -> np.ndarray:
        """One image -> float32 array (3, H, W)."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        s = self.image_size
        if img.size != (s, s):
            img = img.resize((s, s), resample=self.resample)
        x = np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)
        x = (x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, images: Sequence[Image.Image] | Image.Image) -> torch.Tensor:
        if isinstance(images, Image.Image):
            images = [images]
        if len(images) == 0:
            return torch.zeros((0, 3, self.image_size, self.image_size), dtype=torch.float32)
        return torch.from_numpy(np.stack([self.one(im) for im in images]))


class HFImagePreprocessor:
    """Wraps a transformers image processor: PIL images -> ``pixel_values`` (B, 3, H, W)."""

    def __init__(self, processor: Any, image_size: int):
        self.processor = processor
        self.image_size = int(image_size)

    def __repr__(self) -> str:
        return f"HFImagePreprocessor({type(self.processor).__name__}, image_size={self.image_size})"

    def __call__(self, images: Sequence[Image.Image] | Image.Image) -> torch.Tensor:
        if isinstance(images, Image.Image):
            images = [images]
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        if len(images) == 0:
            return torch.zeros((0, 3, self.image_size, self.image_size), dtype=torch.float32)
        out = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return out.to(torch.float32).contiguous()


# --------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------

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


class VisionEncoder:
    """A frozen vision model: ``preprocess`` (PIL -> pixels) and ``encode`` (pixels -> vectors).

    Attributes: ``name``, ``dim`` (vector size), ``image_size`` (input side in pixels),
    ``device``, ``dtype`` (autocast dtype on CUDA, or None for float32), ``fingerprint``
    (identifies the weights; part of the feature-cache key), ``model`` (the torch module,
    in eval mode, no gradients) and ``preprocessor`` (picklable, model-free).
    """

    def __init__(self, name: str, model: torch.nn.Module, preprocessor, dim: int, image_size: int,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None, fingerprint: str = ""):
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.preprocessor = preprocessor
        self.dim = int(dim)
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.dtype = dtype
        self.fingerprint = fingerprint or hashlib.sha256(name.encode()).hexdigest()

    def __repr__(self) -> str:
        return (f"VisionEncoder({self.name!r}, dim={self.dim}, image_size={self.image_size}, "
                f"device={str(self.device)!r}, dtype={self.dtype})")

    def preprocess(self, images: Sequence[Image.Image] | Image.Image) -> torch.Tensor:
        """PIL images -> float32 CPU tensor (B, 3, image_size, image_size)."""
        return self.preprocessor(images)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) -> pooled vectors, a float32 CPU tensor (B, dim).

        Runs under ``torch.inference_mode``; on CUDA with ``dtype`` float16/bfloat16 the
        forward pass runs under autocast to that dtype.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"{self.name}: expected pixel values of shape (B, 3, H, W), got {tuple(pixel_values.shape)}")
        if pixel_values.shape[0] == 0:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        with torch.inference_mode():
            x = pixel_values.to(self.device, dtype=torch.float32, non_blocking=True)
            use_amp = self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16)
            with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=use_amp):
                out = self.model(pixel_values=x)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:  # models without a pooling head: mean over tokens
                pooled = out.last_hidden_state.mean(dim=1)
            if pooled.ndim != 2:
                pooled = pooled.reshape(pooled.shape[0], -1)
            return pooled.float().cpu()

    def __call__(self, images: Sequence[Image.Image] | Image.Image) -> torch.Tensor:
        """Convenience: ``encode(preprocess(images))``."""
        return self.encode(self.preprocess(images))


# --------------------------------------------------------------------------------------
# offline encoders: SiglipVisionModel with fixed numpy-seeded weights
# --------------------------------------------------------------------------------------


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


OFFLINE_ENCODERS: dict[str, OfflineSpec] = {
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


def _create_offline(name: str, device, dtype) -> VisionEncoder:
    from transformers import SiglipVisionModel

    spec = OFFLINE_ENCODERS[name]
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


# --------------------------------------------------------------------------------------
# hub models
# --------------------------------------------------------------------------------------


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
        f"or import the authors' precomputed features with vixml_lib.feature_cache.import_authors_features, "
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


def _create_hub(name: str, device, dtype, local_files_only: bool | None) -> VisionEncoder:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = _from_pretrained(AutoConfig.from_pretrained, name, local_files_only, trust_remote_code=False)
    vcfg = getattr(config, "vision_config", None)
    if vcfg is not None:  # a dual encoder (SigLIP, CLIP, ...): load only its vision tower
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
        cfg = vcfg
    else:
        model = _from_pretrained(AutoModel.from_pretrained, name, local_files_only, config=config,
                                 trust_remote_code=False)
        cfg = config
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


# --------------------------------------------------------------------------------------
# factory
# --------------------------------------------------------------------------------------


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
        return _create_offline(name, device, dt)
    if name.startswith("offline-"):
        raise ValueError(f"unknown offline vision encoder {name!r}; offline encoders: {', '.join(list_offline_encoders())}")
    return _create_hub(name, device, dt, local_files_only)
