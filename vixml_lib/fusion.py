"""Late fusion, the MUFIN-style baseline ViXML compares its early fusion with.

ViXML fuses early: each image vector is projected into the token-embedding space and
enters the transformer's token stream (:class:`vixml_lib.prompt.PromptAssembler`). Late
fusion (MUFIN, Mittal et al., CVPR 2022; the authors' baseline follows anshumitts/CafeXC)
keeps the two apart until the end: the backbone encodes the text alone (the same template
without its image segments) into one pooled vector ``t``; each image vector ``v_m`` and
``t`` are projected; one small attention layer runs over ``[t, v_1 .. v_M]`` with the image
mask, and its masked mean, L2-normalised, is the item's embedding::

    e = normalize( masked_mean( Attn([W_t t, W_v v_1, .., W_v v_M]) ) )      # [D]

An item without images gets ``e`` from its text token alone, through the same path (the
mask), never NaN; padding image slots change nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LateFusion"]


class LateFusion(nn.Module):
    """Text projection + one ``TransformerEncoderLayer`` over the text and image tokens.

    ``dim``: the backbone's hidden size (the image projection of the model maps images into
    it); ``heads`` (8, or fewer when they do not divide ``dim``), ``feedforward`` and
    ``dropout`` as PRIME's combiner (8, 1024, 0.1).
    """

    def __init__(self, dim: int, heads: int = 8, feedforward: int = 1024, dropout: float = 0.1):
        super().__init__()
        while dim % heads:
            heads //= 2
        self.text_proj = nn.Linear(dim, dim)
        self.attention = nn.TransformerEncoderLayer(dim, heads, feedforward, dropout, activation="gelu",
                                                    batch_first=True)

    def forward(self, text: torch.Tensor, images: torch.Tensor | None = None,
                image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``text`` [B, D] pooled text vectors, ``images`` [B, M, D] projected image vectors (or
        None), ``image_mask`` [B, M] (1 = real image; None = all real) -> embeddings [B, D]."""
        tokens = self.text_proj(text.float())[:, None]  # [B, 1, D]
        valid = torch.ones(text.shape[0], 1, dtype=torch.bool, device=text.device)  # [B, 1]
        if images is not None and images.shape[1]:
            mask = torch.ones(images.shape[:2], dtype=torch.bool, device=text.device) if image_mask is None \
                else image_mask.to(text.device).bool()
            tokens = torch.cat([tokens, images.float()], dim=1)  # [B, 1 + M, D]
            valid = torch.cat([valid, mask], dim=1)
            # padding slots get zeros, so their values cannot leak through the fast path
            tokens = tokens * valid[..., None]
        out = self.attention(tokens, src_key_padding_mask=~valid)  # [B, 1 + M, D]
        w = valid[..., None].float()
        pooled = (torch.nan_to_num(out) * w).sum(1) / w.sum(1)
        return F.normalize(pooled, dim=-1)
