"""Run-vs-run comparisons from saved run folders: means equal the reported metrics, intervals."""
import numpy as np
import pytest
from train_data import tiny_config

from vixml_lib.comparisons import comparison_rows, per_query_of_run, seed_difference_rows
from vixml_lib.training import train


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, kw in {"a": {}, "b": {"lr": 1e-5}, "a-seed1": {"seed": 1}, "b-seed1": {"lr": 1e-5, "seed": 1}}.items():
        summary = train(tiny_config(tiny_data, root / name, epochs=1, save_embeddings=True, eval_max_queries=60,
                                    **kw), progress=False)
        out[name] = (root / name, summary)
    return out


def test_per_query_means_are_the_reported_metrics(two_runs):
    folder, summary = two_runs["a"]
    values, items = per_query_of_run(folder)
    assert len(items) == 60
    for m in ("P@1", "P@5", "PSP@5"):
        assert np.mean(values[m]) == pytest.approx(summary["final"][m], abs=1e-6)


def test_a_run_against_itself_is_zero_within_noise_and_a_pair_is_signed(two_runs):
    folders = {k: v[0] for k, v in two_runs.items()}
    rows = comparison_rows(folders, [("a", "a"), ("a", "b")], metrics=("P@1", "P@5"), n_resamples=500)
    assert rows[0]["P@1"] == "+0.0 [0.0, 0.0] p=1.000" and rows[0]["within noise"] == "P@1, P@5"
    diff = two_runs["a"][1]["final"]["P@1"] - two_runs["b"][1]["final"]["P@1"]
    assert rows[1]["P@1"].startswith(f"{diff:+.1f} [") and rows[1]["queries"] == 60


def test_differences_over_seeds(two_runs):
    by_seed = {"a": {0: two_runs["a"][0], 1: two_runs["a-seed1"][0]},
               "b": {0: two_runs["b"][0], 1: two_runs["b-seed1"][0]}}
    row = seed_difference_rows(by_seed, [("a", "b")], metrics=("P@1",))[0]
    d = [two_runs[f"a{s}"][1]["final"]["P@1"] - two_runs[f"b{s}"][1]["final"]["P@1"] for s in ("", "-seed1")]
    assert row["seeds"] == 2 and row["P@1"].startswith(f"{np.mean(d):+.1f} [")


def test_runs_of_different_test_samples_are_refused(two_runs, tiny_data, tmp_path):
    other = tmp_path / "other"
    train(tiny_config(tiny_data, other, epochs=1, save_embeddings=True, eval_max_queries=50), progress=False)
    with pytest.raises(ValueError, match="different test queries"):
        comparison_rows({"a": two_runs["a"][0], "o": other}, [("a", "o")], n_resamples=100)
