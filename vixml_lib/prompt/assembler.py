"""The one assembler: a batch of title ids and projected image vectors -> ``inputs_embeds``.

Every real element of a row (fixed template tokens, title tokens, images) is packed
contiguously from position 0, with no Python loop over rows. :meth:`PromptAssembler.assemble`
runs four steps, each a function below:

1. :meth:`~PromptAssembler._embed_tokens`: embed the fixed tokens and the title tokens once;
2. :func:`_image_slots`: the projected images and their mask (or empty slots);
3. :meth:`~PromptAssembler._segment_lengths`: each row's length of every template segment;
4. :func:`_destinations`: a destination position for every source element (fixed tokens,
   title tokens, images: ``P`` per row) from the cumulative segment offsets, and one scatter
   of source indices into the ``[B, T]`` grid (``src``); then one gather of embeddings, ids
   and segment kinds (:meth:`~PromptAssembler._gather`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .templates import (
    FIXED_KINDS,
    IMAGE_TOKEN_ID,
    KIND_CODES,
    PAD_KIND,
    PromptTemplate,
    fixed_ids_from_tokenizer,
    get_template,
)

__all__ = ["AssembledBatch", "PromptAssembler"]


@dataclass
class AssembledBatch:
    """The assembled input of a batch (``T`` = longest real sequence in the batch).

    - ``inputs_embeds`` [B, T, H]: zeros at padding;
    - ``attention_mask`` [B, T] long: 1 at real positions;
    - ``token_ids`` [B, T] long: the token id, ``IMAGE_TOKEN_ID`` (-1) at image slots,
      ``pad_id`` at padding;
    - ``kinds`` [B, T] long: ``KIND_CODES`` of the segment kind, ``PAD_KIND`` (-1) at padding;
    - ``image_positions`` [B, M] long: position of image ``m`` (-1 when masked / absent);
    - ``eos_positions`` [B] long: position of the closing ``eos``/``sep`` (-1 if none);
    - ``last_positions`` [B] long: last real position; ``lengths`` [B]: real length;
    - ``segment_starts`` / ``segment_lengths`` [B, S]: where each template segment lies.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    token_ids: torch.Tensor
    kinds: torch.Tensor
    image_positions: torch.Tensor
    eos_positions: torch.Tensor
    last_positions: torch.Tensor
    lengths: torch.Tensor
    segment_starts: torch.Tensor
    segment_lengths: torch.Tensor
    segments: tuple[str, ...]


