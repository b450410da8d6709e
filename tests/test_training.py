from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from train_data import TINY, die_after_checkpoints, history_without_seconds, tiny_config

from vixml_lib import training
from vixml_lib.data import inputs
from vixml_lib.data.prepare import prepare_dataset
from vixml_lib.training import batch_targets, sample_positive_labels, train


def test_positive_sampling_uniform_and_by_inverse_propensity():
    Y = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=np.float32))
    rng = np.random.default_rng(0)
    rows = np.array([0, 1, 2] * 4000)
    picks = sample_positive_labels(Y, rows, rng)
    assert set(picks[rows == 1]) == {2}  # only its labels
    assert abs(np.mean(picks[rows == 0] == 0) - 0.5) < 0.03  # uniform over 2 labels
    w = np.array([1.0, 3.0, 1.0])  # label 1 three times as likely as label 0
    picks = sample_positive_labels(Y, rows, rng, weights=w)
    assert abs(np.mean(picks[rows == 0] == 1) - 0.75) < 0.03
    with pytest.raises(ValueError, match="at least one label"):
        sample_positive_labels(sp.csr_matrix((2, 3)), np.array([0]), rng)


def test_targets_mark_every_in_batch_positive():
    Y = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    # query 0 sampled label 0, query 1 sampled label 1: label 1 is positive for both
    T = batch_targets(Y, np.array([0, 1]), np.array([0, 1]))
    assert T.tolist() == [[True, True], [False, True]]


def test_training_improves_on_zero_shot_and_same_seed_gives_same_metrics(tiny_data, tmp_path):
    a = train(tiny_config(tiny_data, tmp_path / "a"), progress=False)
    b = train(tiny_config(tiny_data, tmp_path / "b"), progress=False)
    hist = a["history"]
    assert [h["epoch"] for h in hist] == [0, 1, 2] and hist[0]["loss"] is None
    assert hist[2]["loss"] < hist[1]["loss"]
    assert hist[-1]["P@1"] > hist[0]["P@1"]  # random init -> trained
    assert a["history"][-1] == {**b["history"][-1], "train_seconds": a["history"][-1]["train_seconds"],
                                "eval_seconds": a["history"][-1]["eval_seconds"]}
    assert (tmp_path / "a" / "config.yaml").exists() and (tmp_path / "a" / "checkpoint" / "state.json").exists()


def test_killed_run_resumes_to_the_same_metrics(tiny_data, tmp_path, monkeypatch):
    full = train(tiny_config(tiny_data, tmp_path / "full", epochs=3), progress=False)
    die_after_checkpoints(monkeypatch, 1)  # killed right after the first epoch's checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_data, tmp_path / "resumed", epochs=3), progress=False)
    monkeypatch.undo()
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", epochs=3), progress=False)
    assert history_without_seconds(resumed) == history_without_seconds(full)
    assert not (tmp_path / "resumed" / "checkpoint.tmp").exists()


