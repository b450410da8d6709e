"""Devices: the one place that turns a device setting (``auto``, ``cpu``, ``cuda``,
``cuda:N``) into a ``torch.device``, and refuses, in one line, a name that is not one of
those or a CUDA device this machine does not have."""
from __future__ import annotations

import torch

from .errors import DeviceError
from .validation import check_device_name


def _cuda_missing() -> str:
    build = torch.__version__
    if torch.version.cuda is None:
        return f"this PyTorch ({build}) is a CPU-only build"
    return f"no CUDA GPU is visible (PyTorch {build}, CUDA {torch.version.cuda})"


def resolve_device(name: str | torch.device, source: str = "device") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; ``cpu``; ``cuda`` / ``cuda:N`` only when
    that GPU exists. Anything else is a :class:`~vixml_lib.errors.DeviceError` naming
    ``source`` (the setting's file or flag) and the valid names."""
    if isinstance(name, torch.device):
        return name
    name = check_device_name(name, source=source, key="device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(source, f"asks for CUDA but {_cuda_missing()}", key="device", value=name,
                          allowed="auto or cpu on this machine")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(source, f"names GPU {index} but this machine has {count}", key="device", value=name,
                          allowed=", ".join(["auto", "cpu", "cuda"] + [f"cuda:{i}" for i in range(count)]))
    return torch.device(name)
