import csv
import json

import numpy as np
import pytest

from vixml_lib import ablation, training
from vixml_lib.ablation import DEFAULT_FACTORS, expand_grid, factor_effects, plot_grid, results_table, run_grid
from vixml_lib.data import tokens
from vixml_lib.data.demo import make_demo_dataset
from vixml_lib.data.prepare import prepare_dataset

VISION = "random-features"


def by_name(cells):
    return {c.name: c for c in cells}


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_default_grid_collapses_identical_templates(kind):
    cells = expand_grid(kind=kind)
    n_combinations = 1
    for levels in DEFAULT_FACTORS.values():
        n_combinations *= len(levels)
    assert n_combinations == 32
    # 16 templates with images; without images order and image prefix change nothing: 4
    assert len(cells) == 20 and sum(c.images for c in cells) == 16
    assert len(cells) + sum(len(c.aliases) for c in cells) == n_combinations
    names = [c.name for c in cells]
    assert len(set(names)) == len(names)
    assert len({c.prompt_template().segments for c in cells}) == 20  # what remains is distinct
    text_only = [c for c in cells if not c.images]
    assert [c.name for c in text_only] == ["img0-tp1-eos1", "img0-tp1-eos0", "img0-tp0-eos1", "img0-tp0-eos0"]
    assert all(len(c.aliases) == 3 and c.factors["order"] is None and c.factors["image_prefix"] is None
               for c in text_only)
    assert by_name(cells)["img0-tp1-eos1"].aliases == (
        "img0-text_image-tp1-ip0-eos1", "img0-image_text-tp1-ip1-eos1", "img0-image_text-tp1-ip0-eos1")
    assert all(c.template["kind"] == kind and c.template["name"] == c.name for c in cells)
    assert sum(c.reference for c in cells) == 2  # the paper's template, with and without images


def test_grid_cells_assemble_the_expected_segments():
    dec, enc = by_name(expand_grid(kind="decoder")), by_name(expand_grid(kind="encoder"))
    seg = lambda cell: cell.prompt_template().segments  # noqa: E731
    assert seg(dec["img1-text_image-tp1-ip1-eos1"]) == ("bos", "text_prefix", "title", "image_prefix", "images", "eos")
    assert dec["img1-text_image-tp1-ip1-eos1"].reference
    assert seg(dec["img1-image_text-tp1-ip0-eos1"]) == ("bos", "images", "text_prefix", "title", "eos")
    assert seg(dec["img1-image_text-tp0-ip0-eos0"]) == ("bos", "images", "title")
    assert seg(dec["img0-tp1-eos1"]) == ("bos", "text_prefix", "title", "eos") and dec["img0-tp1-eos1"].reference
    assert seg(enc["img1-image_text-tp0-ip0-eos1"]) == ("images", "cls", "title", "sep")  # the authors' encoder input
    assert enc["img1-image_text-tp0-ip0-eos1"].reference
    assert seg(enc["img1-text_image-tp0-ip1-eos0"]) == ("cls", "title", "image_prefix", "images")
    assert seg(enc["img0-tp0-eos1"]) == ("cls", "title", "sep") and enc["img0-tp0-eos1"].reference
    assert enc["img0-tp1-eos0"].describe() == "[CLS] This product text <title>"
    assert dec["img1-text_image-tp1-ip1-eos1"].describe(eos_token="<|endoftext|>") == (
        "[BOS] This product text <title> and its image <img>* <|endoftext|>")