def test_resume_refuses_a_different_configuration(tiny_data, tmp_path):
    train(tiny_config(tiny_data, tmp_path / "r", epochs=1), progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train(tiny_config(tiny_data, tmp_path / "r", epochs=1, lr=5e-3), progress=False)


def test_clustered_batches_after_warmup_are_checkpointed(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "c", cluster_warmup_epochs=1, cluster_size=8, epochs=2, eval_every=2)
    summary = train(cfg, progress=False)
    z = np.load(tmp_path / "c" / "checkpoint" / "clusters.npz", allow_pickle=False)
    rows = np.sort(z["rows"])
    n_train_with_labels = int((np.diff(prepare_dataset(tiny_data).Y["trn"].indptr) > 0).sum())
    assert len(rows) == n_train_with_labels and len(np.unique(rows)) == len(rows)
    assert [h["epoch"] for h in summary["history"] if "P@1" in h] == [0, 2]


def test_clustering_reads_float16_embeddings_from_a_file_in_the_run_folder(tiny_data, tmp_path, monkeypatch):
    from vixml_lib.training import loop

    seen, real = [], loop.balanced_clusters

    def spy(emb, *args, **kwargs):
        seen.append((type(emb), emb.dtype, getattr(emb, "filename", None)))
        return real(emb, *args, **kwargs)

    monkeypatch.setattr(loop, "balanced_clusters", spy)
    out = tmp_path / "disk"
    cfg = tiny_config(tiny_data, out, cluster_warmup_epochs=1, cluster_size=8, epochs=2, eval_every=2,
                      cluster_encode_dtype="float16", cluster_encode_to_disk=True)
    summary = train(cfg, progress=False)
    assert len(seen) == 1
    kind, dtype, filename = seen[0]
    assert issubclass(kind, np.memmap) and dtype == np.float16
    assert Path(filename) == out / "cluster_embeddings_trn.npy"
    assert not (out / "cluster_embeddings_trn.npy").exists()  # scratch, removed at the end
    assert summary["final"]["P@1"] >= 0
    # the file only moves the embeddings out of RAM: in float32 it gives the clusters of RAM
    a = tiny_config(tiny_data, tmp_path / "ram", cluster_warmup_epochs=1, cluster_size=8, epochs=2, eval_every=2)
    b = tiny_config(tiny_data, tmp_path / "file", cluster_warmup_epochs=1, cluster_size=8, epochs=2, eval_every=2,
                    cluster_encode_to_disk=True)
    assert history_without_seconds(train(a, progress=False)) == history_without_seconds(train(b, progress=False))


def test_a_cluster_encode_dtype_other_than_float32_or_float16_is_refused(tiny_data, tmp_path):
    from vixml_lib.errors import ConfigError
    from vixml_lib.training import make_train_config

    with pytest.raises(ConfigError, match="cluster_encode_dtype"):
        make_train_config({"data_dir": str(tiny_data), "cluster_encode_dtype": "float64"})


def test_evaluation_on_a_query_subset_keeps_rows_and_filters_aligned(tiny_data, tmp_path):
    from vixml_lib.models import create_model

    cfg = tiny_config(tiny_data, tmp_path / "s", eval_max_queries=50)
    model = create_model(cfg.model_config())
    data = inputs.load_training_data(cfg, model)
    full = prepare_dataset(tiny_data)
    items = data.splits["tst"].items
    assert len(items) == 50 and data.Y_tst.shape == (50, full.n_labels)
    assert (data.Y_tst != full.Y["tst"][items]).nnz == 0
    # every kept filter pair points at the same (query, label) as before
    for r, l in data.filter_tst:
        assert [items[r], l] in full.filters["tst"].tolist()
    ids = data.splits["tst"].batch(np.array([0, 1]))["title_ids"]
    assert ids.tolist() == np.asarray(data.splits["tst"].ids[items[:2]], dtype=np.int64).tolist()


def test_train_command_reads_yaml_and_rejects_unknown_settings(tiny_data, tmp_path, capsys):
    import json

    import yaml

    from vixml_lib.cli import main

    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tiny_data), "model": "minilm", "use_images": False,
                                   "model_overrides": TINY, "epochs": 1, "batch_size": 64, "warmup_steps": 1,
                                   "save_embeddings": False, "threads": 1}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    assert '"P@1"' in capsys.readouterr().out
    cfg.write_text("data_dir: x\nepoch: 3\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "unknown setting(s) epoch" in capsys.readouterr().err


def test_saved_predictions_reproduce_the_final_metrics(tiny_data, tmp_path):
    from vixml_lib.data import formats
    from vixml_lib.metrics import evaluate, inverse_propensity

    summary = train(tiny_config(tiny_data, tmp_path / "e", epochs=1, save_embeddings=True), progress=False)
    ds = prepare_dataset(tiny_data)
    pred = formats.read_predictions(tmp_path / "e" / "predictions_tst.npz")
    again = evaluate(pred, ds.Y["tst"], inverse_propensity(ds.Y["trn"]), filter_pairs=ds.filters["tst"])
    assert again == summary["final"]
    emb = np.load(tmp_path / "e" / "embeddings_tst.npy", allow_pickle=False)
    assert emb.shape[0] == ds.Y["tst"].shape[0]
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_label_subproblem_keeps_rows_columns_and_filters_aligned():
    Y_tst = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=np.float32))
    Y_trn = sp.csr_matrix(np.eye(4, dtype=np.float32))
    filt = np.array([[0, 0], [2, 3], [3, 1]])
    for seed in range(20):
        lbl, tst, Yt, Ys, f = inputs.subproblem(Y_trn, Y_tst, filt, seed, max_labels=2)
        assert len(lbl) == 2 and Yt.shape == (4, 2)
        # exactly the test queries with a kept label, their rows and columns unchanged
        assert tst.tolist() == [r for r in range(4) if Y_tst[r][:, lbl].nnz]
        assert (Ys != Y_tst[tst][:, lbl]).nnz == 0
        expect = [[list(tst).index(r), list(lbl).index(c)] for r, c in filt if r in tst and c in lbl]
        assert f.tolist() == expect
    lbl, tst, *_ = inputs.subproblem(Y_trn, Y_tst, filt, 0, max_queries=3)
    assert len(lbl) == 4 and len(tst) == 3
    with pytest.raises(ValueError, match="max_labels"):
        inputs.subproblem(Y_trn, Y_tst, filt, 0, max_labels=0)


