"""Tests for vixml_lib.images.encoders: offline (fixed-weight) and transformers vision encoders."""
import csv
import logging
import pickle
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vixml_lib.images import ImageBin, encoders
from vixml_lib.images.encoders import (
    OFFLINE_ENCODERS,
    ImagePreprocessor,
    VisionModelUnavailable,
    create_vision_encoder,
    offline_state_dict,
)

TINY = "offline-random-siglip-tiny"


@pytest.fixture(scope="module")
def tiny_encoder():
    return create_vision_encoder(TINY)


def _ridge_probe(X, y, seed=0, lam=1e-2, train_frac=0.7):
    """Held-out accuracy of a one-vs-rest ridge classifier, and the majority-class rate."""
    classes, yi = np.unique(y, return_inverse=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    ntr = int(train_frac * len(y))
    tr, te = perm[:ntr], perm[ntr:]
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    Y = np.eye(len(classes))[yi]
    W = np.linalg.solve(Z[tr].T @ Z[tr] + lam * ntr * np.eye(Z.shape[1]), Z[tr].T @ Y[tr])
    acc = float((np.argmax(Z[te] @ W, 1) == yi[te]).mean())
    chance = float(np.bincount(yi[tr]).max() / ntr)
    return acc, chance


# ---------------------------------------------------------------------------------------------
# offline encoder: same transformers code path, fixed numpy weights
# ---------------------------------------------------------------------------------------------


def test_offline_encoder_is_a_siglip_vision_model(tiny_encoder):
    from transformers import SiglipVisionModel

    assert isinstance(tiny_encoder.model, SiglipVisionModel)
    spec = OFFLINE_ENCODERS[TINY]
    assert tiny_encoder.name == TINY
    assert tiny_encoder.dim == spec.hidden_size
    assert tiny_encoder.image_size == spec.image_size == 64
    assert not any(p.requires_grad for p in tiny_encoder.model.parameters())
    assert not tiny_encoder.model.training


def test_offline_weights_are_deterministic_and_pinned(tiny_encoder):
    again = create_vision_encoder(TINY)
    a, b = tiny_encoder.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the reference checksum pins the weights across machines / torch versions
    spec = OFFLINE_ENCODERS[TINY]
    assert tiny_encoder.fingerprint == f"{TINY}:{spec.sha256}"
    for name in encoders.list_offline_encoders():
        assert OFFLINE_ENCODERS[name].sha256 is not None


def test_offline_weights_come_from_numpy():
    spec = OFFLINE_ENCODERS[TINY]
    key = "encoder.layers.0.mlp.fc1.weight"
    shape = (spec.intermediate_size, spec.hidden_size)
    state = offline_state_dict(spec, {key: shape, "post_layernorm.weight": (spec.hidden_size,)})
    rng = np.random.default_rng([spec.seed, zlib.crc32(key.encode())])
    expect = rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.weight_gain / np.sqrt(spec.hidden_size))
    np.testing.assert_array_equal(state[key].numpy(), expect)
    assert torch.equal(state["post_layernorm.weight"], torch.ones(spec.hidden_size))


def test_encode_is_deterministic_and_shaped(tiny_encoder):
    imgs = [Image.new("RGB", (32, 32), c) for c in [(200, 30, 35), (35, 75, 205), (240, 205, 40)]]
    px = tiny_encoder.preprocess(imgs)
    assert px.shape == (3, 3, 64, 64) and px.dtype == torch.float32
    v1, v2 = tiny_encoder.encode(px), tiny_encoder.encode(px.clone())
    assert v1.shape == (3, tiny_encoder.dim) and v1.dtype == torch.float32 and v1.device.type == "cpu"
    assert torch.equal(v1, v2)
    assert torch.isfinite(v1).all()
    assert not torch.allclose(v1[0], v1[1])  # different colours, different vectors
    assert torch.equal(tiny_encoder(imgs), v1)
    assert tiny_encoder.encode(torch.zeros(0, 3, 64, 64)).shape == (0, tiny_encoder.dim)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        tiny_encoder.encode(torch.zeros(3, 64, 64))


