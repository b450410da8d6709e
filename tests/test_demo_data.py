"""Tests for vixml_lib.data.demo (the package): the bundled deterministic multimodal catalogue."""
from __future__ import annotations

import csv
import gzip
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from vixml_lib.data.demo import META_FILE, PRESETS, DemoSpec, build, catalogue, demo_files, make_demo_dataset
from vixml_lib.data.demo.vocabulary import COLOURS, TYPES
from vixml_lib.images import ImageBin, image_counts, read_image_map

SPLITS = ("trn", "tst", "lbl")


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _attrs(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _filter(path: Path) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in line.split()) for line in path.read_text().splitlines() if line.strip()]


class _Data:
    def __init__(self, root: Path):
        self.root = root
        self.meta = json.loads((root / META_FILE).read_text())
        self.items = {s: _jsonl(root / f"{s}.json.gz") for s in SPLITS}
        self.attrs = {s: _attrs(root / f"{s}_attributes.csv") for s in SPLITS}
        self.bins = {s: ImageBin(root / f"{s}_imgs_384_3.bin") for s in SPLITS}
        self.maps = {s: read_image_map(root / f"{s}_imgs_384_3_map.npy", n_items=len(self.items[s]),
                                       n_images=len(self.bins[s])) for s in SPLITS}
        self.n_labels = len(self.items["lbl"])

    def train_freq(self) -> np.ndarray:
        freq = np.zeros(self.n_labels, dtype=np.int64)
        for q in self.items["trn"]:
            freq[q["target_ind"]] += 1
        return freq


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> _Data:
    root = tmp_path_factory.mktemp("demo") / "tiny"
    assert make_demo_dataset(root, "tiny", seed=0) == root
    return _Data(root)


def test_files_counts_and_meta(tiny):
    spec = PRESETS["tiny"]
    names = sorted(p.name for p in tiny.root.iterdir())
    assert names == sorted(demo_files() + [META_FILE])
    assert len(tiny.items["lbl"]) == spec.n_labels
    assert len(tiny.items["trn"]) == spec.n_train
    assert len(tiny.items["tst"]) == spec.n_test
    m = tiny.meta
    assert m["preset"] == "tiny" and m["seed"] == 0 and m["spec"]["n_labels"] == spec.n_labels
    assert m["counts"]["n_labels"] == spec.n_labels and m["description"]
    for s in SPLITS:
        assert len(tiny.attrs[s]) == len(tiny.items[s])
        assert m["counts"][f"n_images_{s}"] == len(tiny.bins[s])
    # record layout of the XML repository
    assert list(tiny.items["trn"][0]) == ["uid", "title", "content", "target_ind", "target_rel"]
    assert list(tiny.items["lbl"][0]) == ["uid", "title", "content"]
    assert all(it["title"] and it["content"] for s in SPLITS for it in tiny.items[s])
    uids = [it["uid"] for it in tiny.items["lbl"]]
    assert len(set(uids)) == len(uids)


def test_targets_valid(tiny):
    n_labels = tiny.n_labels
    n_per_query = []
    for s in ("trn", "tst"):
        for q in tiny.items[s]:
            t = q["target_ind"]
            assert len(t) >= 1, q
            assert t == sorted(set(t))
            assert all(isinstance(i, int) and 0 <= i < n_labels for i in t)
            assert q["target_rel"] == [1.0] * len(t)
            n_per_query.append(len(t))
    assert 1.7 <= np.mean(n_per_query) <= 3.2  # about 2-3 labels a query


def test_targets_follow_the_generative_story(tiny):
    """The query's own family variant is always relevant; other targets share its colour."""
    la = tiny.attrs["lbl"]
    for s in ("trn", "tst"):
        for q, a in zip(tiny.items[s], tiny.attrs[s]):
            tgt = [la[i] for i in q["target_ind"]]
            assert all(t["colour"] == a["colour"] for t in tgt)
            if int(a["copy_of_label"]) < 0:
                assert any(t["family"] == a["family"] and t["variant"] == a["variant"] for t in tgt)