def test_training_on_a_label_subproblem_saves_the_items_it_used(tiny_data, tmp_path):
    summary = train(tiny_config(tiny_data, tmp_path / "m", epochs=1, max_labels=60, eval_max_queries=40,
                                save_embeddings=True), progress=False)
    lbl = np.load(tmp_path / "m" / "items_lbl.npy", allow_pickle=False)
    tst = np.load(tmp_path / "m" / "items_tst.npy", allow_pickle=False)
    assert len(lbl) == 60 and len(tst) == 40
    assert np.load(tmp_path / "m" / "embeddings_lbl.npy").shape[0] == 60
    ds = prepare_dataset(tiny_data)
    assert all(ds.Y["tst"][r][:, lbl].nnz for r in tst)
    assert summary["final"]["P@1"] >= 0


def test_encode_sorts_by_length_but_returns_rows_in_their_order(tiny_data, tmp_path):

    from vixml_lib.models import create_model

    cfg = tiny_config(tiny_data, tmp_path / "enc")
    model = create_model(cfg.model_config()).eval()
    data = inputs.load_training_data(cfg, model)
    rows = np.random.default_rng(0).permutation(len(data.splits["lbl"]))[:37]
    emb = training.encode(model, data.splits["lbl"], batch_size=8, rows=rows)
    with torch.no_grad():
        ref = model(**data.splits["lbl"].batch(rows)).numpy()
    assert emb.shape == ref.shape and np.allclose(emb, ref, atol=1e-5)
    assert len(set(data.splits["lbl"].lengths(rows[:8]))) > 1  # the rows really differ in length


@pytest.mark.parametrize("method", ["ngame", "prime"])
def test_run_killed_between_steps_resumes_inside_the_epoch(tiny_data, tmp_path, monkeypatch, method):
    kw = dict(epochs=2, batch_size=32, max_steps_per_epoch=5, checkpoint_every_steps=2, cluster_warmup_epochs=1,
              cluster_size=8,
              method=method, prime={"free_vectors": 8, "heads": 8, "feedforward": 32}, fixed_positive=False)
    full = train(tiny_config(tiny_data, tmp_path / "full", **kw), progress=False)
    calls = die_after_checkpoints(monkeypatch, 4)  # killed after a checkpoint inside the second epoch
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_data, tmp_path / "resumed", **kw), progress=False)
    assert calls == [2, 4, None, 1]  # inside epoch 1, its end, then inside epoch 2 (step 6 of 10)
    monkeypatch.undo()
    resumed = train(tiny_config(tiny_data, tmp_path / "resumed", **kw), progress=False)
    assert history_without_seconds(resumed) == history_without_seconds(full)


def test_periodic_evaluations_use_a_seeded_subset_and_the_last_one_all_queries(tiny_data, tmp_path):
    summary = train(tiny_config(tiny_data, tmp_path / "e", epochs=2, eval_max_queries=80, eval_subset_queries=30),
                    progress=False)
    hist = summary["history"]
    assert [h.get("eval_queries") for h in hist] == [30, 30, None]  # epochs 0, 1 on 30 queries; the last on 80
