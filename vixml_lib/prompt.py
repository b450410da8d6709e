"""The input prompt as data: one template, one assembler, for every order and model kind.

A :class:`PromptTemplate` is an ordered tuple of *segment kinds*:

==============  ===============================================================
``bos``         the tokenizer's BOS token, only if the tokenizer prepends one
                (``bos_policy="auto"``; ``"always"`` emits it whenever defined)
``cls``         ``[CLS]`` (encoders)
``text_prefix`` the tokens of ``text_prefix`` ("This product text")
``title``       the title tokens (pre-tokenised, without special tokens)
``image_prefix`` the tokens of ``image_prefix`` ("and its image"); dropped for an
                item without images unless ``image_prefix_needs_images=False``
``images``      one slot per real image: the projected image vectors
``eos``         ``eos_token`` (default: the tokenizer's EOS, else its SEP)
``sep``         ``[SEP]`` (encoders)
==============  ===============================================================

Named templates (:data:`TEMPLATES`, :func:`get_template`):

- ``encoder``: ``images + [CLS] + title + [SEP]`` (images first, empty prompt, as the
  authors do for BERT-like encoders);
- ``text_image``: ``[BOS] + text_prefix + title + image_prefix + images + EOS`` (the paper's);
- ``image_text``: ``[BOS] + image_prefix + images + text_prefix + title + EOS``;
- ``image_after_prefix``: ``[BOS] + text_prefix + images + title + EOS``;
- ``text_only``: ``[BOS] + text_prefix + title + EOS``.

:func:`make_template` builds the ablation variants (prefixes, EOS, BOS on/off, order).

:class:`PromptAssembler` turns a batch of title ids and (projected) image vectors into
``inputs_embeds`` with every real element packed contiguously to one side, with no Python
loop over rows: it computes each row's segment lengths, their cumulative offsets, a
destination position for every source element (fixed tokens, title tokens, images) and
one scatter of source indices followed by one gather of embeddings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "SEGMENT_KINDS",
    "KIND_CODES",
    "PAD_KIND",
    "IMAGE_TOKEN_ID",
    "PromptTemplate",
    "TEMPLATES",
    "get_template",
    "make_template",
    "AssembledBatch",
    "PromptAssembler",
    "tokenizer_uses_bos",
]

SEGMENT_KINDS = ("bos", "cls", "text_prefix", "title", "image_prefix", "images", "eos", "sep")
#: small integer code of each segment kind, used in ``AssembledBatch.kinds``
KIND_CODES = {k: i for i, k in enumerate(SEGMENT_KINDS)}
#: kind code of padding positions
PAD_KIND = -1
#: token id reported at image slots in ``AssembledBatch.token_ids``
IMAGE_TOKEN_ID = -1

_FIXED = ("bos", "cls", "text_prefix", "image_prefix", "eos", "sep")
_TEXTUAL = ("text_prefix", "title", "image_prefix")


@dataclass(frozen=True)
class PromptTemplate:
    """An ordered list of segment kinds plus the strings of the two prefixes.

    ``eos_token``: the token string closing the prompt (e.g. ``"<|endoftext|>"`` for Qwen2.5);
    ``None`` takes the tokenizer's EOS token, or its SEP token when it has no EOS.
    ``bos_policy``: ``"auto"`` emits BOS only for tokenizers that prepend one themselves,
    ``"always"`` whenever the tokenizer defines one.
    ``image_prefix_needs_images``: drop the image prefix for items with no image.
    """

    segments: tuple[str, ...]
    text_prefix: str = "This product text"
    image_prefix: str = "and its image"
    eos_token: str | None = None
    bos_policy: str = "auto"
    image_prefix_needs_images: bool = True
    name: str = "custom"

    def __post_init__(self):
        segs = tuple(self.segments)
        object.__setattr__(self, "segments", segs)
        bad = [s for s in segs if s not in SEGMENT_KINDS]
        if bad:
            raise ValueError(f"unknown segment kind(s) {bad}; valid: {', '.join(SEGMENT_KINDS)}")
        for once in ("title", "images"):
            if segs.count(once) > 1:
                raise ValueError(f"segment {once!r} may appear at most once in a template, got {segs}")
        if "title" not in segs:
            raise ValueError(f"a template needs a 'title' segment, got {segs}")
        if self.bos_policy not in ("auto", "always"):
            raise ValueError(f"bos_policy must be 'auto' or 'always', got {self.bos_policy!r}")

    @property
    def has_images(self) -> bool:
        return "images" in self.segments

    def describe(self) -> str:
        """A readable one-line rendering, e.g. ``[BOS] This product text <title> and its image <img> <EOS>``."""
        show = {
            "bos": "[BOS]",
            "cls": "[CLS]",
            "text_prefix": self.text_prefix,
            "title": "<title>",
            "image_prefix": self.image_prefix,
            "images": "<img>*",
            "eos": self.eos_token or "[EOS]",
            "sep": "[SEP]",
        }
        return " ".join(show[s] for s in self.segments)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["segments"] = list(self.segments)
        return d


_ORDERS = ("text_image", "image_text", "image_after_prefix", "text_only")


def make_template(
    order: str = "text_image",
    *,
    kind: str = "decoder",
    text_prefix: bool | str | None = None,
    image_prefix: bool | str | None = None,
    eos: bool = True,
    bos: bool = True,
    images: bool = True,
    name: str | None = None,
    **fields,
) -> PromptTemplate:
    """Build a template for an ablation.

    ``order``: ``text_image`` | ``image_text`` | ``image_after_prefix`` | ``text_only``.
    ``kind``: ``decoder`` wraps with ``bos`` / ``eos``; ``encoder`` with ``cls`` / ``sep``
    (then ``image_text`` puts images before ``[CLS]``, as the authors do, and
    ``text_image`` puts them just before ``[SEP]``).
    ``text_prefix`` / ``image_prefix``: on/off, or the string to use; ``None`` takes the
    default of the kind and order (decoders: both on, except no image prefix for
    ``image_after_prefix``; encoders: both off).
    ``eos`` / ``bos``: closing / opening special token on/off (``bos`` stays conditional on
    the tokenizer using one, see :class:`PromptTemplate`).
    ``images=False`` drops the image slots (same as ``order="text_only"``).
    Extra ``fields`` are passed to :class:`PromptTemplate` (e.g. ``eos_token``).
    """
    if order not in _ORDERS:
        raise ValueError(f"unknown order {order!r}; valid: {', '.join(_ORDERS)}")
    if kind not in ("decoder", "encoder"):
        raise ValueError(f"kind must be 'decoder' or 'encoder', got {kind!r}")
    if text_prefix is None:
        text_prefix = kind == "decoder"
    if image_prefix is None:
        image_prefix = kind == "decoder" and order != "image_after_prefix"
    if isinstance(text_prefix, str):
        fields["text_prefix"] = text_prefix
    if isinstance(image_prefix, str):
        fields["image_prefix"] = image_prefix
    if order == "text_only":
        images = False
    tp = ["text_prefix"] if text_prefix else []
    ip = ["image_prefix"] if image_prefix else []
    img = (ip + ["images"]) if images else []
    if order == "image_after_prefix" and images:
        body_text, body_img = tp + img + ["title"], []
    else:
        body_text, body_img = tp + ["title"], img
    if kind == "decoder":
        head, tail = (["bos"] if bos else []), (["eos"] if eos else [])
        if order == "image_text":
            segs = head + body_img + body_text + tail
        else:
            segs = head + body_text + body_img + tail
    else:
        head, tail = (["cls"] if bos else []), (["sep"] if eos else [])
        if order == "image_text":
            segs = body_img + head + body_text + tail
        else:
            segs = head + body_text + body_img + tail
    return PromptTemplate(segments=tuple(segs), name=name or f"{kind}:{order}", **fields)


TEMPLATES: dict[str, PromptTemplate] = {
    "encoder": make_template("image_text", kind="encoder", name="encoder"),
    "text_image": make_template("text_image", name="text_image"),
    "image_text": make_template("image_text", name="image_text"),
    "image_after_prefix": make_template("image_after_prefix", name="image_after_prefix"),
    "text_only": make_template("text_only", name="text_only"),
}


def get_template(name: str | PromptTemplate | Mapping, **overrides) -> PromptTemplate:
    """A named template (see :data:`TEMPLATES`), with :class:`PromptTemplate` field overrides.

    ``name`` may also be a template (returned with the overrides) or a mapping of
    :func:`make_template` arguments (``{"order": "image_text", "eos": False}``).
    """
    if isinstance(name, PromptTemplate):
        base = name
    elif isinstance(name, Mapping):
        base = make_template(**dict(name))
    else:
        if name not in TEMPLATES:
            raise ValueError(f"unknown template {name!r}; valid: {', '.join(TEMPLATES)}")
        base = TEMPLATES[name]
    if not overrides:
        return base
    valid = {f.name for f in dataclasses.fields(PromptTemplate)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown template field(s) {unknown}; valid: {', '.join(sorted(valid))}")
    if "segments" in overrides:
        overrides["segments"] = tuple(overrides["segments"])
    return dataclasses.replace(base, **overrides)


# ---------------------------------------------------------------------------------------
# tokenizer helpers


def _encode(tokenizer, text: str, add_special_tokens: bool = False) -> list[int]:
    out = tokenizer(text, add_special_tokens=add_special_tokens)
    ids = out["input_ids"] if not isinstance(out, list) else out
    return [int(i) for i in ids]


def tokenizer_uses_bos(tokenizer) -> bool:
    """True when the tokenizer prepends its BOS token by itself (Llama 3 does; Qwen2.5 and
    SmolLM2 don't)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = _encode(tokenizer, "a", add_special_tokens=True)
    without = _encode(tokenizer, "a", add_special_tokens=False)
    return with_special[:1] == [bos] and without[:1] != [bos]


def _encode_after_text(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` as it reads after a preceding word (with its leading space for
    BPE / SentencePiece tokenizers): the ids of ``"a " + text`` minus those of ``"a"``."""
    base = _encode(tokenizer, "a")
    full = _encode(tokenizer, "a " + text)
    if full[: len(base)] == base and len(full) > len(base):
        return full[len(base) :]
    return _encode(tokenizer, text)


def _fixed_ids_from_tokenizer(template: PromptTemplate, tokenizer) -> dict[int, list[int]]:
    """Token ids of every fixed segment of the template, keyed by segment index."""
    out: dict[int, list[int]] = {}
    seen_text = False
    for s, kind in enumerate(template.segments):
        if kind == "bos":
            bos = getattr(tokenizer, "bos_token_id", None)
            use = bos is not None and (template.bos_policy == "always" or tokenizer_uses_bos(tokenizer))
            out[s] = [int(bos)] if use else []
        elif kind == "cls":
            cls = getattr(tokenizer, "cls_token_id", None)
            if cls is None:
                raise ValueError(f"template {template.name!r} needs a [CLS] token; the tokenizer has none")
            out[s] = [int(cls)]
        elif kind == "sep":
            sep = getattr(tokenizer, "sep_token_id", None)
            if sep is None:
                raise ValueError(f"template {template.name!r} needs a [SEP] token; the tokenizer has none")
            out[s] = [int(sep)]
        elif kind == "eos":
            if template.eos_token is not None:
                eos = tokenizer.convert_tokens_to_ids(template.eos_token)
                unk = getattr(tokenizer, "unk_token_id", None)
                if eos is None or (unk is not None and eos == unk and template.eos_token != getattr(tokenizer, "unk_token", None)):
                    raise ValueError(f"eos_token {template.eos_token!r} is not a token of this tokenizer")
            else:
                eos = getattr(tokenizer, "eos_token_id", None)
                if eos is None:
                    eos = getattr(tokenizer, "sep_token_id", None)
                if eos is None:
                    raise ValueError("the tokenizer has neither an EOS nor a SEP token; set template eos_token")
            out[s] = [int(eos)]
        elif kind in ("text_prefix", "image_prefix"):
            text = template.text_prefix if kind == "text_prefix" else template.image_prefix
            out[s] = _encode_after_text(tokenizer, text) if seen_text else _encode(tokenizer, text)
        if kind in _TEXTUAL:
            seen_text = True
    return out


# ---------------------------------------------------------------------------------------
# assembly


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
    side: str


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
            missing = sorted({k for k in segs if k in _FIXED} - set(fixed_ids))
            if missing:
                raise ValueError(f"fixed_ids lacks segment(s) {missing}")
            by_index = {s: [int(i) for i in fixed_ids[k]] for s, k in enumerate(segs) if k in _FIXED}
        elif tokenizer is not None:
            by_index = _fixed_ids_from_tokenizer(self.template, tokenizer)
        else:
            raise ValueError("PromptAssembler needs a tokenizer or fixed_ids")
        if pad_id is None and tokenizer is not None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
            if pad_id is None:
                pad_id = getattr(tokenizer, "eos_token_id", None)
        self.pad_id = int(pad_id) if pad_id is not None else 0
        self.segment_ids: dict[int, list[int]] = by_index  # segment index -> ids
        # flattened fixed elements: ids, segment index, index within the segment
        ids, seg, within = [], [], []
        for s in sorted(by_index):
            for w, i in enumerate(by_index[s]):
                ids.append(i)
                seg.append(s)
                within.append(w)
        self._fixed_ids = torch.tensor(ids, dtype=torch.long)
        self._fixed_seg = torch.tensor(seg, dtype=torch.long)
        self._fixed_within = torch.tensor(within, dtype=torch.long)
        self._fixed_kind = torch.tensor([KIND_CODES[segs[s]] for s in seg], dtype=torch.long)
        self._title_seg = segs.index("title")
        self._image_seg = segs.index("images") if "images" in segs else None
        closing = [s for s, k in enumerate(segs) if k in ("eos", "sep") and by_index.get(s)]
        # element index (into the fixed elements) of the last id of the closing segment
        self._eos_element = None
        if closing:
            s = closing[-1]
            self._eos_element = int(((self._fixed_seg == s).nonzero()[-1]).item())

    @property
    def n_fixed(self) -> int:
        """Number of fixed (template) tokens when every segment is present."""
        return int(self._fixed_ids.numel())

    def fixed_tokens(self) -> dict[str, list[int]]:
        """Segment kind -> its token ids (for display)."""
        return {f"{s}:{self.template.segments[s]}": v for s, v in self.segment_ids.items()}

    def assemble(
        self,
        title_ids: torch.Tensor,
        title_lens: torch.Tensor,
        token_embedding: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        image_embeds: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        side: str = "right",
    ) -> AssembledBatch:
        """Assemble a batch.

        ``title_ids`` [B, L] (any int dtype, right-padded), ``title_lens`` [B];
        ``token_embedding``: ids [N] -> embeddings [N, H] (an ``nn.Embedding`` or any callable);
        ``image_embeds`` [B, M, H] already in the token-embedding space (or ``None``);
        ``image_mask`` [B, M] (1 = real image; ``None`` = all real). Real images need not be
        the first ones of a row: they are packed in their order. ``side``: ``right`` or ``left``.
        """
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        if title_ids.dim() != 2:
            raise ValueError(f"title_ids must be [B, L], got shape {tuple(title_ids.shape)}")
        dev = title_ids.device
        B, L = title_ids.shape
        segs = self.template.segments
        S = len(segs)
        title_ids = title_ids.long()
        title_lens = torch.as_tensor(title_lens, device=dev).long().clamp(0, L)

        # --- embeddings of fixed and title tokens
        fixed_ids = self._fixed_ids.to(dev)
        F = fixed_ids.numel()
        safe_title = title_ids.clamp_min(0)
        if F:
            emb = token_embedding(torch.cat([fixed_ids, safe_title.reshape(-1)]))
            fixed_emb, title_emb = emb[:F], emb[F:].reshape(B, L, -1)
        else:
            title_emb = token_embedding(safe_title.reshape(-1)).reshape(B, L, -1)
            fixed_emb = title_emb.new_zeros(0, title_emb.shape[-1])
        H = title_emb.shape[-1]
        dtype = title_emb.dtype

        # --- images (only when the template has an image segment)
        if self._image_seg is not None and image_embeds is not None:
            if image_embeds.dim() != 3 or image_embeds.shape[0] != B or image_embeds.shape[2] != H:
                raise ValueError(f"image_embeds must be [B={B}, M, H={H}], got {tuple(image_embeds.shape)}")
            M = image_embeds.shape[1]
            img = image_embeds.to(device=dev, dtype=dtype)
            if image_mask is None:
                mask = torch.ones(B, M, dtype=torch.bool, device=dev)
            else:
                mask = torch.as_tensor(image_mask, device=dev).bool()
                if mask.shape != (B, M):
                    raise ValueError(f"image_mask must be [B, M] = {(B, M)}, got {tuple(mask.shape)}")
        else:
            M = 0
            img = title_emb.new_zeros(B, 0, H)
            mask = torch.zeros(B, 0, dtype=torch.bool, device=dev)
        n_img = mask.sum(1)

        # --- per-row segment lengths and offsets
        seg_len = torch.zeros(B, S, dtype=torch.long, device=dev)
        for s, kind in enumerate(segs):  # a loop over template segments, not rows
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
        starts = torch.cumsum(seg_len, 1) - seg_len
        total = seg_len.sum(1)
        T = int(total.max().item()) if B else 0

        # --- source elements: fixed tokens, title tokens, images (P in all)
        ar_L = torch.arange(L, device=dev)
        src_seg = torch.cat(
            [
                self._fixed_seg.to(dev).expand(B, F),
                torch.full((B, L), self._title_seg, device=dev, dtype=torch.long),
                torch.full((B, M), self._image_seg if self._image_seg is not None else 0, device=dev, dtype=torch.long),
            ],
            1,
        )
        img_within = torch.cumsum(mask.long(), 1) - 1
        src_within = torch.cat([self._fixed_within.to(dev).expand(B, F), ar_L.expand(B, L), img_within], 1)
        P = F + L + M
        valid = torch.cat(
            [
                self._fixed_within.to(dev).expand(B, F) < seg_len.gather(1, src_seg[:, :F]),
                ar_L.expand(B, L) < title_lens[:, None],
                mask,
            ],
            1,
        )
        dest = starts.gather(1, src_seg) + src_within
        if side == "left":
            dest = dest + (T - total)[:, None]
        # invalid elements go to distinct dummy columns past T (no duplicate indices)
        dummy = T + torch.arange(P, device=dev).expand(B, P)
        dest = torch.where(valid, dest, dummy)
        src = torch.full((B, T + P), P, dtype=torch.long, device=dev)
        src.scatter_(1, dest, torch.arange(P, device=dev).expand(B, P).contiguous())
        src = src[:, :T]

        # --- gather embeddings, ids and kinds
        pool = torch.cat([fixed_emb.expand(B, F, H), title_emb, img, title_emb.new_zeros(B, 1, H)], 1)
        inputs_embeds = pool.gather(1, src[..., None].expand(B, T, H))
        pool_ids = torch.cat(
            [
                fixed_ids.expand(B, F),
                title_ids,
                torch.full((B, M), IMAGE_TOKEN_ID, dtype=torch.long, device=dev),
                torch.full((B, 1), self.pad_id, dtype=torch.long, device=dev),
            ],
            1,
        )
        pool_kinds = torch.cat(
            [
                self._fixed_kind.to(dev).expand(B, F),
                torch.full((B, L), KIND_CODES["title"], dtype=torch.long, device=dev),
                torch.full((B, M), KIND_CODES["images"], dtype=torch.long, device=dev),
                torch.full((B, 1), PAD_KIND, dtype=torch.long, device=dev),
            ],
            1,
        )
        token_ids = pool_ids.gather(1, src)
        kinds = pool_kinds.gather(1, src)
        attention_mask = (src < P).long()

        image_positions = torch.where(valid[:, F + L :], dest[:, F + L :], torch.full_like(dest[:, F + L :], -1))
        if M == 0 and image_embeds is not None and image_embeds.dim() == 3:  # images given, template has none
            image_positions = torch.full((B, image_embeds.shape[1]), -1, dtype=torch.long, device=dev)
        if self._eos_element is not None:
            e = self._eos_element
            eos_positions = torch.where(valid[:, e], dest[:, e], torch.full_like(dest[:, e], -1))
        else:
            eos_positions = torch.full((B,), -1, dtype=torch.long, device=dev)
        if side == "right":
            last_positions = total - 1
            seg_starts = starts
        else:
            last_positions = torch.full_like(total, T - 1)
            seg_starts = starts + (T - total)[:, None]
        return AssembledBatch(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            token_ids=token_ids,
            kinds=kinds,
            image_positions=image_positions,
            eos_positions=eos_positions,
            last_positions=last_positions,
            lengths=total,
            segment_starts=seg_starts,
            segment_lengths=seg_len,
            segments=segs,
            side=side,
        )

    __call__ = assemble
