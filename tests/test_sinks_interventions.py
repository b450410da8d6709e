"""Interventions at inference, key / value capture, the literature's measures through a
tiny random model, retrieval under interventions and the head views (vixml_lib.sinks)."""
import json

import matplotlib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sink_data import tiny_inputs

from vixml_lib import sinks
from vixml_lib.prompt import KIND_CODES, get_template
from vixml_lib.testing import tiny_model_config

matplotlib.use("Agg")
IMG = KIND_CODES["images"]


@pytest.fixture(scope="module")
def tiny():
    return sinks.create_analysis_model(tiny_model_config("decoder", use_images=True))


@pytest.fixture(scope="module")
def tiny_encoder():
    return sinks.create_analysis_model(tiny_model_config("encoder", use_images=True, template="encoder"))


def test_intervention_mask_keeps_rows_normalised_and_drops_the_key():
    real = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    scores = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))  # [B, heads, T, T]
    for causal in (True, False):
        mask = sinks.intervention_mask(real, causal=causal, drop=0)
        assert mask.shape == (2, 1, 5, 5)
        a = torch.softmax(scores + mask, -1)
        assert torch.allclose(a.sum(-1), torch.ones(2, 3, 5))  # every row still sums to 1
        assert (a[:, :, 1:, 0] == 0).all() and torch.allclose(a[:, :, 0, 0], torch.ones(2, 3)) == causal
        assert (a[1, :, :, 3:] == 0).all()  # padding keys
        if causal:
            assert (a.triu(1) == 0).all()
    # without a dropped key: the usual causal + padding mask
    a = torch.softmax(scores + sinks.intervention_mask(real, causal=True), -1)
    assert (a.triu(1) == 0).all() and (a[:, :, 1:, 0] > 0).all()


@pytest.mark.parametrize("which", ["tiny", "tiny_encoder"])
def test_a_4d_mask_without_a_dropped_key_changes_nothing(which, request):
    model = request.getfixturevalue(which)
    inputs = tiny_inputs()
    with torch.no_grad():
        plain = model(**inputs)
        causal = model.kind == "decoder"
        swap = lambda kw: {**kw, "attention_mask": sinks.intervention_mask(  # noqa: E731
            kw["attention_mask"].bool(), causal=causal, dtype=kw["inputs_embeds"].dtype)}
        with sinks.backbone_call_hook(model, swap):
            again = model(**inputs)
    assert torch.allclose(plain, again, atol=1e-5)


@pytest.mark.parametrize("which", ["tiny", "tiny_encoder"])
def test_masking_a_position_leaves_the_other_positions_attention_normalised(which, request):
    model = request.getfixturevalue(which)
    inputs = tiny_inputs()
    with torch.no_grad():
        plain = model.forward_details(**inputs, output_attentions=True)
        with sinks.mask_key_position(model, 0):
            out = model.forward_details(**inputs, output_attentions=True)
    real = out.batch.attention_mask.bool()
    for a, before in zip(out.attentions, plain.attentions):  # [B, heads, T, T] per layer
        rows = a.sum(-1)[real[:, None, :].expand(-1, a.shape[1], -1)]
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
        col = a[..., 0][real[:, None, :].expand(-1, a.shape[1], -1)].reshape(-1)
        assert (a[:, :, 1:, 0][real[:, None, 1:].expand(-1, a.shape[1], -1)] == 0).all()
        assert col.numel() and (before[:, :, 1:, 0] > 0).any()
    assert not torch.allclose(out.embeddings, plain.embeddings, atol=1e-4)  # it changed something
    with torch.no_grad():
        assert torch.allclose(model(**inputs), plain.embeddings, atol=1e-6)  # and nothing after


def test_mean_at_position_replaces_one_row_by_the_mean_of_the_others():
    out = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [100.0, 100.0]],
                        [[1.0, 1.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]]])
    real = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    new = sinks.mean_at_position(out, real, 0)
    assert new[0, 0].tolist() == [4.0, 3.0] and torch.equal(new[0, 1:], out[0, 1:])  # padding not in the mean
    assert torch.equal(new[1], out[1])  # no other real position: unchanged
    assert torch.equal(sinks.mean_at_position(out, real, 9), out)


def test_mean_kv_replaces_keys_and_values_at_the_position_in_every_layer(tiny):
    inputs = tiny_inputs()
    with torch.no_grad(), sinks.mean_kv_position(tiny, 0), sinks.capture_projections(tiny) as rec:
        out = tiny.forward_details(**inputs)
    real = out.batch.attention_mask.bool()
    assert len(rec.keys) == len(rec.values) == 2
    for proj in (*rec.keys, *rec.values):
        for b in range(4):
            n = int(real[b].sum())
            assert torch.allclose(proj[b, 0], proj[b, 1:n].mean(0), atol=1e-5)


