"""Tests for vixml_lib.images.cache (format, reader) and vixml_lib.images.cache_build (build, reuse, resume)."""
import base64
import hashlib
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vixml_lib.errors import DataFormatError
from vixml_lib.images.cache import FeatureCache, feature_cache_dir
from vixml_lib.images.cache_build import build_feature_cache
from vixml_lib.images.store import ImageBin, encode_image_line, write_image_bin

TINY = "offline-random-siglip-tiny"
FINAL_FILES = {"header.json", "vectors.f16", "map.npy", "valid.npy", "failures.jsonl"}
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# an image source in the authors' layout (the contract of vixml_lib.images.sources, by duck typing)
# ---------------------------------------------------------------------------------------------


class BinSource:
    """``.bin`` file + int64 map. ``delay``: seconds slept per image; ``interrupt_at``: Ctrl-C there."""

    def __init__(self, bin_path, image_map, delay=0.0, interrupt_at=None):
        self.bin = ImageBin(bin_path)
        self.image_map = np.asarray(image_map, dtype=np.int64)
        self.delay = delay
        self.interrupt_at = interrupt_at

    def __len__(self):
        return len(self.bin)

    def load(self, j):
        if self.delay:
            time.sleep(self.delay)
        if self.interrupt_at is not None and j == self.interrupt_at:
            raise KeyboardInterrupt
        return self.bin.image(j)

    def fingerprint(self):
        return hashlib.sha256(self.bin.path.read_bytes()).hexdigest()


class CountingEncoder:
    """Wraps a VisionEncoder, counting encode calls and images encoded."""

    def __init__(self, enc):
        self.enc = enc
        self.name, self.dim, self.fingerprint, self.preprocessor = enc.name, enc.dim, enc.fingerprint, enc.preprocessor
        self.calls = 0
        self.images = 0

    def encode(self, px):
        self.calls += 1
        self.images += len(px)
        return self.enc.encode(px)


