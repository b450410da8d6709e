"""The frozen vision encoder object and its picklable preprocessors.

:class:`VisionEncoder` wraps a torch vision model: ``preprocess`` (PIL images -> pixels)
and ``encode`` (pixels -> one pooled vector per image). The factory that builds one from
a name is :func:`vixml_lib.images.encoders.create_vision_encoder`.

``VisionEncoder.preprocess`` runs in DataLoader workers: it is a call to
:attr:`VisionEncoder.preprocessor`, a small picklable object that holds no model
(:class:`ImagePreprocessor` for the offline encoders, :class:`HFImagePreprocessor`
around a transformers image processor), so pass that (not the encoder) to worker
processes.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["VisionEncoder", "ImagePreprocessor", "HFImagePreprocessor"]


# --------------------------------------------------------------------------------------
# preprocessing (picklable, no model inside)
# --------------------------------------------------------------------------------------


class ImagePreprocessor:
    """Resize to ``image_size`` x ``image_size``, scale to [0, 1], normalise per channel.

    Pure and picklable: numpy math in float32, the same bytes out for the same images on
    every run. ``mean = std = 0.5`` is SigLIP's normalisation (pixels -> [-1, 1]);
    EfficientNet-Lite uses 127/255 and 128/255.
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
            raise ValueError(f"{self.name}: expected pixel values of shape (B, 3, H, W), "
                             f"got {tuple(pixel_values.shape)}")
        if pixel_values.shape[0] == 0:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        with torch.inference_mode():
            x = pixel_values.to(self.device, dtype=torch.float32, non_blocking=True)
            use_amp = self.device.type == "cuda" and self.dtype in (torch.float16, torch.bfloat16)
            with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=use_amp):
                out = self.model(pixel_values=x)
            if isinstance(out, torch.Tensor):  # models that return the pooled vectors (offline CNNs)
                pooled = out
            else:
                pooled = getattr(out, "pooler_output", None)
                if pooled is None:  # models without a pooling head: mean over tokens
                    pooled = out.last_hidden_state.mean(dim=1)
            if pooled.ndim != 2:
                pooled = pooled.reshape(pooled.shape[0], -1)
            return pooled.float().cpu()

    def __call__(self, images: Sequence[Image.Image] | Image.Image) -> torch.Tensor:
        """Convenience: ``encode(preprocess(images))``."""
        return self.encode(self.preprocess(images))