def test_grid_settings_are_checked_and_any_template_argument_can_be_a_factor():
    cells = expand_grid({"bos": [True, False], "text_prefix": ["Product:", False]}, kind="decoder",
                        fixed={"images": False})
    assert [c.name for c in cells] == ["bos1-tp=Product", "bos1-tp0", "bos0-tp=Product", "bos0-tp0"]
    assert cells[0].prompt_template().text_prefix == "Product:" and not cells[0].images
    with pytest.raises(ValueError, match="unknown grid factor"):
        expand_grid({"prefix": [True]})
    with pytest.raises(ValueError, match="both as factors and as fixed"):
        expand_grid({"eos": [True, False]}, fixed={"eos": True})
    with pytest.raises(ValueError, match="non-empty list"):
        expand_grid({"eos": []})
    with pytest.raises(ValueError, match="kind must be"):
        expand_grid(kind="seq2seq")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The tiny demo with an image feature cache of seeded random vectors (the grid only
    reads features; building them with a vision encoder is tested elsewhere)."""
    from vixml_lib.images.authors import import_authors_features
    from vixml_lib.images.cache import feature_cache_dir

    d = tmp_path_factory.mktemp("data") / "demo-tiny"
    make_demo_dataset(d, preset="tiny", seed=0)
    prepare_dataset(d)
    rng = np.random.default_rng(0)
    for split in ("trn", "tst", "lbl"):
        image_map = d / f"{split}_imgs_384_3_map.npy"
        n_images = int(np.load(image_map, allow_pickle=False).max()) + 1
        np.save(d / f"{split}_feats.npy", rng.standard_normal((n_images, 24)).astype(np.float32))
        import_authors_features(d / f"{split}_feats.npy", image_map, feature_cache_dir(d, VISION, split),
                                encoder_name=VISION, progress=False)
    return d


def test_grid_trains_every_cell_once_reports_failures_and_reuses_caches(tiny_data, tmp_path, monkeypatch):
    tokenised = []
    real_tokenize = tokens.tokenize_texts
    monkeypatch.setattr(tokens, "tokenize_texts", lambda tok, texts, *a, **k: tokenised.append(len(texts))
                        or real_tokenize(tok, texts, *a, **k))
    trained = []
    real_train = training.train
    monkeypatch.setattr(training, "train",
                        lambda config, **k: trained.append(config.out_dir) or real_train(config, **k))
    features = sorted(p for p in (tiny_data / "features").rglob("*") if p.is_file())
    mtimes = [p.stat().st_mtime_ns for p in features]

    encoder = {"model": "minilm", "model_overrides": {"backbone": "random-tiny-bert", "kind": "encoder"},
               "batch_size": 32, "lr": 1e-3}
    backbones = {
        "enc": encoder,
        "dec": {"model": "smollm2", "model_overrides": {"backbone": "random-tiny-llama", "kind": "decoder"},
                "batch_size": 16, "lr": 2e-3},
        "enc-broken": {**encoder, "vision_encoder": "no-such-encoder"},  # only its image cells fail
        "unknown": {"model": "no-such-preset"},  # nothing of it can run: one failed row
    }
    factors = {"images": [True, False], "order": ["text_image", "image_text"], "eos": [True, False]}
    common = dict(data_dir=str(tiny_data), vision_encoder=VISION, epochs=1, max_steps_per_epoch=2, warmup_steps=1,
                  eval_max_queries=60, max_labels=80, threads=1, device="cpu")
    rows = run_grid(tmp_path, backbones, factors, progress=False, **common)

    # 6 cells per kind: 4 with images (order x eos), 2 without (eos)
    assert [(r["backbone"], r["status"]) for r in rows].count(("enc", "ok")) == 6
    assert [(r["backbone"], r["status"]) for r in rows].count(("dec", "ok")) == 6
    broken = [r for r in rows if r["backbone"] == "enc-broken"]
    assert [r["status"] for r in broken] == ["failed"] * 4 + ["ok"] * 2
    assert all(r["error"].startswith("FileNotFoundError:") and "no-such-encoder" in r["error"] for r in broken[:4])
    assert "Traceback" in (tmp_path / broken[0]["out_dir"] / "error.txt").read_text()
    (unknown,) = [r for r in rows if r["backbone"] == "unknown"]
    assert unknown["status"] == "failed" and "no-such-preset" in unknown["error"]
    assert len(trained) == 6 + 6 + 6

    ok = [r for r in rows if r["status"] == "ok"]
    assert all(0 <= r[m] <= 100 for r in ok for m in ("P@1", "P@5", "nDCG@5", "PSP@5"))
    assert all(r["train_s"] > 0 and r["eval_s"] > 0 for r in ok)
    dec = {r["cell"]: r for r in rows if r["backbone"] == "dec"}
    # image first: the authors' wording ("This product image" ... "and its text")
    assert dec["img1-image_text-eos0"]["template"] == "[BOS] This product image <img>* and its text <title>"
    assert dec["img0-eos1"]["aliases"] == "img0-image_text-eos1" and dec["img0-eos1"]["images"] is False
    run = tmp_path / "ablations" / "dec" / "img1-text_image-eos1"
    assert json.loads((run / "metrics.json").read_text())["final"]["P@1"] == dec["img1-text_image-eos1"]["P@1"]
    assert (run / "checkpoint" / "model").is_dir() and not (run / "checkpoint" / "optimizer.pt").exists()

    # caches: each tokenizer's cache built once for the whole grid (3 splits), features only read
    assert len(tokenised) == 3 * 2  # random-tiny-bert (enc, enc-broken) and random-tiny-llama
    assert [p.stat().st_mtime_ns for p in features] == mtimes

    # results files, written atomically after every cell
    with open(tmp_path / "ablations" / "results.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 19 and table[0]["backbone"] == "enc"
    saved = json.loads((tmp_path / "ablations" / "results.json").read_text())
    assert saved["rows"] == rows and len(saved["grid"]["cells"]["dec"]) == 6
    assert not list((tmp_path / "ablations").glob(".*tmp"))

    # a second run of the same grid trains nothing: finished cells are read back
    trained.clear()
    again = run_grid(tmp_path, backbones, factors, progress=False, **common)
    assert len(trained) == 4 and all("/enc-broken/img1-" in t for t in trained)  # only the failed cells again
    assert [r["status"] for r in again] == [("reused" if r["status"] == "ok" else "failed") for r in rows]
    assert [r["P@1"] for r in again] == [r["P@1"] for r in rows]

    # summaries of the results
    assert len(results_table(rows)) == 19
    effects = factor_effects(rows, list(factors))
    order = [e for e in effects if e["backbone"] == "dec" and e["factor"] == "order"]
    assert [(e["level"], e["cells"]) for e in order] == [("text_image", 2), ("image_text", 2)]
    fig = plot_grid(rows)
    assert len(fig.axes) == 2 and any(t.get_text().strip() == "failed" for t in fig.axes[0].texts)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_grid_refuses_a_backbone_name_that_is_not_a_folder_name(tmp_path):
    with pytest.raises(ValueError, match="names a folder"):
        run_grid(tmp_path, {"a/b": {"model": "minilm"}}, progress=False)
    with pytest.raises(ValueError, match="keep_checkpoints"):
        run_grid(tmp_path, {"a": {"model": "minilm"}}, keep_checkpoints="some", progress=False)
    assert ablation.METRICS == ("P@1", "P@5", "nDCG@5", "PSP@5")


def test_method_and_fusion_are_grid_factors():
    from vixml_lib.ablation import cell_config

    cells = expand_grid({"images": [True, False], "fusion": ["early", "late"], "method": ["ngame", "prime"]},
                        kind="encoder")
    # with images: 2 fusions x 2 methods; without images the fusion changes nothing: 2 methods
    assert len(cells) == 6
    by = {(c.images, c.settings.get("fusion") if c.images else None, c.settings["method"]): c for c in cells}
    assert set(by) == {(True, "early", "ngame"), (True, "early", "prime"), (True, "late", "ngame"),
                       (True, "late", "prime"), (False, None, "ngame"), (False, None, "prime")}
    late = by[(True, "late", "prime")]
    assert "method" not in late.template and "fusion" not in late.template
    config = cell_config(late, {"model": "minilm-vixml", "model_overrides": {"num_layers": 2}}, "/tmp/x")
    assert config.method == "prime" and config.model_config().fusion == "late"
    assert config.model_config().num_layers == 2 and config.use_images


def test_factor_effects_over_seeds_come_with_an_interval():
    rows = []
    for seed, (on, off) in enumerate([(60.0, 50.0), (62.0, 51.0), (61.0, 49.0)]):
        rows += [{"backbone": "b", "cell": "img1", "seed": seed, "images": True, "P@1": on, "status": "ok"},
                 {"backbone": "b", "cell": "img0", "seed": seed, "images": False, "P@1": off, "status": "ok"}]
    on, off = factor_effects(rows, ["images"])
    assert on["level"] is True and on["mean P@1"] == 61.0 and on["seeds"] == 3 and "interval (seeds)" not in on
    # per-seed differences -10, -11, -12: mean -11, sd 1, t(0.975, 2) = 4.303 -> half-width 2.48
    assert off["vs first level"] == -11.0 and off["interval (seeds)"] == "-11.0 [-13.5, -8.5]"
    assert off["within noise"] is False
    one_seed = factor_effects([r for r in rows if r["seed"] == 0], ["images"])
    assert one_seed[1]["vs first level"] == -10.0 and "interval (seeds)" not in one_seed[1]
