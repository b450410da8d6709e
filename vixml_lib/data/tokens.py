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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataFormatError, check_input_file
from ..io_utils import atomic_path, read_json, write_json
from ..pretrained import load_tokenizer, slug
from . import formats
from .fingerprints import sha256_of

log = logging.getLogger(__name__)


@dataclass
class TokenizedSplit:
    ids: np.ndarray  # (n, max_len) int32, memory-mapped
    lengths: np.ndarray  # (n,) int32
    pad_id: int

    def __len__(self) -> int:
        return len(self.lengths)


fingerprint = sha256_of  # the content fingerprint of a source file (hex sha256)


def _check_max_len(max_len) -> int:
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ConfigError("token cache", "must be an integer >= 1", key="max_len", value=max_len)
    return int(max_len)


def _open_array(path: Path, mmap: bool, split: str = "", backbone: str = "") -> np.ndarray:
    """``np.load`` of one cache array (no pickle); a missing, truncated or foreign file is a
    DataFormatError naming it and saying how to rebuild the cache."""
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(path, f"token cache file missing; rebuild it with "
                                    f"`vixml prepare --tokenizer {backbone}`") from None
    except Exception as e:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise DataFormatError(path, f"unreadable token cache array ({type(e).__name__}: {e}); delete the folder "
                                    f"and rebuild it with `vixml prepare --tokenizer {backbone}`") from None
    if not isinstance(arr, np.ndarray) or arr.dtype != np.int32:
        raise DataFormatError(path, f"not a token cache array (int32 expected, found {getattr(arr, 'dtype', arr)})")
    return arr


def _cache_ok(out: Path, split: str) -> bool:
    """True when both arrays of a split open and agree in length (a damaged cache is rebuilt)."""
    try:
        ids = _open_array(out / f"{split}.ids.npy", mmap=True)
        lengths = _open_array(out / f"{split}.len.npy", mmap=True)
    except DataFormatError:
        return False
    return ids.ndim == 2 and lengths.ndim == 1 and ids.shape[0] == lengths.shape[0]


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
    max_len = _check_max_len(max_len)
    out = cache_dir(data_dir, backbone, max_len)
    meta_path = out / "meta.json"
    sources = {s: fingerprint(check_input_file(data_dir / f"{s}.raw.txt", "text file")) for s in splits}
    try:
        meta = _read_meta(meta_path) if meta_path.exists() else {}
    except DataFormatError:  # a damaged meta: rebuild
        meta = {}
    same_cache = meta.get("backbone") == backbone and meta.get("max_len") == max_len
    done = dict(meta.get("sources", {})) if same_cache else {}  # splits whose arrays match their source
    todo = [s for s in splits if done.get(s) != sources[s] or not _cache_ok(out, s)]
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
    meta = _read_meta(meta_path)
    ids = _open_array(out / f"{split}.ids.npy", mmap=True, split=split, backbone=backbone)
    lengths = _open_array(out / f"{split}.len.npy", mmap=False, split=split, backbone=backbone)
    if ids.ndim != 2 or lengths.ndim != 1 or ids.shape[0] != lengths.shape[0]:
        raise DataFormatError(out, f"{split}: ids {ids.shape} and lengths {lengths.shape} do not match; "
                                   f"rebuild with `vixml prepare --tokenizer {backbone}`")
    if not isinstance(meta.get("pad_id"), int):
        raise DataFormatError(meta_path, "no integer 'pad_id'; rebuild the token cache")
    return TokenizedSplit(ids, lengths, int(meta["pad_id"]))


def _read_meta(path: Path) -> dict:
    try:
        meta = read_json(path)
    except (ValueError, OSError) as e:
        raise DataFormatError(path, f"unreadable token cache meta ({e}); delete the folder to rebuild it") from None
    if not isinstance(meta, dict):
        raise DataFormatError(path, "token cache meta is not a JSON object; delete the folder to rebuild it")
    return meta
