"""The optimiser of a run: AdamW over parameter groups with their own learning rates, and the
linear warm-up / decay schedule.

Groups (each with a ``name``): ``backbone`` (or its LoRA adapters) at ``lr``; ``image_proj``
(the image projection, and the late-fusion layer) at ``lr_image_proj``; with PRIME, ``prime``
(the combiner) and ``prime_free`` (the free vectors) at ``prime.lr``. Biases and norm weights
(1-d) and the free vectors get no weight decay, as in the authors' ``prepare_optimizer_and_scheduler``.
"""
from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, lr_backbone: float, lr_image_proj: float | None = None,
                 weight_decay: float = 0.0, prime: nn.Module | None = None,
                 lr_prime: float | None = None) -> list[dict]:
    """AdamW parameter groups of the trainable parameters of ``model`` (and of a PRIME head)."""
    lr_image_proj = lr_backbone if lr_image_proj is None else lr_image_proj
    lr_prime = lr_backbone if lr_prime is None else lr_prime
    groups: dict[str, dict] = {}

    def add(part: str, lr: float, p: torch.Tensor, decay: bool) -> None:
        key = f"{part}{'' if decay else '_no_decay'}"
        group = groups.setdefault(key, {"name": key, "params": [], "lr": lr,
                                        "weight_decay": weight_decay if decay else 0.0})
        group["params"].append(p)

    for name, p in model.named_parameters():
        if p.requires_grad:
            image_side = name.startswith(("image_proj.", "fusion."))
            add("image_proj" if image_side else "backbone", lr_image_proj if image_side else lr_backbone, p,
                p.dim() >= 2)
    if prime is not None:
        for name, p in prime.named_parameters():
            if name == "free":
                add("prime_free", lr_prime, p, False)
            else:
                add("prime", lr_prime, p, p.dim() >= 2)
    return list(groups.values())


def linear_schedule(warmup: int, total: int):
    """Learning-rate factor per step: linear warm-up over ``warmup`` steps, then linear decay to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def make_optimizer(groups: list[dict], eps: float, total_steps: int, warmup_steps: int,
                   device: torch.device) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Fused AdamW (one pass over all parameters: on a 2-core CPU ~7x faster per step than the
    default) and its warm-up / decay schedule over ``total_steps``."""
    optimizer = torch.optim.AdamW(groups, eps=eps, fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(warmup_steps, total_steps))
    return optimizer, scheduler
