"""The query browser's controls and views, without a browser (tests/test_browser.py drives it in Chromium)."""
import matplotlib

matplotlib.use("Agg")

import re

import numpy as np
import pytest
from inspection_data import LABELS, make_hand_run, write_run

from vixml_lib import inspection as insp


@pytest.fixture
def two_hand_runs(tmp_path):
    a, data = make_hand_run(tmp_path)
    queries = np.array([[0, 1], [1, 0], [-1, 0]], dtype=np.float32)
    preds = [{3: 1.0, 2: 0.8}, {0: 1.0, 1: 0.8}, {4: 1.0, 3: 0.1}]
    b = insp.load_run(write_run(tmp_path / "train" / "b", data, queries, LABELS, preds, items_tst=[3, 1, 2]), data)
    return a, b


def shown_items(browser):
    """Dataset rows named by the header and by each run's image (``data-item``)."""
    header = re.findall(r'data-item="(\d+)"', browser.header.value)
    views = [re.findall(r'<img[^>]*data-item="(\d+)"', v.value) for v in browser.views]
    return [int(x) for x in header], [[int(x) for x in v] for v in views]


def test_slider_range_is_the_dropdown_list_and_both_move_together(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    from inspection_data import write_dataset

    write_dataset(data)
    runs = []
    for name in ("a", "b"):
        q = rng.normal(size=(4, 2)).astype(np.float32)
        preds = [{int(j): float(s) for j, s in enumerate(LABELS @ row) if s > 0} for row in q]
        runs.append(insp.load_run(write_run(tmp_path / "train" / name, data, q, LABELS, preds,
                                            items_tst=[0, 1, 2, 3]), data))
    b = insp.QueryBrowser(runs, k=2, max_options=3, render=False)
    assert b.n_matches == 4 and b.candidates.tolist() == [0, 1, 2]  # the first 3 by row
    assert b.slider.max + 1 == len(b.dropdown.options) == len(b.candidates) == 3
    assert "4 queries (the first 3 shown" in b.status.value
    for i in (2, 0, 1):
        b.slider.value = i
        assert b.dropdown.value == b.candidates[i] == b.current == b.rendered[-1]
    b.dropdown.value = int(b.candidates[2])
    assert b.slider.value == 2 and b.current == b.candidates[2]
    b.search.value = "RED"  # rows 0, 2, 3 have "red" in their title
    assert b.candidates.tolist() == [0, 2, 3] and b.slider.max == 2 and len(b.dropdown.options) == 3
    assert b.slider.value == 0 and b.dropdown.value == 0 == b.current
    b.order.value = "B beats A"
    assert b.slider.max + 1 == len(b.dropdown.options) == len(b.candidates) == 3
    assert [v for _, v in b.dropdown.options] == b.candidates.tolist() and b.current == b.candidates[0]
    with pytest.raises(ValueError, match="max_options"):
        insp.QueryBrowser(runs, max_options=0)


def test_views_agree_with_the_controls_and_an_empty_search_clears_them(two_hand_runs):
    a, b = two_hand_runs
    br = insp.QueryBrowser([a, b], k=2, dpi=40)
    assert shown_items(br) == ([1], [[1], [1]])  # by row: test rows 1, 2, 3
    assert [r.name for r in (a, b)] == re.findall(r'data-run="(\w+)"', br.views[0].value + br.views[1].value)
    br.slider.value = 2
    assert br.dropdown.value == 3 and shown_items(br) == ([3], [[3], [3]])
    assert "Green RED lamp" in br.header.value
    br.search.value = "no title has this"
    assert br.current is None and all(v.value == "" for v in br.views)
    assert "no query matches" in br.header.value and br.dropdown.options == () and br.slider.disabled
    br.search.value = "hat"
    assert br.candidates.tolist() == [2] and shown_items(br) == ([2], [[2], [2]]) and not br.slider.disabled
    cached = br.views[0].value
    br.search.value = ""
    br.slider.value = 1
    assert br.views[0].value == cached  # the cached figure, not drawn again
