import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from vixml_lib import inspection as insp
from vixml_lib.data import formats
from vixml_lib.errors import DataFormatError
from vixml_lib.metrics import evaluate

S30, C30 = 0.5, np.sqrt(3) / 2
# label embeddings at 0, 30, 60, 90 and 180 degrees: the score of a query at angle t is cos(t - angle)
LABELS = np.array([[1, 0], [C30, S30], [S30, C30], [0, 1], [-1, 0]], dtype=np.float32)
TEST_TITLES = ["Red oak chair", "Blue steel bowl", "red hat", "Green RED lamp"]


def write_dataset(d, n_labels=5):
    d.mkdir(parents=True, exist_ok=True)
    formats.write_texts(d / "lbl.raw.txt", [f"label {j}" for j in range(n_labels)])
    formats.write_texts(d / "trn.raw.txt", ["train a", "train b"])
    formats.write_xy(d / "trn_X_Y.txt", sp.csr_matrix(np.eye(2, n_labels, dtype=np.float32)))
    formats.write_texts(d / "tst.raw.txt", TEST_TITLES)
    Y = np.zeros((4, n_labels), np.float32)
    Y[0, 1] = 1
    Y[1, [0, 3]] = 1  # test row 1: labels 0 and 3
    Y[2, 4] = 1  # test row 2: label 4, which is also a filter pair
    Y[3, [2, 4]] = 1  # test row 3: labels 2 and 4
    formats.write_xy(d / "tst_X_Y.txt", sp.csr_matrix(Y))
    # (3, 0): drops label 0 from row 3's predictions; (2, 4): a filtered true pair; (0, 1): a row not evaluated
    formats.write_filter(d / "filter_labels_test.txt", np.array([[3, 0], [2, 4], [0, 1]]))
    formats.write_filter(d / "filter_labels_train.txt", np.zeros((0, 2), np.int64))
    return d


def write_run(folder, data_dir, emb_tst, emb_lbl, pred_rows, items_tst=None, items_lbl=None, final=None, skip=(),
              config=None):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"data_dir": str(data_dir), "seed": 0, "eval_max_queries": None, **(config or {})}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "metrics.json").write_text(json.dumps({"run": folder.name, "use_images": False, "final": final or {}}))
    np.save(folder / "embeddings_tst.npy", np.asarray(emb_tst, np.float32))
    np.save(folder / "embeddings_lbl.npy", np.asarray(emb_lbl, np.float32))
    pred = sp.lil_matrix((len(emb_tst), len(emb_lbl)), dtype=np.float32)
    for r, entries in enumerate(pred_rows):
        for lab, score in entries.items():
            pred[r, lab] = score
    formats.write_predictions(folder / "predictions_tst.npz", pred.tocsr())
    if items_tst is not None:
        np.save(folder / "items_tst.npy", np.asarray(items_tst, np.int64))
    if items_lbl is not None:
        np.save(folder / "items_lbl.npy", np.asarray(items_lbl, np.int64))
    for name in skip:
        (folder / name).unlink()
    return folder


@pytest.fixture
def hand_run(tmp_path):
    """Run A evaluates test rows 3, 1, 2 (in that order) with queries at 0, 90 and 180 degrees."""
    data = write_dataset(tmp_path / "data")
    queries = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    # top-2 predictions as training would store them; row 0 also holds the filtered label 0 at the top
    preds = [{0: 1.0, 1: C30, 2: S30}, {3: 1.0, 2: C30}, {3: 1e-3, 2: -S30}]  # (0 is not stored in a sparse matrix)
    folder = write_run(tmp_path / "train" / "a", data, queries, LABELS, preds, items_tst=[3, 1, 2])
    return insp.load_run(folder, data), data


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