class PromptAssembler:
    """Assemble prompts of one template for one tokenizer.

    The fixed strings (prefixes, special tokens) are tokenised once here. Either pass a
    ``tokenizer`` (HF-like: ``tokenizer(text, add_special_tokens=...)["input_ids"]`` and
    ``*_token_id`` attributes) or ``fixed_ids`` (segment kind -> list of ids) and ``pad_id``.
    """

    def __init__(
        self,
        template: PromptTemplate | str,
        tokenizer=None,
        *,
        fixed_ids: Mapping[str, Sequence[int]] | None = None,
        pad_id: int | None = None,
    ):
        self.template = get_template(template) if not isinstance(template, PromptTemplate) else template
        segs = self.template.segments
        if fixed_ids is not None:
            missing = sorted({k for k in segs if k in FIXED_KINDS} - set(fixed_ids))
            if missing:
                raise ValueError(f"fixed_ids lacks segment(s) {missing}")
            by_index = {s: [int(i) for i in fixed_ids[k]] for s, k in enumerate(segs) if k in FIXED_KINDS}
        elif tokenizer is not None:
            by_index = fixed_ids_from_tokenizer(self.template, tokenizer)
        else:
            raise ValueError("PromptAssembler needs a tokenizer or fixed_ids")
        if pad_id is None and tokenizer is not None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
            if pad_id is None:
                pad_id = getattr(tokenizer, "eos_token_id", None)
        self.pad_id = int(pad_id) if pad_id is not None else 0
        self.segment_ids: dict[int, list[int]] = by_index  # segment index -> ids
        # flattened fixed elements (F of them): ids, segment index, index within the segment
        ids, seg, within = [], [], []
        for s in sorted(by_index):
            for w, i in enumerate(by_index[s]):
                ids.append(i)
                seg.append(s)
                within.append(w)
        self._fixed_ids = torch.tensor(ids, dtype=torch.long)  # [F]
        self._fixed_seg = torch.tensor(seg, dtype=torch.long)  # [F]
        self._fixed_within = torch.tensor(within, dtype=torch.long)  # [F]
        self._fixed_kind = torch.tensor([KIND_CODES[segs[s]] for s in seg], dtype=torch.long)  # [F]
        self._title_seg = segs.index("title")
        self._image_seg = segs.index("images") if "images" in segs else None
        closing = [s for s, k in enumerate(segs) if k in ("eos", "sep") and by_index.get(s)]
        # element index (into the fixed elements) of the last id of the closing segment
        self._eos_element = None
        if closing:
            s = closing[-1]
            self._eos_element = int(((self._fixed_seg == s).nonzero()[-1]).item())

    def assemble(
        self,
        title_ids: torch.Tensor,
        title_lens: torch.Tensor,
        token_embedding: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        image_embeds: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> AssembledBatch:
        """Assemble a batch.

        ``title_ids`` [B, L] (any int dtype, right-padded), ``title_lens`` [B];
        ``token_embedding``: ids [N] -> embeddings [N, H] (an ``nn.Embedding`` or any callable);
        ``image_embeds`` [B, M, H] already in the token-embedding space (or ``None``);
        ``image_mask`` [B, M] (1 = real image; ``None`` = all real). Real images need not be
        the first ones of a row: they are packed in their order.
        """
        if title_ids.dim() != 2:
            raise ValueError(f"title_ids must be [B, L], got shape {tuple(title_ids.shape)}")
        dev = title_ids.device
        B, L = title_ids.shape
        title_ids = title_ids.long()
        title_lens = torch.as_tensor(title_lens, device=dev).long().clamp(0, L)

        fixed_emb, title_emb = self._embed_tokens(title_ids, token_embedding)  # [F, H], [B, L, H]
        if self._image_seg is not None and image_embeds is not None:
            img, mask = _image_slots(image_embeds, image_mask, title_emb)  # [B, M, H], [B, M]
        else:
            img, mask = title_emb.new_zeros(B, 0, title_emb.shape[-1]), torch.zeros(B, 0, dtype=torch.bool, device=dev)
        seg_len = self._segment_lengths(title_lens, mask.sum(1))  # [B, S]
        starts = torch.cumsum(seg_len, 1) - seg_len
        total = seg_len.sum(1)
        src_seg, src_within, valid = self._sources(seg_len, title_lens, mask, L)  # [B, P] each
        src, dest = _destinations(starts, total, src_seg, src_within, valid)  # [B, T], [B, P]
        batch = self._gather(src, fixed_emb, title_emb, img, title_ids)

        F_, M = self._fixed_ids.numel(), mask.shape[1]
        image_positions = torch.where(valid[:, F_ + L:], dest[:, F_ + L:], torch.full_like(dest[:, F_ + L:], -1))
        if M == 0 and image_embeds is not None and image_embeds.dim() == 3:  # images given, template has none
            image_positions = torch.full((B, image_embeds.shape[1]), -1, dtype=torch.long, device=dev)
        if self._eos_element is not None:
            e = self._eos_element
            eos_positions = torch.where(valid[:, e], dest[:, e], torch.full_like(dest[:, e], -1))
        else:
            eos_positions = torch.full((B,), -1, dtype=torch.long, device=dev)
        return AssembledBatch(
            **batch,
            image_positions=image_positions,
            eos_positions=eos_positions,
            last_positions=total - 1,
            lengths=total,
            segment_starts=starts,
            segment_lengths=seg_len,
            segments=self.template.segments,
        )

    __call__ = assemble

    # ------------------------------------------------------------------ the steps
    def _embed_tokens(self, title_ids: torch.Tensor, token_embedding) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the fixed tokens ``[F, H]`` and of the title tokens ``[B, L, H]``, in one call."""
        B, L = title_ids.shape
        fixed_ids = self._fixed_ids.to(title_ids.device)
        F_ = fixed_ids.numel()
        safe_title = title_ids.clamp_min(0)
        if F_:
            emb = token_embedding(torch.cat([fixed_ids, safe_title.reshape(-1)]))
            return emb[:F_], emb[F_:].reshape(B, L, -1)
        title_emb = token_embedding(safe_title.reshape(-1)).reshape(B, L, -1)
        return title_emb.new_zeros(0, title_emb.shape[-1]), title_emb

    def _segment_lengths(self, title_lens: torch.Tensor, n_img: torch.Tensor) -> torch.Tensor:
        """``[B, S]``: each row's length of every template segment (a loop over segments, not rows)."""
        segs = self.template.segments
        seg_len = torch.zeros(len(title_lens), len(segs), dtype=torch.long, device=title_lens.device)
        for s, kind in enumerate(segs):
            if kind == "title":
                seg_len[:, s] = title_lens
            elif kind == "images":
                seg_len[:, s] = n_img
            else:
                n = len(self.segment_ids.get(s, []))
                if kind == "image_prefix" and self.template.image_prefix_needs_images:
                    seg_len[:, s] = n * (n_img > 0).long()
                else:
                    seg_len[:, s] = n
        return seg_len

    def _sources(self, seg_len: torch.Tensor, title_lens: torch.Tensor, mask: torch.Tensor, L: int):
        """For the ``P = F + L + M`` source elements of each row (fixed tokens, title tokens,
        images): their segment ``[B, P]``, their index within it ``[B, P]`` and whether they
        are present ``[B, P]`` (a fixed token of an absent segment, title padding and masked
        images are not)."""
        dev = seg_len.device
        B, M, F_ = seg_len.shape[0], mask.shape[1], self._fixed_ids.numel()
        ar_L = torch.arange(L, device=dev)
        fixed_seg = self._fixed_seg.to(dev).expand(B, F_)
        fixed_within = self._fixed_within.to(dev).expand(B, F_)
        image_seg = self._image_seg if self._image_seg is not None else 0
        src_seg = torch.cat([fixed_seg, torch.full((B, L), self._title_seg, device=dev, dtype=torch.long),
                             torch.full((B, M), image_seg, device=dev, dtype=torch.long)], 1)
        img_within = torch.cumsum(mask.long(), 1) - 1
        src_within = torch.cat([fixed_within, ar_L.expand(B, L), img_within], 1)
        present = fixed_within < seg_len.gather(1, fixed_seg)
        valid = torch.cat([present, ar_L.expand(B, L) < title_lens[:, None], mask], 1)
        return src_seg, src_within, valid

    def _gather(self, src: torch.Tensor, fixed_emb, title_emb, img, title_ids) -> dict[str, torch.Tensor]:
        """Embeddings, token ids, kinds and the attention mask of the ``[B, T]`` grid: source
        element ``src[b, t]`` (``P`` = padding) of the pool ``[fixed | title | images | pad]``."""
        B, T = src.shape
        L, M, H = title_emb.shape[1], img.shape[1], title_emb.shape[-1]
        F_ = fixed_emb.shape[0]
        P = F_ + L + M
        dev = src.device
        pool = torch.cat([fixed_emb.expand(B, F_, H), title_emb, img, title_emb.new_zeros(B, 1, H)], 1)
        pool_ids = torch.cat([self._fixed_ids.to(dev).expand(B, F_), title_ids,
                              torch.full((B, M), IMAGE_TOKEN_ID, dtype=torch.long, device=dev),
                              torch.full((B, 1), self.pad_id, dtype=torch.long, device=dev)], 1)
        pool_kinds = torch.cat([self._fixed_kind.to(dev).expand(B, F_),
                                torch.full((B, L), KIND_CODES["title"], dtype=torch.long, device=dev),
                                torch.full((B, M), KIND_CODES["images"], dtype=torch.long, device=dev),
                                torch.full((B, 1), PAD_KIND, dtype=torch.long, device=dev)], 1)
        return {
            "inputs_embeds": pool.gather(1, src[..., None].expand(B, T, H)),
            "attention_mask": (src < P).long(),
            "token_ids": pool_ids.gather(1, src),
            "kinds": pool_kinds.gather(1, src),
        }


def _image_slots(image_embeds: torch.Tensor, image_mask, title_emb: torch.Tensor):
    """The images ``[B, M, H]`` in the title embeddings' dtype and device, and their mask ``[B, M]`` bool."""
    B, _, H = title_emb.shape
    if image_embeds.dim() != 3 or image_embeds.shape[0] != B or image_embeds.shape[2] != H:
        raise ValueError(f"image_embeds must be [B={B}, M, H={H}], got {tuple(image_embeds.shape)}")
    M = image_embeds.shape[1]
    dev = title_emb.device
    img = image_embeds.to(device=dev, dtype=title_emb.dtype)
    if image_mask is None:
        return img, torch.ones(B, M, dtype=torch.bool, device=dev)
    mask = torch.as_tensor(image_mask, device=dev).bool()
    if mask.shape != (B, M):
        raise ValueError(f"image_mask must be [B, M] = {(B, M)}, got {tuple(mask.shape)}")
    return img, mask


def _destinations(starts, total, src_seg, src_within, valid) -> tuple[torch.Tensor, torch.Tensor]:
    """``(src [B, T], dest [B, P])``: the position of every source element (its segment's
    start plus its index within the segment), and the grid of source indices (``P`` at
    padding) that one scatter of ``arange(P)`` into those positions gives."""
    B, P = src_seg.shape
    dev = src_seg.device
    T = int(total.max().item()) if B else 0
    dest = starts.gather(1, src_seg) + src_within
    # absent elements go to distinct dummy columns past T (no duplicate indices)
    dummy = T + torch.arange(P, device=dev).expand(B, P)
    dest = torch.where(valid, dest, dummy)
    src = torch.full((B, T + P), P, dtype=torch.long, device=dev)
    src.scatter_(1, dest, torch.arange(P, device=dev).expand(B, P).contiguous())
    return src[:, :T], dest
