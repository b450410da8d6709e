"""Per-query numbers: P@k, exact true-label ranks, query details, missed-rank summaries."""
import numpy as np
import pytest
import scipy.sparse as sp
from inspection_data import make_hand_run, write_run

from vixml_lib import inspection as insp
from vixml_lib.data import formats
from vixml_lib.metrics import evaluate


@pytest.fixture
def hand_run(tmp_path):
    """Run A evaluates test rows 3, 1, 2 (in that order) with queries at 0, 90 and 180 degrees."""
    return make_hand_run(tmp_path)


def test_per_query_precision_hits_and_exact_ranks_by_hand(hand_run):
    run, _ = hand_run
    assert run.items_tst.tolist() == [3, 1, 2] and run.positions([1, 2, 3]).tolist() == [1, 2, 0]
    assert run.pred[0, 0] == 0 and run.pred[0, 1] > 0  # the filter pair (3, 0) left the predictions
    pq = insp.per_query_metrics(run, k=2)
    assert pq["labels"].tolist() == [[1, 2], [3, 2], [3, 2]]
    assert pq["hits"].tolist() == [[False, True], [True, False], [False, False]]
    assert pq["P@k"].tolist() == [50, 50, 0] and pq["n_true"].tolist() == [2, 2, 1]
    assert insp.per_query_metrics(run, k=1)["P@k"].tolist() == [0, 100, 0]
    r = insp.true_label_ranks(run)
    got = {(int(a), int(b)): (int(c), int(t)) for a, b, c, t in zip(r["row"], r["label"], r["rank"], r["ties"])}
    # row 0 (0 deg, label 0 filtered): 1 .87, 2 .5, 3 0, 4 -1; row 1 (90 deg): 3 1, 2 .87, 1 .5, 0 and 4 tie at 0;
    # row 2: its only true label is the filtered pair (2, 4) -> -1
    assert got == {(0, 2): (2, 0), (0, 4): (4, 0), (1, 0): (4, 1), (1, 3): (1, 0), (2, 4): (-1, 0)}
    sub = insp.true_label_ranks(run, rows=[1])
    assert sub["row"].tolist() == [1, 1] and sub["rank"].tolist() == [4, 1]
    d = insp.query_details(run, 1, k=2)
    assert d["title"] == "Blue steel bowl" and d["P@k"] == 50
    assert [(t["label"], t["hit"]) for t in d["top"]] == [(3, True), (2, False)]
    assert [(m["label"], m["rank"], m["ties"]) for m in d["missed"]] == [(0, 4, 1)]
    assert insp.query_details(run, 2, k=2)["missed"][0]["rank"] == -1
    summary = insp.miss_rank_summary(run, k=2)
    assert summary["missed_pairs"] == 3 and summary["missed_filtered"] == 1 and summary["missed_median_rank"] == 4
    with pytest.raises(ValueError, match="not evaluated"):
        run.positions([0])


def test_ranks_match_a_brute_force_loop_and_precision_matches_the_metrics(tmp_path):
    rng = np.random.default_rng(1)
    n_q, n_l = 30, 40
    d = tmp_path / "data"
    d.mkdir()
    formats.write_texts(d / "lbl.raw.txt", [f"l{j}" for j in range(n_l)])
    formats.write_texts(d / "trn.raw.txt", ["t"])
    formats.write_xy(d / "trn_X_Y.txt", sp.csr_matrix((1, n_l), dtype=np.float32))
    formats.write_texts(d / "tst.raw.txt", [f"q{i}" for i in range(n_q)])
    Y = sp.csr_matrix((rng.random((n_q, n_l)) < 0.1).astype(np.float32))
    formats.write_xy(d / "tst_X_Y.txt", Y)
    filt = np.unique(np.stack([rng.integers(0, n_q, 25), rng.integers(0, n_l, 25)], 1), axis=0)
    formats.write_filter(d / "filter_labels_test.txt", filt)
    Q = rng.normal(size=(n_q, 8)).astype(np.float32)
    L = rng.normal(size=(n_l, 8)).astype(np.float32)
    S = Q @ L.T
    preds = [{int(j): float(S[i, j]) for j in np.argsort(-S[i])[:7]} for i in range(n_q)]
    run = insp.load_run(write_run(tmp_path / "r", d, Q, L, preds), d)
    S_ex = S.copy()
    S_ex[filt[:, 0], filt[:, 1]] = -np.inf
    r = insp.true_label_ranks(run, block_elems=100)  # several blocks
    for i, lab, rank in zip(r["row"], r["label"], r["rank"]):
        expect = -1 if np.isinf(S_ex[i, lab]) else 1 + int((S_ex[i] > S_ex[i, lab]).sum())
        assert rank == expect
    assert len(r["row"]) == Y.nnz
    sample = insp.miss_rank_summary(run, 5, max_queries=10)
    assert sample["rank_queries"] == 10 and sample["true_pairs"] < Y.nnz
    assert insp.miss_rank_summary(run, 5)["rank_queries"] == n_q
    pred = formats.apply_filter(run.pred, filt)
    assert np.isclose(insp.per_query_metrics(run, 5)["P@k"].mean(), evaluate(pred, Y, k=5)["P@5"])
