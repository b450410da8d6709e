"""Tokenised texts as memory-mapped arrays, one cache per (tokenizer, max length).

Layout: ``<data_dir>/tokens/<backbone-slug>-L<max_len>/``
  - ``<split>.ids.npy``: int32 (n, max_len), right-padded with ``pad_id``;
  - ``<split>.len.npy``: int32 (n,), number of real tokens per row;
  - ``meta.json``: tokenizer, max length, pad id and a fingerprint of each source file.

Titles are tokenised WITHOUT special tokens: the prompt template (BOS/CLS, prefixes,
image slots, EOS) is assembled later, from data, for every model kind alike. A cache is
reused when its meta matches (same tokenizer, length and source files); otherwise it
is rebuilt. Arrays are written to temporary files and renamed, so an interrupted run
leaves no half-written cache.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..io_utils import atomic_path, read_json, write_json
from ..pretrained import load_tokenizer, slug
from . import formats

log = logging.getLogger(__name__)


@dataclass
class TokenizedSplit:
    ids: np.ndarray  # (n, max_len) int32, memory-mapped
    lengths: np.ndarray  # (n,) int32
    pad_id: int

    def __len__(self) -> int:
        return len(self.lengths)


def fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(data_dir: str | Path, backbone: str, max_len: int) -> Path:
    return Path(data_dir) / "tokens" / f"{slug(backbone)}-L{max_len}"


def tokenize_texts(tokenizer, texts: list[str], max_len: int, batch_size: int = 8192, desc: str = "tokenise"):
    """Tokenise ``texts`` (no special tokens) into right-padded int32 ids and lengths."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(texts), max_len), pad_id, dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False):
        enc = tokenizer(
            texts[start : start + batch_size], add_special_tokens=False, truncation=True, max_length=max_len
        )["input_ids"]
        for j, row in enumerate(enc):
            ids[start + j, : len(row)] = row
            lengths[start + j] = len(row)
    return ids, lengths, int(pad_id)


def tokenize_dataset(
    data_dir: str | Path,
    backbone: str,
    max_len: int = 32,
    splits: tuple[str, ...] = ("trn", "tst", "lbl"),
    encoding: str = "utf-8",
    tokenizer=None,
) -> Path:
    """Tokenise ``<split>.raw.txt`` files into the cache folder; reuse a matching cache."""
    data_dir = Path(data_dir)
    out = cache_dir(data_dir, backbone, max_len)
    meta_path = out / "meta.json"
    sources = {s: fingerprint(data_dir / f"{s}.raw.txt") for s in splits}
    meta = read_json(meta_path) if meta_path.exists() else {}
    same_cache = meta.get("backbone") == backbone and meta.get("max_len") == max_len
    done = dict(meta.get("sources", {})) if same_cache else {}  # splits whose arrays match their source
    todo = [
        s
        for s in splits
        if done.get(s) != sources[s] or not (out / f"{s}.ids.npy").exists() or not (out / f"{s}.len.npy").exists()
    ]
    if not todo:
        log.info("token cache %s is up to date", out)
        return out
    tokenizer = tokenizer or load_tokenizer(backbone)
    pad_id = None
    for s in todo:
        texts = formats.read_texts(data_dir / f"{s}.raw.txt", encoding=encoding)
        ids, lengths, pad_id = tokenize_texts(tokenizer, texts, max_len, desc=f"tokenise {s}")
        for name, arr in (("ids", ids), ("len", lengths)):
            with atomic_path(out / f"{s}.{name}.npy") as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
        done[s] = sources[s]
        log.info("tokenised %s: %d texts, %.1f%% truncated at %d", s, len(texts), 100 * np.mean(lengths == max_len),
                 max_len)
    write_json(
        meta_path,
        {
            "backbone": backbone,
            "tokenizer_class": type(tokenizer).__name__,
            "max_len": max_len,
            "pad_id": pad_id,
            "add_special_tokens": False,
            "padding_side": "right",
            "sources": done,
        },
    )
    return out


def load_tokens(data_dir: str | Path, backbone: str, max_len: int, split: str) -> TokenizedSplit:
    """Open a split of a token cache memory-mapped (no copy into RAM)."""
    out = cache_dir(data_dir, backbone, max_len)
    meta_path = out / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{out}: no token cache; run tokenize_dataset(...) "
                                f"or `vixml prepare --tokenizer {backbone}`")
    meta = read_json(meta_path)
    ids = np.load(out / f"{split}.ids.npy", mmap_mode="r", allow_pickle=False)
    lengths = np.load(out / f"{split}.len.npy", allow_pickle=False)
    return TokenizedSplit(ids, lengths, int(meta["pad_id"]))
