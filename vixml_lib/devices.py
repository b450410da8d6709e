"""Devices: the one place that turns a device setting (``auto``, ``cpu``, ``cuda``,
``cuda:N``) into a ``torch.device``."""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; any other name goes to ``torch.device``."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
