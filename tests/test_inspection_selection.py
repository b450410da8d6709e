"""Query selection: text search, worst / best queries, pairs of runs, static picks."""
import numpy as np
import pytest
from inspection_data import LABELS, make_hand_run, write_run

from vixml_lib import inspection as insp


@pytest.fixture
def hand_run(tmp_path):
    """Run A evaluates test rows 3, 1, 2 (in that order) with queries at 0, 90 and 180 degrees."""
    return make_hand_run(tmp_path)


def test_search_and_worst_best_ordering(hand_run):
    run, _ = hand_run
    assert insp.find_queries(run, "RED").tolist() == [2, 3]  # row 0 mentions red but was not evaluated
    assert insp.find_queries(run, "  steel ").tolist() == [1]
    assert insp.find_queries(run, "").tolist() == [1, 2, 3] and insp.find_queries(run, "nothing").tolist() == []
    # P@2 by item: 3 -> 50, 1 -> 50, 2 -> 0; ties (same P@2 and number of labels) by test row
    assert insp.worst_queries(run, None, k=2).tolist() == [2, 1, 3]
    assert insp.best_queries(run, 2, k=2).tolist() == [1, 3]
    # P@1: 3 -> 0 (2 labels), 1 -> 100, 2 -> 0 (1 label): among the worst, more true labels first
    assert insp.worst_queries(run, None, k=1).tolist() == [3, 2, 1]
    assert insp.best_queries(run, None, k=1).tolist() == [1, 2, 3]


def test_pairing_two_runs_on_differing_query_sets(hand_run, tmp_path):
    a, data = hand_run
    rng = np.random.default_rng(0)
    # run B evaluated test rows 0, 1, 2, 3: no hit for row 1, both labels of row 3
    preds = [{1: 0.9}, {1: 0.9, 4: 0.8}, {3: 0.5}, {2: 0.9, 4: 0.8}]
    b = insp.load_run(write_run(tmp_path / "train" / "b", data, rng.normal(size=(4, 2)), LABELS, preds,
                                items_tst=[0, 1, 2, 3]), data=a.data)
    pair = insp.pair_runs(a, b, k=2)
    assert pair.items.tolist() == [1, 2, 3]
    assert pair.p_a.tolist() == [50, 0, 50] and pair.p_b.tolist() == [0, 0, 100]
    assert pair.diff.tolist() == [50, 0, -50]
    assert pair.helped().tolist() == [1] and pair.hurt().tolist() == [3]
    assert pair.sorted_items().tolist() == [1, 2, 3] and pair.sorted_items(descending=False).tolist() == [3, 2, 1]
    s = pair.summary()
    assert s["n_common"] == 3 and s["helped_frac"] == s["hurt_frac"] == s["tie_frac"] == pytest.approx(1 / 3)
    chosen = insp.choose_static_queries(pair, n=3, k=2, seed=0)
    assert [i for _, i in chosen] == [1, 3, 2] and chosen[0][0] == "a beats b" and chosen[2][0] == "random"
    assert [i for _, i in insp.choose_static_queries(pair, n=3, k=2, fixed=[2, 1])] == [1, 3, 2]
    with pytest.raises(ValueError, match="not among"):
        insp.choose_static_queries(pair, n=3, fixed=[0])
    summary = insp.inspection_summary([a, b], pair, k=2)
    assert summary["runs"]["a"]["P@2"] == pytest.approx(100 / 3) and summary["pair"]["n_common"] == 3
