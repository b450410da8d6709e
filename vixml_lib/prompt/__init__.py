"""The prompt as data, with one assembler for every order and model kind.

- :mod:`~vixml_lib.prompt.templates`: segment kinds, :class:`PromptTemplate`, the named
  templates and :func:`make_template` (ablation variants), tokenisation of the fixed strings;
- :mod:`~vixml_lib.prompt.assembler`: :class:`PromptAssembler`, which packs a batch's title
  tokens and projected image vectors into ``inputs_embeds`` without a loop over rows.
"""
from .assembler import AssembledBatch, PromptAssembler
from .templates import (
    IMAGE_TOKEN_ID,
    KIND_CODES,
    PAD_KIND,
    SEGMENT_KINDS,
    TEMPLATES,
    PromptTemplate,
    get_template,
    make_template,
    tokenizer_uses_bos,
    without_images,
)

__all__ = [
    "SEGMENT_KINDS", "KIND_CODES", "PAD_KIND", "IMAGE_TOKEN_ID", "PromptTemplate", "TEMPLATES", "get_template",
    "make_template", "without_images", "AssembledBatch", "PromptAssembler", "tokenizer_uses_bos",
]
