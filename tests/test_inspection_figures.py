"""Figures, item images and the query browser, on the tiny demo dataset with images."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from inspection_data import write_run

from vixml_lib import inspection as insp
from vixml_lib.runs import PipelineFolder


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
        write_run(PipelineFolder(tmp_path).train_run(name).path, d, Qn, L, preds, items_tst=items)
    runs = insp.load_runs(PipelineFolder(tmp_path).train_dir, ["vixml", "text"])  # data_dir from config.yaml
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
    assert len(colour) == 100 and set(colour) <= {"red", "green", "blue", "yellow", "orange", "purple", "pink", "black",
                                                  "white", "grey", "brown", "beige", "navy", "teal", "silver", "gold"}
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
