"""PRIME and late fusion in the training loop, and the in-batch positive of the loss."""
import numpy as np
import pytest
import torch
from train_data import TINY, die_after_checkpoints, history_without_seconds, tiny_config

from vixml_lib.runs import TrainFolder
from vixml_lib.training import loss_positives, train

PRIME = {"free_vectors": 8, "heads": 8, "feedforward": 32}


def test_prime_run_saves_its_state_and_searches_prototypes(tiny_data, tmp_path):
    out = tmp_path / "p"
    summary = train(tiny_config(tiny_data, out, method="prime", prime=PRIME, epochs=2, save_embeddings=True),
                    progress=False)
    run = TrainFolder(out)
    assert summary["final"]["P@1"] > 0 and run.checkpoint.prime.is_file() and run.checkpoint.prime_bank.is_file()
    clusters = np.load(run.prime_clusters)
    assert clusters.min() >= 0 and clusters.max() < 8 and len(np.unique(clusters)) > 1
    # the saved label embeddings are the ones searched: prototypes differ from the encoder's own
    from vixml_lib.data.inputs import load_training_data
    from vixml_lib.models import load_model
    from vixml_lib.training.config import load_train_config
    from vixml_lib.training.evaluation import encode

    cfg = load_train_config(run.config)
    model = load_model(run.model)
    u = encode(model, load_training_data(cfg, model).splits["lbl"])
    saved = np.load(run.embeddings("lbl"))
    assert saved.shape == u.shape and not np.allclose(saved, u, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(saved, axis=1), 1.0, atol=1e-5)


def test_killed_prime_run_resumes_to_the_same_metrics(tiny_data, tmp_path, monkeypatch):
    kw = dict(method="prime", prime=PRIME, epochs=3, fixed_positive=False)
    full = train(tiny_config(tiny_data, tmp_path / "full", **kw), progress=False)
    die_after_checkpoints(monkeypatch, 1)  # killed right after the first epoch's checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_data, tmp_path / "resumed", **kw), progress=False)
    monkeypatch.undo()
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", **kw), progress=False)
    assert history_without_seconds(resumed) == history_without_seconds(full)


@pytest.mark.parametrize("centroids", ["exact", "ema"])
def test_prime_centroid_modes_train(tiny_data, tmp_path, centroids):
    summary = train(tiny_config(tiny_data, tmp_path / centroids, method="prime", epochs=1,
                                prime={**PRIME, "centroids": centroids}), progress=False)
    assert np.isfinite(summary["history"][-1]["loss"])


def test_late_fusion_trains_with_images(tiny_data, tmp_path):
    from vixml_lib.images.cache import feature_cache_dir
    from vixml_lib.images.cache_build import build_feature_cache
    from vixml_lib.images.encoders import create_vision_encoder
    from vixml_lib.images.sources import open_image_source

    enc = create_vision_encoder("offline-random-siglip-tiny")
    for split in ("trn", "tst", "lbl"):
        build_feature_cache(open_image_source(tiny_data, split), enc, feature_cache_dir(tiny_data, enc.name, split),
                            num_workers=0)
    cfg = dict(use_images=True, vision_encoder=enc.name, epochs=1)
    late = train(tiny_config(tiny_data, tmp_path / "late", model_overrides={**TINY, "fusion": "late"}, **cfg),
                 progress=False)
    early = train(tiny_config(tiny_data, tmp_path / "early", **cfg), progress=False)
    assert late["template"] != early["template"]  # the backbone reads the text-only template
    assert np.isfinite(late["history"][-1]["loss"]) and late["final"]["P@1"] > 0


def test_loss_positive_is_the_own_label_or_any_in_batch_positive():
    target = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
    assert loss_positives(target, True, np.random.default_rng(0)).tolist() == [0, 1, 2]
    rng = np.random.default_rng(0)
    draws = torch.stack([loss_positives(target, False, rng) for _ in range(2000)])
    assert set(draws[:, 1].tolist()) == {1}
    assert set(draws[:, 0].tolist()) == {0, 1} and abs((draws[:, 0] == 0).float().mean().item() - 0.5) < 0.05
    assert set(draws[:, 2].tolist()) == {0, 2}