def test_missing_files_and_disagreeing_shapes_are_clear_errors(tmp_path):
    data = write_dataset(tmp_path / "data")
    Q = np.eye(4, 2, dtype=np.float32)
    with pytest.raises(FileNotFoundError, match="nowhere: run folder not found"):
        insp.load_run(tmp_path / "nowhere", data)
    f = write_run(tmp_path / "no-lbl", data, Q, LABELS, [{}] * 4, skip=["embeddings_lbl.npy"])
    with pytest.raises(FileNotFoundError, match="no-lbl: missing embeddings_lbl.npy"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "bad-pred", data, Q, LABELS, [{}] * 4)
    formats.write_predictions(f / "predictions_tst.npz", sp.csr_matrix((4, 3)))
    with pytest.raises(DataFormatError, match="predictions_tst.npz.*does not match"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "bad-items", data, Q, LABELS, [{}] * 4, items_tst=[0, 1])
    with pytest.raises(DataFormatError, match="items_tst.npy: 2 entries"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "subset", data, Q[:3], LABELS, [{}] * 3)  # 3 rows, no items_tst.npy
    with pytest.raises(ValueError, match="items_tst.npy"):
        insp.load_run(f, data)
    f = write_run(tmp_path / "all", data, Q, LABELS, [{}] * 4)  # every test row: 0..n-1
    assert insp.load_run(f, data).items_tst.tolist() == [0, 1, 2, 3]
    with pytest.raises(FileNotFoundError, match=r"holds all, bad-items"):
        insp.load_runs(tmp_path, ["all", "missing-run"], data)


def test_seeded_sample_when_items_were_not_saved(tmp_path):
    data = write_dataset(tmp_path / "data")
    f = write_run(tmp_path / "r", data, np.eye(2, 2), LABELS, [{}] * 2, config={"eval_max_queries": 2, "seed": 3})
    expect = np.sort(np.random.default_rng(3).choice(4, 2, replace=False))  # training's sample rule
    assert insp.load_run(f, data).items_tst.tolist() == expect.tolist()


def test_label_subset_maps_truth_and_filters_into_run_space(tmp_path):
    data = write_dataset(tmp_path / "data")
    # labels 4, 2, 3 only (run columns 0, 1, 2)
    f = write_run(tmp_path / "r", data, np.array([[1, 0], [0, 1]]), LABELS[[4, 2, 3]], [{1: 0.5}, {2: 1.0}],
                  items_tst=[3, 2], items_lbl=[4, 2, 3])
    run = insp.load_run(f, data)
    assert run.truth.toarray().tolist() == [[1, 1, 0], [1, 0, 0]]
    assert run.exclude.toarray().tolist() == [[0, 0, 0], [1, 0, 0]]  # (2, 4) kept, (3, 0) has no column here
    assert insp.query_details(run, 3, k=1)["top"][0]["label"] == 2


def test_projection_shapes_sampling_and_determinism(hand_run):
    run, _ = hand_run
    rng = np.random.default_rng(0)
    run.emb_lbl = rng.normal(size=(300, 6)).astype(np.float32)
    run.emb_tst = rng.normal(size=(100, 6)).astype(np.float32)
    run.items_lbl = np.arange(300)
    run.items_tst = np.arange(100)
    run.data.titles = {"lbl": [f"l{i}" for i in range(300)], "tst": [f"q{i}" for i in range(100)]}
    p = insp.project_embeddings(run, max_points=80, seed=0)
    assert p.xy.shape == (80, 2) and (p.split == "lbl").sum() == 60 and (p.split == "tst").sum() == 20
    assert len(p.titles) == 80 and p.titles[0].startswith("l") and 0 < p.explained.sum() <= 1
    again = insp.project_embeddings(run, max_points=80, seed=0)
    assert np.array_equal(p.xy, again.xy) and np.array_equal(p.items, again.items)
    assert not np.array_equal(p.items, insp.project_embeddings(run, max_points=80, seed=1).items)
    assert insp.project_embeddings(run, max_points=10_000).xy.shape == (400, 2)
    # points on a line: the first axis carries everything
    run.emb_lbl = np.outer(np.linspace(-1, 1, 300), [1, 2, 0, 0, 0, 0]).astype(np.float32)
    line = insp.project_embeddings(run, max_points=10_000, include=("lbl",))
    assert np.allclose(line.xy[:, 1], 0, atol=1e-5) and line.explained[0] > 0.999
    with pytest.raises(ValueError, match="method"):
        insp.project_embeddings(run, method="mds")
    try:
        import umap  # noqa: F401
    except ImportError:  # optional methods are clear errors when their package is missing
        with pytest.raises(ImportError, match="umap-learn"):
            insp.project_embeddings(run, method="umap")


