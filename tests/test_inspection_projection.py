"""2-D projections of a run's embeddings."""
import numpy as np
import pytest
from inspection_data import make_hand_run

from vixml_lib import inspection as insp


@pytest.fixture
def hand_run(tmp_path):
    """Run A evaluates test rows 3, 1, 2 (in that order) with queries at 0, 90 and 180 degrees."""
    return make_hand_run(tmp_path)


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
