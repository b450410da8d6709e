"""The sink measures as pure tensor functions (no model): attention mass on a key set,
received share, hidden-state norms, and the categories of the strongest receivers.

Definitions (used everywhere in :mod:`vixml_lib.sinks`; ``a[q, k]`` is the softmax
attention of query position ``q`` on key position ``k`` of one layer and head, rows summing
to 1; positions are those of the right-packed prompt that ``DualEncoder.forward_details``
assembles, so position 0 is every item's first token):

- **real positions**: ``attention_mask == 1`` (padding never counts, as query or key);
- **counted queries** of a target set ``K`` of key positions: the real positions ``q``
  with ``q >= 1`` and ``q >= min(K)``, i.e. every position that can see the target
  under causal attention, except position 0, whose row is trivially ``[1, 0, ...]``;
- **mass** on ``K`` for one item = the mean over its counted queries of
  ``sum_{k in K} a[q, k]`` (NaN when the item has no counted query, e.g. no image).
  Targets (:data:`TARGETS`, :func:`target_positions`): ``pos0`` (position 0; counted
  queries = all real positions >= 1), ``images`` (every image slot), ``eos`` (the closing
  token; it is the last position of every decoder template, so its only counted query is
  itself: its self-attention);
- **received share** of key ``k`` = the mean over the real queries ``q >= 1`` of
  ``a[q, k]``: the fraction of all attention paid by positions 1.. that lands on ``k``
  (it sums to 1 over ``k``; for ``k = 0`` it equals the ``pos0`` mass). The **strongest
  receiver** of a layer is the key with the largest head-averaged received share;
- **spread** over the sampled items: standard deviation and the 25 % / 75 % quantiles of
  the per-item values;
- **hidden-state norms**: the L2 norm of ``hidden_states[i]`` at every real position,
  ``i = 0`` the input embeddings, ``i`` the output of layer ``i`` (transformers puts the
  final norm on the last entry).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..prompt import KIND_CODES

TARGETS = ("pos0", "images", "eos")
#: the categories of :func:`receiver_categories`, in the order of the tables
RECEIVER_CATEGORIES = ("image at 0", "text at 0", "first text token", "image", "EOS", "other text")
TEXT_CODES = [KIND_CODES[k] for k in ("bos", "cls", "text_prefix", "title", "image_prefix")]
IMAGE_CODE, EOS_CODE = KIND_CODES["images"], KIND_CODES["eos"]
#: kind code -> segment kind name
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}


def target_positions(kinds: torch.Tensor, eos_positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """The key sets of :data:`TARGETS`, each [B, T] bool, from the prompt's ``kinds`` [B, T]
    codes and ``eos_positions`` [B]."""
    pos = torch.arange(kinds.shape[1], device=kinds.device)
    return {
        "pos0": (pos == 0).expand(kinds.shape),
        "images": kinds == IMAGE_CODE,
        "eos": pos[None, :] == eos_positions[:, None],
    }


def counted_queries(target: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the query positions that count for the key set ``target`` [B, T] bool:
    real positions ``q >= 1`` with ``q >= `` the first target position (none when the row
    has no target)."""
    B, T = real.shape
    pos = torch.arange(T, device=real.device)
    has = target.any(1)
    first = torch.where(has, target.float().argmax(1), torch.full_like(has, T, dtype=torch.long))
    return real.bool() & (pos >= 1) & (pos >= first[:, None])


def attention_mass(attn: torch.Tensor, target: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-item attention mass on a key set (see the module docstring).

    ``attn`` [B, ..., T, T] (any leading dims after the batch, e.g. layers and heads),
    ``target`` [B, T] bool key positions, ``real`` [B, T] bool (attention mask). Returns
    [B, ...] float: the mean over the counted queries of the summed attention on
    ``target``; NaN for rows with no counted query.
    """
    target = target.bool() & real.bool()
    q = counted_queries(target, real)
    extra = attn.dim() - 3
    shape = (attn.shape[0],) + (1,) * extra
    per_query = (attn.float() * target.reshape(shape + (1, -1))).sum(-1)  # [B, ..., T] by query
    n = q.sum(1).float().reshape(shape)
    total = (per_query * q.reshape(shape + (-1,))).sum(-1)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))


def received_share(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B, ..., T]: the mean over real queries ``q >= 1`` of ``attn[q, k]`` for every key ``k``
    (sums to 1 over ``k``; 0 at padding keys)."""
    T = real.shape[1]
    q = real.bool() & (torch.arange(T, device=real.device) >= 1)
    shape = (attn.shape[0],) + (1,) * (attn.dim() - 3)
    total = (attn.float() * q.reshape(shape + (-1, 1))).sum(-2)
    return total / q.sum(1).float().clamp_min(1).reshape(shape + (1,))


def hidden_norms(hidden_states: Sequence[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """[B, n_states, T]: L2 norm of every hidden state at every position, NaN at padding."""
    h = torch.stack([s.float() for s in hidden_states], 1)  # [B, S, T, D]
    norms = h.norm(dim=-1)
    return torch.where(real.bool()[:, None, :], norms, torch.full_like(norms, float("nan")))


def receiver_categories(positions: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Name the segment of key positions: ``positions`` [N, ...] int, ``kinds`` [N, T] kind
    codes. Categories (:data:`RECEIVER_CATEGORIES`): ``image at 0``, ``text at 0``, ``first
    text token`` (the first text position when position 0 is not text, e.g. right after a
    leading image), ``image`` (an image elsewhere), ``EOS``, ``other text``."""
    positions = np.asarray(positions)
    kinds = np.asarray(kinds)
    flat = positions.reshape(len(positions), -1)
    kind_at = np.take_along_axis(kinds, flat, axis=1).reshape(positions.shape)
    is_text = np.isin(kinds, TEXT_CODES)
    first_text = np.where(is_text.any(1), is_text.argmax(1), -1).reshape((-1,) + (1,) * (positions.ndim - 1))
    at0 = positions == 0
    image_at0, text_at0, first, image, eos, other = RECEIVER_CATEGORIES
    return np.select(
        [at0 & (kind_at == IMAGE_CODE), at0 & np.isin(kind_at, TEXT_CODES), positions == first_text,
         kind_at == IMAGE_CODE, kind_at == EOS_CODE],
        [image_at0, text_at0, first, image, eos],
        default=other,
    )