def test_projection_modules_find_llama_and_bert_projections_with_lora(tiny, tiny_encoder):
    keys, values = sinks.projection_modules(tiny)
    assert len(keys) == len(values) == 2
    assert all(hasattr(m, "lora_A") for m in keys)  # the LoRA-wrapped module, adapters included
    assert sinks.kv_heads(tiny) == 2  # grouped-query attention: 2 key-value heads for 4 query heads
    keys, values = sinks.projection_modules(tiny_encoder)
    assert len(keys) == 2 and all(isinstance(m, torch.nn.Linear) for m in values)
    with pytest.raises(ValueError, match="no key/value projections"):
        sinks.projection_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_intervention_names_and_moves(tiny):
    assert sinks.parse_intervention("mask_pos0") == sinks.Intervention("mask_pos0", "mask", position=0)
    assert sinks.parse_intervention("mean_kv_pos12").position == 12
    assert sinks.parse_intervention("placement:image_first").placement == "image_first"
    with pytest.raises(ValueError, match="mask_pos<k>"):
        sinks.parse_intervention("mask_first")
    assert sinks.moved_placement(get_template("text_image")) == "image_first"
    assert sinks.moved_placement(get_template("image_text")) == "text_image"
    with pytest.raises(ValueError, match="no image to move"):
        sinks.moved_placement(get_template("text_only"))
    with sinks.intervene(tiny, "move_image") as iv:
        segs = tiny.template.segments
        assert iv.placement == "image_first" and segs.index("images") < segs.index("text_prefix")
    assert tiny.template.name == "text_image"  # restored


# --------------------------------------------------------------------------- measurements


@pytest.mark.parametrize("which", ["tiny", "tiny_encoder"])
def test_measure_gives_the_literature_measures(which, request):
    model = request.getfixturevalue(which)
    res = {m.placement: m for m in sinks.measure_placements(model, tiny_inputs(), ["text_image", "image_first"],
                                                             model_name=which, include_own=False)}
    m = res["image_first"]
    N, T = 4, m.kinds.shape[1]
    assert all(m.scores[t].shape == (N, 2, m.mass["pos0"].shape[2]) for t in sinks.SINK_TARGETS)
    assert m.meta["queries"] == ("later" if which == "tiny" else "all")
    # the image sits at 0: its first-image sink score is the position-0 score
    assert np.allclose(m.scores["first_image"], m.scores["pos0"], equal_nan=True)
    if which == "tiny":  # causal: the position-0 score is the attention mass on position 0
        assert np.allclose(m.scores["pos0"], m.mass["pos0"], atol=1e-5)
    assert m.massive["top"].shape == (N, 3, 3) and m.massive["median"].shape == (N, 3)
    assert np.all(np.diff(m.massive["top"], axis=-1) <= 0)
    assert (m.massive["position"] < m.lengths[:, None, None]).all()  # never padding
    assert m.key_norms.shape == m.value_norms.shape == (N, 2, T)
    for i, n in enumerate(m.lengths):
        assert np.isnan(m.value_norms[i, :, n:]).all() and not np.isnan(m.value_norms[i, :, :n]).any()
    assert set(m.norms_by_kind("value")) >= {"position 0", "title"}
    rows = sinks.sink_share_rows(res.values(), epsilon=0.3)
    assert rows[0]["queries"] == m.meta["queries"] and "first_image share > 0.3 (%)" in rows[0]
    json.dumps([rows, sinks.massive_rows(res.values()), sinks.massive_summary_rows(res.values()),
                sinks.norm_ratio_rows(res.values())])
    summary = sinks.massive_summary_rows([m])[0]
    pct = [v for k, v in summary.items() if k.endswith("(%)")]
    assert abs(sum(pct) - 100) < 0.5
    for fig in (sinks.plot_sink_share(list(res.values())), sinks.plot_massive_activations(list(res.values())),
                sinks.plot_kv_norms(list(res.values()))):
        assert fig.axes


def test_attention_grid_views(tiny):
    grid = sinks.attention_grid(tiny, tiny_inputs(), item=2, placement="text_image", layers=[-1], heads=[0, 3])
    n = len(grid.labels)
    assert grid.weights.shape == (1, 2, n, n) and grid.layers == [2] and grid.heads == [0, 3]
    assert np.allclose(grid.weights.sum(-1), 1, atol=1e-5)
    names = [s[0] for s in grid.segments]
    assert names == ["prefix", "title", "image prefix", "image", "EOS"] and grid.segments[-1][2] == n
    assert grid.segments[3][2] - grid.segments[3][1] == 3  # item 2 has 3 images
    assert "image" in grid.title
    fig = sinks.plotly_attention_grid(grid)
    assert len(fig.data) == 2 and list(fig.data[0].x) == grid.labels
    # a vertical and a horizontal boundary line per segment start (but the first), on each map's own axes
    assert len(fig.layout.shapes) == 2 * 2 * (len(grid.segments) - 1)
    assert {s.xref for s in fig.layout.shapes} == {t.xaxis for t in fig.data} == {"x", "x2"}
    assert sorted({s.x0 for s in fig.layout.shapes if s.x0 == s.x1}) == [b - 0.5 for _, b, _ in grid.segments[1:]]
    assert sinks.plot_attention_grid(grid).axes
    with pytest.raises(ValueError, match="heads"):
        sinks.attention_grid(tiny, tiny_inputs(), heads=[7])
    assert sinks.segment_runs([2, 2, 3, 5]) == [("prefix", 0, 2), ("title", 2, 3), ("image", 3, 4)]


