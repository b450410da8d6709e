"""The attention-sink literature's measures as pure tensor functions (no model).

- **Sink score** (Gu et al., 2024, "When Attention Sink Emerges in Language Models",
  eq. 2): for one layer ``l`` and head ``h``, the attention a key position ``k`` receives,
  averaged over the queries that come after it,

  ``alpha_{l,h}(k) = 1 / |Q_k| * sum_{i in Q_k} A_{l,h}[i, k]``,  ``Q_k = {real i > k}``

  (``queries="later"``, the causal case). Gu et al. average over ``i >= k``, the key's own
  row included (``include_self=True``); on their 64-token sequences that adds at most
  1/64, on our ~20-token prompts it does not, so by default the key's own row is left out
  as in :mod:`vixml_lib.sinks.metrics` (for ``k = 0`` it is trivially 1). For bidirectional
  encoders ``queries="all"`` averages over every real query ``i != k``. Padding is never a
  query. A row without the key (e.g. no image) gives NaN.
- **Sink share** (Gu et al.'s ``Sink_k^epsilon``): the share of (layer, head) pairs whose
  sink score, averaged over the items that have the key, exceeds ``epsilon`` (0.3 there).
- **Massive activations** (Sun et al., 2024, "Massive Activations in Large Language
  Models"): per hidden state, the three largest ``|h[t, c]|`` over the real positions
  ``t`` and channels ``c`` of a sequence, where they sit (position, channel), and the
  median ``|h[t, c]|`` over the same entries.
- **Key / value norms**: the L2 norm of each head's key or value vector at a position,
  averaged over the (key-value) heads. Keys are taken before the rotary embedding, which
  is a rotation and leaves each head's norm unchanged.
"""
from __future__ import annotations

import numpy as np
import torch

from ..prompt import PAD_KIND
from .metrics import IMAGE_CODE, KIND_NAMES, TEXT_CODES

#: the key positions whose sink score is measured (see :func:`sink_positions`)
SINK_TARGETS = ("pos0", "first_image", "first_text")


def sink_positions(kinds: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per row of ``kinds`` [B, T] (segment kind codes, ``PAD_KIND`` at padding), the key
    position [B] long of each of :data:`SINK_TARGETS` (-1 when the row has none): ``pos0``
    (0), ``first_image`` (the first image slot), ``first_text`` (the first text token:
    BOS, [CLS], a prefix or the title; position 0 unless an image comes first)."""
    B, T = kinds.shape
    real = kinds != PAD_KIND

    def first(mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.any(1), mask.float().argmax(1), torch.full((B,), -1, device=kinds.device)).long()

    return {
        "pos0": torch.where(real[:, 0], 0, -1).long(),
        "first_image": first(kinds == IMAGE_CODE),
        "first_text": first(torch.isin(kinds, torch.tensor(TEXT_CODES, device=kinds.device))),
    }


def sink_scores(attn: torch.Tensor, key: torch.Tensor, real: torch.Tensor, queries: str = "later",
                include_self: bool = False) -> torch.Tensor:
    """Sink score of one key position per row (see the module docstring).

    ``attn`` [B, ..., T, T] (query rows, key columns; any dims between, e.g. layers and
    heads), ``key`` [B] long (-1: none), ``real`` [B, T] bool. Returns [B, ...] float: the
    mean of ``attn[..., i, key]`` over the counted queries ``i`` (``later``: real ``i > key``;
    ``all``: real ``i != key``; ``include_self`` adds ``i = key``, Gu et al.'s exact form);
    NaN where the row has no key or no counted query.
    """
    if queries not in ("later", "all"):
        raise ValueError(f"queries must be 'later' (causal, Gu et al.) or 'all' (bidirectional), not {queries!r}")
    B, T = real.shape
    key = torch.as_tensor(key, device=attn.device).long()
    pos = torch.arange(T, device=attn.device)
    counted = real.bool() & (pos[None] > key[:, None] if queries == "later" else pos[None] != key[:, None])
    if include_self:
        counted |= real.bool() & (pos[None] == key[:, None])
    counted &= (key >= 0)[:, None]
    extra = attn.dim() - 3
    idx = key.clamp_min(0).reshape((B,) + (1,) * extra + (1, 1)).expand(attn.shape[:-1] + (1,))
    column = attn.float().gather(-1, idx)[..., 0]  # [B, ..., T]: attention of every query on the key
    w = counted.reshape((B,) + (1,) * extra + (T,)).float()
    n = w.sum(-1)
    total = (column * w).sum(-1)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))


def sink_share(scores: np.ndarray | torch.Tensor, epsilon: float = 0.3) -> float:
    """Gu et al.'s sink metric: ``scores`` [N, layers, heads] (items x layers x heads; NaN
    for items without the key) are averaged over the items that have the key, then the
    share of (layer, head) pairs above ``epsilon`` is returned (NaN when no item has it)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"sink scores must be [items, layers, heads], got shape {s.shape}")
    ok = ~np.isnan(s).any((1, 2))
    if not ok.any():
        return float("nan")
    return float((s[ok].mean(0) > epsilon).mean())


