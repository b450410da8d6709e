"""The disk cache of de-quantised GGUF backbones gives the very model and tokenizer the GGUF file gives."""
import logging
import shutil

import pytest
import torch

from vixml_lib import gguf_cache
from vixml_lib.pretrained import from_pretrained, load_tokenizer, resolve

TEXTS = ["This product text Red cotton T-shirt and its image", "Ünïcode ☃ 123, 4-pack"]


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from transformers import AutoModel, AutoTokenizer

    src = resolve("offline-smollm2")
    return src, from_pretrained(AutoModel.from_pretrained, src), from_pretrained(AutoTokenizer.from_pretrained, src)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, smollm2):
    root = tmp_path_factory.mktemp("vixml-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIXML_CACHE_DIR", str(root))
        folder = gguf_cache.dequantised_source(smollm2[0]).path
    return root, folder


def test_cached_model_and_tokenizer_equal_the_gguf_ones(smollm2, cache_dir, monkeypatch):
    from transformers import AutoModel

    src, model0, tok0 = smollm2
    root, folder = cache_dir
    monkeypatch.setenv("VIXML_CACHE_DIR", str(root))
    files = sorted(p.name for p in (root / "gguf").iterdir())
    assert len(files) == 1 and str(root / "gguf" / files[0]) == folder  # no temporary folder left
    assert not [p for p in (root / "gguf" / files[0]).iterdir() if p.suffix in (".bin", ".pt", ".pkl")]

    def no_dequantising(*a, **k):
        raise AssertionError("the GGUF file was read again")

    monkeypatch.setattr(gguf_cache, "_write", no_dequantising)
    model1 = gguf_cache.load(AutoModel.from_pretrained, src)
    tok1 = load_tokenizer("offline-smollm2")
    s0, s1 = model0.state_dict(), model1.state_dict()
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    for text in TEXTS:
        assert tok1(text)["input_ids"] == tok0(text)["input_ids"]
    assert (tok1.bos_token, tok1.eos_token, len(tok1)) == (tok0.bos_token, tok0.eos_token, len(tok0))
    ids = torch.tensor([tok0(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model0(ids).last_hidden_state, model1(ids).last_hidden_state)


def test_a_broken_cache_folder_is_removed_and_the_gguf_file_read(smollm2, cache_dir, tmp_path, monkeypatch, caplog):
    from transformers import AutoModel

    src, model0, _ = smollm2
    root, folder = cache_dir
    other = tmp_path / "cache"
    shutil.copytree(root, other)
    monkeypatch.setenv("VIXML_CACHE_DIR", str(other))
    broken = gguf_cache.cached_folder(src)
    with open(broken / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    with caplog.at_level(logging.WARNING, logger="vixml_lib.gguf_cache"):
        model = gguf_cache.load(AutoModel.from_pretrained, src)
    assert "removing it" in caplog.text and not broken.exists()
    s0, s1 = model0.state_dict(), model.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s0)


def test_an_unwritable_cache_falls_back_to_the_gguf_file(smollm2, tmp_path, monkeypatch, caplog):
    src = smollm2[0]
    monkeypatch.setenv("VIXML_CACHE_DIR", str(tmp_path))

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_cache, "_write", disk_full)
    with caplog.at_level(logging.WARNING, logger="vixml_lib.gguf_cache"):
        assert gguf_cache.dequantised_source(src) is src
    assert "No space left" in caplog.text


def test_the_cache_can_be_switched_off_and_non_gguf_sources_pass_through(smollm2, monkeypatch):
    src = smollm2[0]
    monkeypatch.setenv("VIXML_GGUF_CACHE", "0")
    assert gguf_cache.dequantised_source(src) is src
    monkeypatch.setenv("VIXML_GGUF_CACHE", "1")
    minilm = resolve("offline-minilm")
    assert gguf_cache.dequantised_source(minilm) is minilm


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VIXML_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "xdg" / "vixml"
    monkeypatch.setenv("VIXML_CACHE_DIR", str(tmp_path / "mine"))
    assert gguf_cache.cache_root() == tmp_path / "mine"