# --------------------------------------------------------------------------- retrieval under interventions


def test_per_query_precision():
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]]))
    idx = np.array([[2, 0, 1], [0, 1, 3], [-1, 1, 4]])  # -1 and 4: no label (misses)
    out = sinks.per_query_precision(idx, Y, ks=(1, 3))
    assert out["P@1"].tolist() == [100.0, 0.0, 0.0]
    assert out["P@3"].tolist() == pytest.approx([200 / 3, 100 / 3, 100 / 3])
    with pytest.raises(ValueError, match="P@5 needs 5"):
        sinks.per_query_precision(idx, Y, ks=(5,))


@pytest.fixture(scope="module")
def tiny_problem(tmp_path_factory, tiny):
    """The tiny demo dataset with random stand-in image features for every split, and
    its test problem for the tiny decoder."""
    from vixml_lib.data.demo import make_demo_dataset
    from vixml_lib.data.inputs import load_training_data
    from vixml_lib.data.prepare import prepare_dataset
    from vixml_lib.images.authors import import_authors_features
    from vixml_lib.images.cache import feature_cache_dir
    from vixml_lib.training.config import TrainConfig

    d = tmp_path_factory.mktemp("data") / "demo-tiny"
    make_demo_dataset(d, preset="tiny", seed=0)
    prepare_dataset(d)
    for split in ("trn", "tst", "lbl"):
        m = np.load(d / f"{split}_imgs_384_3_map.npy", allow_pickle=False)
        np.save(d / "feats.npy", np.random.default_rng(0).normal(size=(int(m.max()) + 1, 16)).astype(np.float32))
        import_authors_features(d / "feats.npy", d / f"{split}_imgs_384_3_map.npy",
                                feature_cache_dir(d, "fake", split), "fake", progress=False)
    config = TrainConfig(data_dir=str(d), vision_encoder="fake", eval_max_queries=60, encode_batch_size=64)
    return config, load_training_data(config, tiny)


def test_run_interventions_and_their_table(tiny, tiny_problem):
    from vixml_lib.training.evaluation import evaluate_model

    config, data = tiny_problem
    names = ["mask_pos0", "move_image", "mean_kv_pos0", "placement:text_image"]  # the last: its own, skipped
    res = sinks.run_interventions(tiny, data, config, names, model_name="t")
    assert [r.intervention for r in res] == ["none", "mask_pos0", "move_image", "mean_kv_pos0"]
    assert res[2].template == "image_first" and res[0].template == res[1].template == "text_image"
    base = res[0].scores
    assert base.n_queries == 60 and base.per_query["P@1"].shape == (60,)
    # the per-query numbers average to the pyxclib metrics, and to the training loop's evaluation
    assert base.per_query["P@1"].mean() == pytest.approx(base.metrics["P@1"])
    assert base.per_query["P@5"].mean() == pytest.approx(base.metrics["P@5"])
    assert evaluate_model(tiny, data, config)[0]["P@1"] == pytest.approx(base.metrics["P@1"])
    rows = sinks.intervention_rows(res, n_boot=200)
    assert [r["intervention"] for r in rows] == ["mask_pos0", "move_image", "mean_kv_pos0"]
    for r, after in zip(rows, res[1:]):
        assert r["P@1 before"] == pytest.approx(base.per_query["P@1"].mean())
        assert r["P@1 after"] == pytest.approx(after.scores.per_query["P@1"].mean())
        assert r["ΔP@1"] == pytest.approx(r["P@1 after"] - r["P@1 before"])
        assert r["ΔP@1 95% low"] <= r["ΔP@1"] <= r["ΔP@1 95% high"]
    json.dumps(rows + sinks.baseline_rows(res))
    assert len(sinks.plot_intervention_effects(rows).axes[0].get_yticklabels()) == 3
    with pytest.raises(ValueError, match="no 'none' result"):
        sinks.intervention_rows(res[1:])


def test_intervention_data_of_a_saved_run(tmp_path, tiny_problem):
    import yaml

    from vixml_lib.models import create_model

    config, _ = tiny_problem
    run_dir = tmp_path / "run"
    folder = run_dir / "train" / "r"
    create_model(tiny_model_config("decoder", use_images=True, num_layers=1)).save(folder / "checkpoint" / "model")
    run = sinks.load_trained_run(run_dir, "r")
    with pytest.raises(FileNotFoundError, match="no saved TrainConfig"):
        sinks.intervention_data(run)
    (folder / "config.yaml").write_text(yaml.safe_dump({"data_dir": config.data_dir, "vision_encoder": "fake"}))
    run = sinks.load_trained_run(run_dir, "r")
    cfg, data = sinks.intervention_data(run, max_labels=40, max_queries=30)
    assert cfg.max_labels == 40 and data.n_labels == 40 and data.Y_tst.shape[0] <= 30
    fresh = sinks.untrained_like(run.model)
    assert fresh.template.name == run.model.template.name and sinks.attention_shape(fresh)[0] == 1
    sinks.require_eager(fresh)
