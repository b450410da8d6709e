"""Prompt templates: the prompt as data, for every order and model kind.

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
- ``image_text``: ``[BOS] + image_prefix + images + text_prefix + title + EOS``, worded as the
  authors do when the image comes first: "This product image" <img> "and its text" <title>;
- ``image_after_prefix``: ``[BOS] + text_prefix + images + title + EOS``;
- ``text_only``: ``[BOS] + text_prefix + title + EOS``.

:func:`make_template` builds the ablation variants (prefixes, EOS, BOS on/off, order).

The fixed strings of a template are tokenised by :func:`fixed_ids_from_tokenizer`;
:class:`~vixml_lib.prompt.assembler.PromptAssembler` assembles batches.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "SEGMENT_KINDS",
    "KIND_CODES",
    "PAD_KIND",
    "IMAGE_TOKEN_ID",
    "PromptTemplate",
    "TEMPLATES",
    "get_template",
    "make_template",
    "FIXED_KINDS",
    "fixed_ids_from_tokenizer",
    "tokenizer_uses_bos",
]

SEGMENT_KINDS = ("bos", "cls", "text_prefix", "title", "image_prefix", "images", "eos", "sep")
#: small integer code of each segment kind, used in ``AssembledBatch.kinds``
KIND_CODES = {k: i for i, k in enumerate(SEGMENT_KINDS)}
#: kind code of padding positions
PAD_KIND = -1
#: token id reported at image slots in ``AssembledBatch.token_ids``
IMAGE_TOKEN_ID = -1

#: segment kinds whose tokens are fixed by the template (not the title, not the images)
FIXED_KINDS = ("bos", "cls", "text_prefix", "image_prefix", "eos", "sep")
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
#: the authors' prefixes for the image-first order (their main.py defaults)
IMAGE_FIRST_IMAGE_PREFIX = "This product image"
IMAGE_FIRST_TEXT_PREFIX = "and its text"


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
    if order == "image_text" and kind == "decoder" and images:  # the authors' wording, image first (main.py)
        fields.setdefault("text_prefix", IMAGE_FIRST_TEXT_PREFIX)
        fields.setdefault("image_prefix", IMAGE_FIRST_IMAGE_PREFIX)
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


def without_images(template: PromptTemplate) -> PromptTemplate:
    """The same template without its image segments (``images``, ``image_prefix``): what the
    backbone reads under late fusion."""
    segments = tuple(s for s in template.segments if s not in ("images", "image_prefix"))
    return dataclasses.replace(template, segments=segments, name=f"{template.name}-text")


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


def fixed_ids_from_tokenizer(template: PromptTemplate, tokenizer) -> dict[int, list[int]]:
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
                is_unk = unk is not None and eos == unk and template.eos_token != getattr(tokenizer, "unk_token", None)
                if eos is None or is_unk:
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