def massive_activations(hidden: torch.Tensor, real: torch.Tensor, k: int = 3) -> dict[str, torch.Tensor]:
    """The ``k`` largest activation magnitudes of each hidden state of each row.

    ``hidden`` [B, S, T, D] (S hidden states, e.g. embeddings + one per layer), ``real``
    [B, T] bool. Returns ``top`` [B, S, k] (``|h|``, descending), ``position`` [B, S, k] and
    ``channel`` [B, S, k] (long) of each, and ``median`` [B, S] (median ``|h|`` over the real
    positions and all channels; the lower median for an even count, as ``torch.median``).
    Padding never counts.
    """
    B, S, T, D = hidden.shape
    if k > T * D:
        raise ValueError(f"k={k} exceeds the {T * D} entries of a hidden state")
    mag = hidden.float().abs()
    pad = ~real.bool()[:, None, :, None]  # [B, 1, T, 1]
    top, flat = mag.masked_fill(pad, -1.0).reshape(B, S, T * D).topk(k, dim=-1)
    nan_med = mag.masked_fill(pad, float("nan")).reshape(B, S, T * D)
    median = nan_med.nanmedian(-1).values
    return {"top": top, "position": flat // D, "channel": flat % D, "median": median}


def projection_norms(proj: torch.Tensor, n_heads: int, real: torch.Tensor) -> torch.Tensor:
    """[B, T]: the L2 norm of each head's slice of ``proj`` [B, T, n_heads * head_dim] (a
    key or value projection's output), averaged over the heads; NaN at padding."""
    B, T, F = proj.shape
    if F % n_heads:
        raise ValueError(f"a projection of width {F} does not split into {n_heads} heads")
    norms = proj.float().reshape(B, T, n_heads, F // n_heads).norm(dim=-1).mean(-1)
    return torch.where(real.bool(), norms, torch.full_like(norms, float("nan")))


def norms_by_kind(norms: np.ndarray, kinds: np.ndarray) -> dict[str, np.ndarray]:
    """Mean norm per state ([S]) of ``position 0`` and of the OTHER positions by segment
    kind (``title``, ``images``, ``eos`` ...), from ``norms`` [N, S, T] (NaN at padding)
    and ``kinds`` [N, T] codes (``PAD_KIND`` at padding)."""
    norms, kinds = np.asarray(norms, dtype=np.float64), np.asarray(kinds)
    out = {"position 0": np.nanmean(norms[:, :, 0], 0)}
    rest = kinds.copy()
    rest[:, 0] = PAD_KIND
    for code in np.unique(rest):
        if code == PAD_KIND:
            continue
        vals = np.where((rest == code)[:, None, :], norms, np.nan)
        out[KIND_NAMES[int(code)]] = np.nanmean(vals, axis=(0, 2))
    return out


def position0_ratio(norms: np.ndarray) -> np.ndarray:
    """[S]: per item, the norm at position 0 over the mean norm of its other real positions,
    averaged over the items (``norms`` [N, S, T], NaN at padding). A sink has a hidden-state
    ratio >> 1 and, in the literature, a value ratio < 1."""
    norms = np.asarray(norms, dtype=np.float64)
    others = np.nanmean(norms[:, :, 1:], axis=-1)
    return np.nanmean(norms[:, :, 0] / others, axis=0)


def kind_name(code: int) -> str:
    """The segment kind name of a code (``pad`` for padding)."""
    return KIND_NAMES.get(int(code), "pad")
