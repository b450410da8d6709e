import numpy as np
import pytest

from vixml_lib.data import formats
from vixml_lib.data.tokens import cache_dir, load_tokens, tokenize_dataset
from vixml_lib.pretrained import load_tokenizer, resolve


class CountingTokenizer:
    """A stand-in tokenizer: one id per word (its length), counting calls."""

    pad_token_id = 0

    def __init__(self):
        self.calls = 0

    def __call__(self, texts, add_special_tokens, truncation, max_length):
        assert add_special_tokens is False  # templates add specials later
        self.calls += 1
        return {"input_ids": [[len(w) for w in t.split()][:max_length] for t in texts]}


@pytest.fixture
def raw_dir(tmp_path):
    splits = {"trn": ["a bb ccc", "dddd"], "tst": ["one two three four five six"], "lbl": ["x", "yy zz"]}
    for s, texts in splits.items():
        formats.write_texts(tmp_path / f"{s}.raw.txt", texts)
    return tmp_path


def test_ids_are_right_padded_and_truncated(raw_dir):
    tok = CountingTokenizer()
    tokenize_dataset(raw_dir, "fake", max_len=4, tokenizer=tok)
    trn = load_tokens(raw_dir, "fake", 4, "trn")
    assert trn.ids.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]]
    assert trn.lengths.tolist() == [3, 1]
    tst = load_tokens(raw_dir, "fake", 4, "tst")
    assert tst.ids.tolist() == [[3, 3, 5, 4]] and tst.lengths.tolist() == [4]
    assert isinstance(trn.ids, np.memmap)


def test_cache_is_reused_and_rebuilt_when_text_changes(raw_dir):
    tok = CountingTokenizer()
    tokenize_dataset(raw_dir, "fake", max_len=4, tokenizer=tok)
    first = tok.calls
    tokenize_dataset(raw_dir, "fake", max_len=4, tokenizer=tok)
    assert tok.calls == first  # nothing re-tokenised
    formats.write_texts(raw_dir / "lbl.raw.txt", ["x", "changed text"])
    tokenize_dataset(raw_dir, "fake", max_len=4, tokenizer=tok)
    assert tok.calls == first + 1  # only lbl again
    assert load_tokens(raw_dir, "fake", 4, "lbl").ids.tolist()[1] == [7, 4, 0, 0]
    # another max length is another cache
    tokenize_dataset(raw_dir, "fake", max_len=2, tokenizer=tok)
    assert cache_dir(raw_dir, "fake", 2) != cache_dir(raw_dir, "fake", 4)
    assert load_tokens(raw_dir, "fake", 2, "tst").ids.tolist() == [[3, 3]]


def test_a_damaged_cache_is_rebuilt_and_named_when_read(raw_dir):
    from vixml_lib.errors import ConfigError, DataFormatError

    tok = CountingTokenizer()
    tokenize_dataset(raw_dir, "fake", max_len=4, tokenizer=tok)
    ids = cache_dir(raw_dir, "fake", 4) / "trn.ids.npy"
    ids.write_bytes(ids.read_bytes()[:-5])  # truncated (a copy cut short, a bad disk)
    with pytest.raises(DataFormatError) as e:
        load_tokens(raw_dir, "fake", 4, "trn")
    assert str(e.value).startswith(str(ids)) and "vixml prepare --tokenizer fake" in str(e.value)
    calls = tok.calls
    tokenize_dataset(raw_dir, "fake", max_len=4, tokenizer=tok)
    assert tok.calls == calls + 1  # trn only, rebuilt
    assert load_tokens(raw_dir, "fake", 4, "trn").ids.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]]
    (cache_dir(raw_dir, "fake", 4) / "meta.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="meta.json: unreadable token cache meta"):
        load_tokens(raw_dir, "fake", 4, "trn")
    with pytest.raises(ConfigError, match="max_len = 0"):
        tokenize_dataset(raw_dir, "fake", max_len=0, tokenizer=tok)


def test_missing_cache_error_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="vixml prepare --tokenizer offline-minilm"):
        load_tokens(tmp_path, "offline-minilm", 32, "trn")


def test_offline_minilm_tokenizer_matches_direct_tokenisation(raw_dir):
    tok = load_tokenizer("offline-minilm")
    tokenize_dataset(raw_dir, "offline-minilm", max_len=8)
    lbl = load_tokens(raw_dir, "offline-minilm", 8, "lbl")
    expect = tok("yy zz", add_special_tokens=False)["input_ids"]
    assert lbl.ids[1, : len(expect)].tolist() == expect
    assert lbl.lengths[1] == len(expect)
    assert tok.cls_token_id not in lbl.ids[1].tolist()


def test_offline_sources_resolve_to_package_files():
    assert resolve("offline-smollm2").gguf_file.endswith(".gguf")
    assert resolve("Qwen/Qwen2.5-3B-Instruct").path == "Qwen/Qwen2.5-3B-Instruct"