def test_image_maps_and_decoding(tiny):
    size = PRESETS["tiny"].image_size
    for s in SPLITS:
        m, b = tiny.maps[s], tiny.bins[s]
        assert m.dtype == np.int64 and m.shape == (len(tiny.items[s]), 3)
        used = m[m >= 0]
        # every line is used exactly once, in order, and rows are -1 padded at the end
        assert np.array_equal(np.sort(used), np.arange(len(b)))
        for row in m:
            k = int((row >= 0).sum())
            assert (row[:k] >= 0).all() and (row[k:] == -1).all()
        counts = image_counts(m)
        assert [int(x) for x in counts] == [int(a["n_images"]) for a in tiny.attrs[s]]
        share0 = float((counts == 0).mean())
        assert 0.02 <= share0 <= 0.15, (s, share0)
        assert set(np.unique(counts).tolist()) == {0, 1, 2, 3}
        for i in range(0, len(b), max(1, len(b) // 60)):
            im = b.image(i)
            assert im.size == (size, size) and im.mode == "RGB"


def test_images_show_the_variant_colour(tiny):
    """A plain label's views show its colour: the median foreground pixel is nearest to it."""
    ref = np.array([rgb for _, rgb in COLOURS], dtype=float)
    names = [name for name, _ in COLOURS]
    ok = total = 0
    for i, a in enumerate(tiny.attrs["lbl"]):
        if a["pattern"] != "plain":
            continue
        for line in tiny.maps["lbl"][i]:
            if line < 0:
                continue
            im = np.asarray(tiny.bins["lbl"].image(int(line)), dtype=float)
            bg = np.median(np.concatenate([im[0], im[-1], im[:, 0], im[:, -1]]), axis=0)
            px = im.reshape(-1, 3)
            fg = px[np.abs(px - bg).sum(1) > 60]
            if len(fg):
                ok += names[int(((ref - np.median(fg, axis=0)) ** 2).sum(1).argmin())] == a["colour"]
            total += 1
    assert total > 20 and ok / total > 0.9, (ok, total)


def test_deterministic_and_seed_dependent(tiny, tmp_path):
    again = make_demo_dataset(tmp_path / "again", "tiny", seed=0)
    for name in demo_files() + [META_FILE]:
        assert (again / name).read_bytes() == (tiny.root / name).read_bytes(), name
    other = make_demo_dataset(tmp_path / "other", "tiny", seed=1)
    for name in ("trn.json.gz", "lbl.json.gz", "tst_imgs_384_3.bin", "lbl_imgs_384_3_map.npy"):
        assert (other / name).read_bytes() != (tiny.root / name).read_bytes(), name
    # gzip headers carry no timestamp nor file name
    raw = (tiny.root / "trn.json.gz").read_bytes()
    assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08


def test_long_tailed_label_frequencies(tiny):
    freq = tiny.train_freq()
    med = float(np.median(freq))
    assert freq.max() >= 5 * med, (freq.max(), med)
    assert (freq == 0).any()  # some labels never appear in train
    assert (freq == 1).any()


def test_filter_pairs_are_self_pairs_not_in_targets(tiny):
    for split, fname, lo, hi in (("tst", "filter_labels_test.txt", 0.03, 0.05),
                                 ("trn", "filter_labels_train.txt", 0.0, 0.05)):
        pairs = _filter(tiny.root / fname)
        n = len(tiny.items[split])
        assert lo * n <= len(pairs) <= hi * n + 1, (split, len(pairs))
        rows = [r for r, _ in pairs]
        assert len(set(rows)) == len(rows)
        for r, l in pairs:
            q, lab = tiny.items[split][r], tiny.items["lbl"][l]
            assert (q["uid"], q["title"], q["content"]) == (lab["uid"], lab["title"], lab["content"])
            assert l not in q["target_ind"] and q["target_ind"]
            assert int(tiny.attrs[split][r]["copy_of_label"]) == l
            qi, li = tiny.maps[split][r], tiny.maps["lbl"][l]
            assert (qi >= 0).sum() == (li >= 0).sum()
            for a, b in zip(qi[qi >= 0], li[li >= 0]):
                assert tiny.bins[split].raw(int(a)) == tiny.bins["lbl"].raw(int(b))
        # and no other query is a copy of a label
        assert sum(int(a["copy_of_label"]) >= 0 for a in tiny.attrs[split]) == len(pairs)


def test_titles_cannot_tell_variants_apart(tiny):
    """Text-only cap: the family's labels share titles, and only the variant's label is relevant.

    For most test queries the query's family has >= 2 labels with an identical title of
    which one is relevant and another is not; an oracle that knows the family from the
    title but not the variant (uniform over the family's labels) gets a low P@1.
    """
    la, lbl = tiny.attrs["lbl"], tiny.items["lbl"]
    fam_labels = defaultdict(list)
    for i, a in enumerate(la):
        fam_labels[a["family"]].append(i)
    ambiguous, oracle = 0, []
    for q, a in zip(tiny.items["tst"], tiny.attrs["tst"]):
        fam, rel = fam_labels[a["family"]], set(q["target_ind"])
        by_title = defaultdict(list)
        for i in fam:
            by_title[lbl[i]["title"]].append(i)
        if any(len(g) >= 2 and rel & set(g) and set(g) - rel for g in by_title.values()):
            ambiguous += 1
        oracle.append(len(rel & set(fam)) / len(fam))
    n = len(tiny.items["tst"])
    assert ambiguous / n >= 0.6, ambiguous / n
    assert np.mean(oracle) < 0.5, np.mean(oracle)
    # titles rarely name the colour; labels almost never differ in title otherwise
    share_colour = np.mean([int(a["title_mentions_colour"]) for a in tiny.attrs["tst"]])
    assert 0.05 <= share_colour <= 0.4


def test_queries_mostly_use_synonyms(tiny):
    label_word = {t[0]: t[2].lower() for t in TYPES}
    syn = [int(a["title_uses_synonym"]) for a in tiny.attrs["tst"] if int(a["copy_of_label"]) < 0]
    assert 0.5 <= np.mean(syn) <= 0.95
    for q, a in zip(tiny.items["tst"], tiny.attrs["tst"]):
        if int(a["title_uses_synonym"]) and a["type"] != "hat":  # "hat band" is an accessory of a cap
            assert not re.search(rf"\b{label_word[a['type']]}\b", q["title"].lower()), q["title"]
        assert a["brand"] in q["title"]


def test_reuses_complete_build_without_rebuilding(tiny, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("must not rebuild")

    monkeypatch.setattr(build, "_build", boom)
    assert make_demo_dataset(tiny.root, "tiny", seed=0) == tiny.root


def test_mismatch_and_overwrite(tmp_path):
    root = make_demo_dataset(tmp_path / "d", "tiny", seed=3)
    with pytest.raises(FileExistsError) as e:
        make_demo_dataset(root, "tiny", seed=4)
    assert "seed=3" in str(e.value) and "overwrite=True" in str(e.value)
    with pytest.raises(FileExistsError, match="preset='tiny'"):
        make_demo_dataset(root, "small", seed=3)  # fails fast, before building
    (root / "trn_X_Y.txt").write_text("derived file\n")  # derived files are replaced on overwrite
    make_demo_dataset(root, "tiny", seed=4, overwrite=True)
    assert json.loads((root / META_FILE).read_text())["seed"] == 4
    assert not (root / "trn_X_Y.txt").exists()
    # an incomplete dataset (a file missing) is not reused
    (root / "tst_imgs_384_3.bin").unlink()
    with pytest.raises(FileExistsError, match="missing"):
        make_demo_dataset(root, "tiny", seed=4)
    make_demo_dataset(root, "tiny", seed=4, overwrite=True)
    assert (root / "tst_imgs_384_3.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary leftovers


def test_refuses_foreign_directory(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not a demo dataset"):
            make_demo_dataset(d, "tiny", overwrite=overwrite)
    assert (d / "notes.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    make_demo_dataset(empty, "tiny")
    assert (empty / META_FILE).exists()


def test_crash_leaves_nothing(tmp_path, monkeypatch):
    def crash(self, *a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(catalogue.Builder, "render_item", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        make_demo_dataset(tmp_path / "x", "tiny")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown demo preset"):
        make_demo_dataset(tmp_path / "a", "huge")
    with pytest.raises(ValueError, match="seed"):
        make_demo_dataset(tmp_path / "a", "tiny", seed=-1)
    with pytest.raises(ValueError):
        DemoSpec(name="x", n_labels=10, n_train=10, n_test=10, image_size=32, n_brands=2, image_count_probs=(0.5, 0.5))


def test_custom_spec(tmp_path):
    spec = DemoSpec(name="micro", n_labels=40, n_train=60, n_test=30, image_size=16, n_brands=3)
    root = make_demo_dataset(tmp_path / "m", spec, seed=5)
    d = _Data(root)
    assert d.n_labels == 40 and len(d.items["trn"]) == 60 and d.meta["preset"] == "micro"
    assert d.bins["lbl"].image(0).size == (16, 16)


def test_presets_sizes():
    s, t = PRESETS["small"], PRESETS["tiny"]
    assert (s.n_labels, s.n_train, s.n_test, s.image_size) == (3000, 15000, 5000, 64)
    assert (t.n_labels, t.n_train, t.n_test, t.image_size) == (150, 600, 200, 32)


@pytest.mark.slow
def test_small_preset_builds_quickly_with_the_claimed_properties(tmp_path):
    t0 = time.perf_counter()
    root = make_demo_dataset(tmp_path / "small", "small", seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 90, elapsed
    d = _Data(root)
    freq = d.train_freq()
    assert freq.max() >= 100 and np.median(freq) <= 10 and (freq == 0).sum() >= 30
    n_per_query = [len(q["target_ind"]) for q in d.items["trn"]]
    assert 2.0 <= np.mean(n_per_query) <= 3.0
    assert 0.03 <= len(_filter(root / "filter_labels_test.txt")) / len(d.items["tst"]) <= 0.05