def test_static_figures_and_browser_on_the_tiny_demo_with_images(tmp_path):
    import matplotlib.pyplot as plt

    from vixml_lib.data.demo import make_demo_dataset
    from vixml_lib.data.prepare import prepare_dataset

    d = tmp_path / "demo-tiny"
    make_demo_dataset(d, preset="tiny", seed=0)
    ds = prepare_dataset(d)
    rng = np.random.default_rng(0)
    n_l, n_t = ds.n_labels, len(ds.texts["tst"])
    L = rng.normal(size=(n_l, 16)).astype(np.float32)
    L /= np.linalg.norm(L, axis=1, keepdims=True)
    items = np.sort(rng.choice(n_t, 40, replace=False))
    Q = L[[ds.Y["tst"][i].indices[0] for i in items]] + 0.3 * rng.normal(size=(40, 16)).astype(np.float32)
    runs = {}
    for name, noise in (("vixml", 0.0), ("text", 1.0)):
        Qn = Q + noise * rng.normal(size=Q.shape).astype(np.float32)
        S = Qn @ L.T
        preds = [{int(j): float(S[i, j]) for j in np.argsort(-S[i])[:10]} for i in range(40)]
        write_run(tmp_path / "train" / name, d, Qn, L, preds, items_tst=items)
    runs = insp.load_runs(tmp_path / "train", ["vixml", "text"])  # data_dir from config.yaml
    pair = insp.pair_runs(runs["vixml"], runs["text"])
    images = insp.ItemImages(d)
    item = int(pair.helped(1)[0])
    fig = insp.plot_query(list(runs.values()), item, k=5, images=images, note="test")
    n_images = sum(len(ax.images) for ax in fig.axes)
    assert n_images >= 10  # the query's and the labels' pictures (a few items have none)
    fig.savefig(tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 10_000
    plt.close(fig)
    proj = insp.project_embeddings(runs["vixml"], max_points=100)
    colour = insp.point_attribute(proj, "colour")
    assert len(colour) == 100 and set(colour) <= {"red", "green", "blue", "yellow", "orange", "purple", "pink",
                                                  "black", "white", "grey", "brown", "beige", "navy", "teal", "silver", "gold"}
    ax = insp.plot_embedding_map(proj, colour, "colour")
    plt.close(ax.figure)
    fig = insp.embedding_map_plotly(proj, colour, "colour")
    assert any(ds.texts["lbl"][proj.items[0]] in t for tr in fig.data for t in tr.hovertext)
    with pytest.raises(KeyError, match="no column 'shade'"):
        insp.point_attribute(proj, "shade")
    # the browser builds headless; its controls select queries without drawing (render=False)
    b = insp.QueryBrowser(list(runs.values()), k=5, images=images, render=False)
    assert b.rendered == [int(items[0])] and len(b.candidates) == 40
    b.order.value = "A beats B"
    assert b.rendered[-1] == int(pair.sorted_items()[0])
    b.slider.value = 2
    assert b.rendered[-1] == int(pair.sorted_items()[2]) and b.dropdown.value == b.rendered[-1]
    word = ds.texts["tst"][int(items[5])].split()[0]
    b.search.value = word.upper()
    assert set(b.candidates) == set(insp.find_queries(runs["vixml"], word)) and len(b.candidates) >= 1
    b.search.value = "no title has this"
    assert len(b.candidates) == 0