def test_preprocess_siglip_normalisation_and_pickling(tiny_encoder):
    pre = tiny_encoder.preprocessor
    assert isinstance(pre, ImagePreprocessor) and pre.mean == (0.5,) * 3 and pre.std == (0.5,) * 3
    white, black = Image.new("RGB", (10, 20), (255, 255, 255)), Image.new("L", (64, 64), 0)
    px = pre([white, black])
    assert px.shape == (2, 3, 64, 64)
    assert torch.allclose(px[0], torch.ones_like(px[0])) and torch.allclose(px[1], -torch.ones_like(px[1]))
    clone = pickle.loads(pickle.dumps(pre))  # DataLoader workers get a copy
    assert torch.equal(clone([white, black]), px)
    assert torch.equal(tiny_encoder.preprocess(white), px[:1])
    assert pre([]).shape == (0, 3, 64, 64)


def test_offline_encoder_keeps_colour_and_pattern_separable(tiny_encoder, tmp_path):
    from vixml_lib.data.demo import make_demo_dataset

    d = make_demo_dataset(tmp_path / "demo", "tiny")
    b = ImageBin(d / "trn_imgs_384_3.bin")
    m = np.load(d / "trn_imgs_384_3_map.npy", allow_pickle=False)
    with open(d / "trn_attributes.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    item_of = np.full(len(b), -1)
    for i, r in enumerate(m):
        item_of[r[r >= 0]] = i
    feats = [tiny_encoder([b.image(j) for j in range(s, min(s + 128, len(b)))]).numpy() for s in range(0, len(b), 128)]
    X = np.concatenate(feats).astype(np.float64)
    colour = np.array([rows[i]["colour"] for i in item_of])
    pattern = np.array([rows[i]["pattern"] for i in item_of])
    acc_c, chance_c = _ridge_probe(X, colour)
    acc_p, chance_p = _ridge_probe(X, pattern)
    assert acc_c > 0.7 and acc_c > chance_c + 0.4, (acc_c, chance_c)  # observed ~0.93 vs 0.22
    assert acc_p > chance_p + 0.1, (acc_p, chance_p)  # observed ~0.86 vs 0.59


# ---------------------------------------------------------------------------------------------
# names, errors, options
# ---------------------------------------------------------------------------------------------


def test_hub_model_not_cached_gives_a_clear_error():
    with pytest.raises(VisionModelUnavailable) as ei:
        create_vision_encoder("google/siglip2-so400m-patch14-384", local_files_only=True)
    msg = str(ei.value)
    assert "google/siglip2-so400m-patch14-384" in msg
    assert "not in the local Hugging Face cache" in msg and "offline" in msg
    assert "offline-random-siglip" in msg  # points at what works without the hub
    assert isinstance(ei.value, OSError)


def test_hub_offline_env_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VisionModelUnavailable, match="no-such-org/no-such-vision-model.*offline"):
        create_vision_encoder("no-such-org/no-such-vision-model")


def test_local_folder_uses_the_transformers_path(tmp_path):
    """A dual-encoder checkpoint saved locally: only its vision tower is loaded, pooled output used."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    cfg = SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64),
        vision_config=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    full = SiglipModel(cfg).eval()
    full.save_pretrained(tmp_path / "m")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "m")
    enc = create_vision_encoder(str(tmp_path / "m"))
    assert enc.dim == 48 and enc.image_size == 32
    assert not hasattr(enc.model, "text_model")
    img = Image.new("RGB", (50, 40), (200, 10, 10))
    px = enc.preprocess([img, img])
    assert px.shape == (2, 3, 32, 32)
    with torch.no_grad():
        ref = full.vision_model(pixel_values=px).pooler_output
    torch.testing.assert_close(enc.encode(px), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(pickle.loads(pickle.dumps(enc.preprocessor))([img]), px[:1])


def test_unknown_offline_name_and_bad_dtype():
    with pytest.raises(ValueError, match="offline-random-siglip"):
        create_vision_encoder("offline-nope")
    with pytest.raises(ValueError, match="dtype"):
        create_vision_encoder(TINY, dtype="int8")


def test_half_dtype_on_cpu_falls_back_to_float32(caplog):
    with caplog.at_level(logging.WARNING, logger="vixml_lib.images.encoders"):
        enc = create_vision_encoder(TINY, dtype="bf16")
    assert enc.dtype is None
    assert "only used on CUDA" in caplog.text