def make_bin(path, n, seed=0, corrupt=(), size=16):
    rng = np.random.default_rng(seed)
    lines = []
    for j in range(n):
        if j in corrupt:
            lines.append(base64.b64encode(b"\xff\xd8 this is not a jpeg") if j % 2 else b"@@not-base64@@")
            continue
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        arr[: size // 2] = rng.integers(0, 256, size=3, dtype=np.uint8)  # a flat colour block
        lines.append(encode_image_line(Image.fromarray(arr)))
    write_image_bin(path, lines)
    return Path(path)


def make_map(n_items, n_images, seed=0, max_images=3):
    """Random left-packed map; item 0 has no image, items 1 and 2 share image 0."""
    rng = np.random.default_rng(seed)
    m = np.full((n_items, max_images), -1, dtype=np.int64)
    for i in range(n_items):
        k = int(rng.integers(0, max_images + 1))
        m[i, :k] = rng.choice(n_images, size=k, replace=False)
    m[0] = -1
    m[1, 0] = m[2, 0] = 0
    return m


@pytest.fixture(scope="module")
def encoder():
    from vixml_lib.images.encoders import create_vision_encoder

    return create_vision_encoder(TINY)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    n_images, n_items = 96, 60
    make_bin(d / "imgs.bin", n_images)
    m = make_map(n_items, n_images)
    np.save(d / "map.npy", m)
    return d, m


@pytest.fixture(scope="module")
def reference(data, encoder, tmp_path_factory):
    """An uninterrupted build (batch 8, chunk 16) to compare resumed builds with."""
    d, m = data
    out = tmp_path_factory.mktemp("ref") / "cache"
    build_feature_cache(BinSource(d / "imgs.bin", m), encoder, out, batch_size=8, chunk_size=16, num_workers=0,
                        progress=False)
    return out


def files_of(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


# ---------------------------------------------------------------------------------------------
# round trip and format
# ---------------------------------------------------------------------------------------------


def test_round_trip_matches_encoder(data, encoder, tmp_path):
    d, m = data
    src = BinSource(d / "imgs.bin", m)
    cache = build_feature_cache(src, encoder, tmp_path / "c", batch_size=16, chunk_size=32, num_workers=2,
                                progress=False)
    assert (cache.dim, cache.n_items, cache.max_images, cache.count) == (encoder.dim, 60, 3, 96)
    ref = encoder([src.load(j) for j in range(len(src))]).numpy()
    got = cache.vectors_for_images(np.arange(len(src)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref.astype(np.float16).astype(np.float32), rtol=2e-3, atol=2e-3)
    vec, mask = cache.read_batch(np.arange(60))
    assert vec.shape == (60, 3, encoder.dim) and mask.shape == (60, 3) and mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, m >= 0)
    assert not mask[0].any() and not vec[0].any()  # the item without images is fully masked, zeros
    assert not vec[~mask].any()
    np.testing.assert_array_equal(vec[1, 0], vec[2, 0])  # a shared image is one row, encoded once
    np.testing.assert_allclose(vec[mask], got[m[mask]], rtol=0, atol=0)
    assert np.array_equal(cache.mask, mask)


def test_format_has_no_pickle_and_is_documented_json(data, encoder, reference):
    d, m = data
    assert set(os.listdir(reference)) == FINAL_FILES
    header = json.loads((reference / "header.json").read_text())
    assert header["format"] == "vixml-feature-cache" and header["format_version"] == 1
    assert header["encoder"] == TINY and header["encoder_fingerprint"] == encoder.fingerprint
    assert (header["dim"], header["count"], header["n_items"], header["max_images"]) == (encoder.dim, 96, 60, 3)
    assert header["dtype"] == "float16" and header["finished"] is True and header["failures"] == 0
    assert header["source_fingerprint"] == BinSource(d / "imgs.bin", m).fingerprint()
    for name in ("map.npy", "valid.npy"):
        np.load(reference / name, allow_pickle=False)
    np.testing.assert_array_equal(np.load(reference / "map.npy", allow_pickle=False), m)
    assert np.load(reference / "valid.npy", allow_pickle=False).all()
    assert (reference / "vectors.f16").stat().st_size == 96 * encoder.dim * 2
    raw = np.fromfile(reference / "vectors.f16", dtype="<f2").reshape(96, encoder.dim)
    np.testing.assert_array_equal(raw.astype(np.float32),
                                  FeatureCache.open(reference).vectors_for_images(np.arange(96)))
    assert (reference / "failures.jsonl").read_bytes() == b""


def test_feature_cache_dir_layout():
    p = feature_cache_dir("data/demo", "google/siglip2-so400m-patch14-384", "trn")
    assert p == Path("data/demo/features/google--siglip2-so400m-patch14-384/trn")


def test_read_batch_random_items(reference):
    cache = FeatureCache.open(reference)
    all_vec = np.fromfile(reference / "vectors.f16", dtype="<f2").reshape(cache.count, cache.dim).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        items = rng.integers(0, cache.n_items, size=int(rng.integers(0, 25)))
        vec, mask = cache.read_batch(items)
        rows = cache.image_map[items]
        assert np.array_equal(mask, rows >= 0)
        expect = np.where(mask[..., None], all_vec[np.maximum(rows, 0)], 0.0)
        np.testing.assert_array_equal(vec, expect)
    vec, mask = cache.read_batch(np.array([], dtype=np.int64))
    assert vec.shape == (0, 3, cache.dim) and mask.shape == (0, 3)
    with pytest.raises(IndexError, match="item index 60"):
        cache.read_batch([0, 60])
    clone = pickle.loads(pickle.dumps(cache))  # DataLoader workers
    np.testing.assert_array_equal(clone.read_batch([3, 4])[0], cache.read_batch([3, 4])[0])
    assert isinstance(cache.vectors, np.ndarray) and not cache.vectors.flags.writeable


# ---------------------------------------------------------------------------------------------
# reuse and rebuild
# ---------------------------------------------------------------------------------------------


def test_finished_cache_is_reused(data, encoder, reference, tmp_path):
    d, m = data
    out = tmp_path / "c"
    first = CountingEncoder(encoder)
    build_feature_cache(BinSource(d / "imgs.bin", m), first, out, batch_size=8, chunk_size=16, num_workers=0,
                        progress=False)
    assert first.images == 96
    again = CountingEncoder(encoder)
    cache = build_feature_cache(BinSource(d / "imgs.bin", m), again, out, batch_size=32, num_workers=0,
                                progress=False)
    assert again.calls == 0
    assert files_of(out) == files_of(reference)
    assert cache.n_items == 60


def test_changed_inputs_rebuild(data, encoder, tmp_path):
    d, m = data
    out = tmp_path / "c"
    build_feature_cache(BinSource(d / "imgs.bin", m), encoder, out, num_workers=0, progress=False)
    before = (out / "vectors.f16").read_bytes()
    other = make_bin(tmp_path / "other.bin", 96, seed=7)  # other images, same count and map
    enc = CountingEncoder(encoder)
    cache = build_feature_cache(BinSource(other, m), enc, out, num_workers=0, progress=False)
    assert enc.images == 96
    assert (out / "vectors.f16").read_bytes() != before
    assert cache.header["source_fingerprint"] == BinSource(other, m).fingerprint()
    m2 = m.copy()
    m2[5] = [1, 2, -1]  # only the map changes: rebuilt too
    enc2 = CountingEncoder(encoder)
    cache = build_feature_cache(BinSource(other, m2), enc2, out, num_workers=0, progress=False)
    assert enc2.images == 96 and np.array_equal(cache.image_map, m2)


# ---------------------------------------------------------------------------------------------
# bad data
# ---------------------------------------------------------------------------------------------


def test_corrupt_images_are_recorded_and_masked(encoder, tmp_path):
    b = make_bin(tmp_path / "imgs.bin", 20, corrupt=(4, 9))
    m = np.array([[4, 1, -1], [9, -1, -1], [2, 3, 4], [5, -1, -1], [-1, -1, -1]], dtype=np.int64)
    src = BinSource(b, m)
    cache = build_feature_cache(src, encoder, tmp_path / "c", batch_size=8, num_workers=2, progress=False)
    recs = [json.loads(line) for line in (tmp_path / "c" / "failures.jsonl").read_text().splitlines()]
    assert [r["image"] for r in recs] == [4, 9]
    assert recs[0]["items"] == [0, 2] and recs[1]["items"] == [1]
    assert all(r["reason"] for r in recs)
    assert cache.failures() == recs and cache.n_failures == 2
    assert cache.header["failures"] == 2
    valid = np.load(tmp_path / "c" / "valid.npy", allow_pickle=False)
    assert valid.sum() == 18 and not valid[4] and not valid[9]
    vec, mask = cache.read_batch(np.arange(5))
    np.testing.assert_array_equal(mask, [[False, True, False], [False, False, False], [True, True, False],
                                         [True, False, False], [False, False, False]])
    assert not vec[~mask].any()
    ref = encoder([src.load(1), src.load(2), src.load(3), src.load(5)]).numpy()
    np.testing.assert_allclose(cache.vectors_for_images([1, 2, 3, 5]), ref, rtol=3e-3, atol=3e-3)
    assert not cache.vectors_for_images([4, 9]).any()


def test_map_past_the_end_fails_before_encoding(encoder, tmp_path):
    b = make_bin(tmp_path / "imgs.bin", 5)
    m = np.array([[0, 1, -1], [2, -1, -1], [3, -1, -1], [4, 5, -1]], dtype=np.int64)
    enc = CountingEncoder(encoder)
    with pytest.raises(DataFormatError, match=r"item row 3 .*image index 5 is out of range"):
        build_feature_cache(BinSource(b, m), enc, tmp_path / "c", num_workers=0, progress=False)
    assert enc.calls == 0
    assert not (tmp_path / "c" / "vectors.f16").exists() and not (tmp_path / "c" / "header.json").exists()
    with pytest.raises(DataFormatError, match="item row 1"):
        build_feature_cache(BinSource(b, np.array([[0], [-2]])), enc, tmp_path / "c", num_workers=0, progress=False)


def test_empty_source(encoder, tmp_path):
    write_image_bin(tmp_path / "none.bin", [])
    cache = build_feature_cache(BinSource(tmp_path / "none.bin", np.full((3, 3), -1)), encoder, tmp_path / "c",
                                num_workers=0, progress=False)
    vec, mask = cache.read_batch([0, 2])
    assert cache.count == 0 and not mask.any() and vec.shape == (2, 3, encoder.dim)


def test_unfinished_cache_refuses_to_open(data, encoder, tmp_path):
    d, m = data
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(BinSource(d / "imgs.bin", m, interrupt_at=20), encoder, tmp_path / "c", batch_size=8,
                            chunk_size=16, num_workers=0, progress=False)
    with pytest.raises(DataFormatError, match="unfinished"):
        FeatureCache.open(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="not a feature cache"):
        FeatureCache.open(tmp_path)


# ---------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------


def test_keyboard_interrupt_then_resume_is_byte_identical(data, encoder, reference, tmp_path, caplog):
    d, m = data
    out = tmp_path / "c"
    with caplog.at_level(logging.WARNING, logger="vixml_lib.images.cache_build"):
        with pytest.raises(KeyboardInterrupt):
            build_feature_cache(BinSource(d / "imgs.bin", m, interrupt_at=40), encoder, out, batch_size=8,
                                chunk_size=16, num_workers=0, progress=False)
    assert "resume" in caplog.text
    assert json.loads((out / "progress.json").read_text())["rows_done"] == 32
    assert json.loads((out / "header.json").read_text())["finished"] is False
    enc = CountingEncoder(encoder)
    # other batch/chunk sizes asked for: the resumed build keeps the ones it started with
    build_feature_cache(BinSource(d / "imgs.bin", m), enc, out, batch_size=32, chunk_size=64, num_workers=0,
                        progress=False)
    assert enc.images == 96 - 32
    assert files_of(out) == files_of(reference)


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from test_image_cache import BinSource
from vixml_lib.images.cache_build import build_feature_cache
from vixml_lib.images.encoders import create_vision_encoder
src = BinSource({bin!r}, np.load({map!r}), delay=float(sys.argv[2]))
build_feature_cache(src, create_vision_encoder({name!r}), sys.argv[1], batch_size=8, chunk_size=16, num_workers=1,
                    progress=False)
"""


def test_sigkill_then_resume_is_byte_identical(data, encoder, reference, tmp_path):
    d, m = data
    script = tmp_path / "build.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(Path(__file__).parent), bin=str(d / "imgs.bin"),
                                          map=str(d / "map.npy"), name=TINY))
    out = tmp_path / "c"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.02"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads((out / "progress.json").read_text())["rows_done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 16:
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the builder and its DataLoader worker
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 16 <= done < 96
    assert json.loads((out / "header.json").read_text())["finished"] is False
    enc = CountingEncoder(encoder)
    build_feature_cache(BinSource(d / "imgs.bin", m), enc, out, batch_size=8, chunk_size=16, num_workers=0,
                        progress=False)
    assert 0 < enc.images <= 96 - 16
    assert files_of(out) == files_of(reference)
