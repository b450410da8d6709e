"""Test fixtures that need no files: tiny RANDOM-weight backbones and a tokenizer-free
stand-in, for shape and speed tests only (they have learnt nothing).

``tiny_model_config(kind)`` gives a :class:`~vixml_lib.models.ModelConfig` with a tiny
BertConfig / LlamaConfig backbone (hidden 32, 2 layers, vocab 1000) and the hashing
:class:`RandomWordTokenizer`; :data:`RANDOM_BACKBONES` maps their names
(``random-tiny-bert``, ``random-tiny-llama``) to (transformers config factory, tokenizer factory).
"""
from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import ModelConfig

__all__ = ["RANDOM_BACKBONES", "RandomWordTokenizer", "tiny_model_config"]


class RandomWordTokenizer:
    """A tokenizer-free stand-in for the random tiny backbones: a word's id is a hash of it.

    ``bert`` flavour: ``[CLS]``=3 / ``[SEP]``=4, no BOS/EOS; ``llama`` flavour: BOS=1 (not
    prepended, like SmolLM2 / Qwen2.5) and EOS=2. Padding id 0. Ids lie in ``[0, vocab_size)``.
    """

    pad_token_id = 0
    unk_token_id = 5
    unk_token = "<unk>"
    n_special = 8

    def __init__(self, vocab_size: int = 1000, flavour: str = "llama"):
        self.vocab_size = int(vocab_size)
        self.flavour = flavour
        if flavour == "bert":
            self.bos_token_id = self.eos_token_id = None
            self.cls_token_id, self.sep_token_id = 3, 4
        else:
            self.bos_token_id, self.eos_token_id = 1, 2
            self.cls_token_id = self.sep_token_id = None
        self._specials = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "[CLS]": 3, "[SEP]": 4, "<unk>": 5}

    def convert_tokens_to_ids(self, token: str) -> int:
        if token in self._specials:
            return self._specials[token]
        return self.n_special + zlib.crc32(token.encode("utf-8")) % (self.vocab_size - self.n_special)

    def _one(self, text: str, add_special_tokens: bool, truncation: bool, max_length: int | None) -> list[int]:
        ids = [self.convert_tokens_to_ids(w) for w in text.lower().split()]
        if truncation and max_length is not None:
            ids = ids[:max_length]
        if add_special_tokens and self.flavour == "bert":
            ids = [self.cls_token_id] + ids + [self.sep_token_id]
        return ids

    def __call__(self, text, add_special_tokens: bool = True, truncation: bool = False,
                 max_length: int | None = None, **_):
        if isinstance(text, str):
            return {"input_ids": self._one(text, add_special_tokens, truncation, max_length)}
        return {"input_ids": [self._one(t, add_special_tokens, truncation, max_length) for t in text]}


def _tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )


def _tiny_llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )


# name -> (transformers config factory, tokenizer factory)
RANDOM_BACKBONES = {
    "random-tiny-bert": (_tiny_bert_config, lambda: RandomWordTokenizer(1000, "bert")),
    "random-tiny-llama": (_tiny_llama_config, lambda: RandomWordTokenizer(1000, "llama")),
}


def tiny_model_config(kind: str = "encoder", /, **overrides) -> ModelConfig:
    """A config with a tiny RANDOM-weight backbone (hidden 32, 2 layers, vocab 1000) and a
    hashing word tokenizer: for shape/speed tests only, it has learnt nothing."""
    if kind not in ("encoder", "decoder"):
        raise ValueError(f"kind must be 'encoder' or 'decoder', got {kind!r}")
    base = dict(
        backbone="random-tiny-bert" if kind == "encoder" else "random-tiny-llama",
        kind=kind,
        vision_dim=16,
        lora_r=4,
        lora_alpha=4,
    )
    base.update(overrides)
    from .models import ModelConfig

    return ModelConfig.from_dict(base)
