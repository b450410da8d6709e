"""The ipywidgets query browser (:class:`QueryBrowser`) over the test queries of one or two
runs; built without display, so it also runs headless (ipywidgets, matplotlib and IPython
are imported when it is built or draws)."""
from __future__ import annotations

import base64
import html
import io
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .images import ItemImages
from .loading import InspectionRun
from .numbers import per_query_metrics
from .plots import plot_query
from .selection import best_queries, find_queries, pair_runs, worst_queries


class QueryBrowser:
    """An ipywidgets browser over the test queries of one or two runs.

    Controls: an order toggle (by row, worst / best P@k of the first run, and with two runs
    where the first beats / loses to the second), a text box searching titles
    (case-insensitive), and a slider and a dropdown over the same list of queries
    (:attr:`candidates`: the first ``max_options`` matches in that order; the status line
    says when there are more). The slider's range is the dropdown's list, and moving
    either moves the other. The selected query is drawn with :func:`plot_query`, one PNG
    per run side by side; each is an ``<img data-item=...>`` swapped in whole (no half-drawn
    view), with a header naming the query (``data-item`` too). While a figure is drawn the
    old one is faded and the header says which query is coming. An empty search clears
    the view. Figures are cached (``cache_size`` per run). ``.widget`` is the box to display.

    ``render=False`` skips drawing (tests of the controls); :attr:`rendered` lists the
    items selected, newest last; :attr:`current` is the item on screen (None: none)."""

    ORDERS = ("by row", "worst P@k", "best P@k", "A beats B", "B beats A")

    def __init__(self, runs: Sequence[InspectionRun], k: int = 5, images: ItemImages | None = None,
                 max_options: int = 500, render: bool = True, figure_scale: float = 0.8, dpi: int = 80,
                 cache_size: int = 64):
        import ipywidgets as w

        self.runs = list(runs)[:2]
        if not self.runs:
            raise ValueError("QueryBrowser needs at least one run")
        if max_options < 1:
            raise ValueError(f"max_options must be at least 1, got {max_options}")
        self.k, self.images, self.max_options, self.scale, self.dpi = k, images, max_options, figure_scale, dpi
        self.pair = pair_runs(self.runs[0], self.runs[1], k) if len(self.runs) == 2 else None
        orders = [o.replace("P@k", f"P@{k}") for o in self.ORDERS[: 5 if self.pair else 3]]
        self.order = w.ToggleButtons(options=orders, value=orders[0], description="order")
        self.search = w.Text(value="", placeholder="search titles", description="search", continuous_update=False)
        self.slider = w.IntSlider(value=0, min=0, max=0, description="query #", continuous_update=False)
        self.dropdown = w.Dropdown(options=[], description="query", layout=w.Layout(width="70%"))
        self.status = w.HTML()
        self.header = w.HTML()
        width = f"{100 // len(self.runs) - 1}%"
        self.views = [w.HTML(layout=w.Layout(width=width)) for _ in self.runs]
        self.candidates = np.zeros(0, np.int64)  # (n,) dataset test rows the slider and dropdown walk
        self.n_matches = 0  # queries matching the order and search (candidates: the first max_options)
        self.current: int | None = None
        self.rendered: list[int] = []
        self._render_enabled = render
        self._cache: list[OrderedDict[int, str]] = [OrderedDict() for _ in self.runs]
        self._cache_size = cache_size
        self._busy = False
        self.order.observe(self._on_filter, "value")
        self.search.observe(self._on_filter, "value")
        self.slider.observe(self._on_slider, "value")
        self.dropdown.observe(self._on_dropdown, "value")
        self.widget = w.VBox([w.HBox([self.order]), w.HBox([self.search, self.status]), self.slider, self.dropdown,
                              self.header, w.HBox(self.views)])
        self._on_filter()

    # the queries in the chosen order, restricted by the search
    def compute_candidates(self, order: str, text: str) -> np.ndarray:
        """Every matching test row in ``order`` (not capped at ``max_options``)."""
        a = self.runs[0]
        base = self.pair.items if self.pair else np.sort(a.items_tst)
        if order.startswith("worst"):
            ranked = worst_queries(a, None, self.k)
        elif order.startswith("best"):
            ranked = best_queries(a, None, self.k)
        elif order == "A beats B":
            ranked = self.pair.sorted_items(descending=True)
        elif order == "B beats A":
            ranked = self.pair.sorted_items(descending=False)
        else:
            ranked = base
        if self.pair is not None:
            ranked = ranked[np.isin(ranked, base)]
        if text.strip():
            ranked = ranked[np.isin(ranked, find_queries(a, text))]
        return ranked

    def _label(self, item: int) -> str:
        ps = [f"{per_query_metrics(r, self.k)['P@k'][r.positions([item])[0]]:.0f}" for r in self.runs]
        return f"{item}: {self.runs[0].title('tst', item)[:70]}  (P@{self.k} {' / '.join(ps)})"

    def _on_filter(self, *_):
        matches = self.compute_candidates(self.order.value, self.search.value)
        self.n_matches = len(matches)
        self.candidates = matches[: self.max_options]
        n = len(self.candidates)
        more = f" (the first {n} shown: refine the search)" if self.n_matches > n else ""
        names = [html.escape(r.name) for r in self.runs]
        pair = "" if self.pair is None else f" · A = {names[0]}, B = {names[1]}"
        self.status.value = f"&nbsp;{self.n_matches} queries{more}{pair}"
        self._busy = True
        try:
            self.slider.value = 0
            self.dropdown.options = [(self._label(i), int(i)) for i in self.candidates]
            self.slider.max = max(n - 1, 0)
            self.slider.disabled = self.dropdown.disabled = n == 0
            self.dropdown.value = int(self.candidates[0]) if n else None
        finally:
            self._busy = False
        self.show(0)

    def _on_slider(self, change):
        if not self._busy:
            self.select(int(change["new"]))

    def _on_dropdown(self, change):
        if self._busy or change["new"] is None:
            return
        self.select(int(np.flatnonzero(self.candidates == change["new"])[0]))

    def select(self, index: int) -> None:
        """Show candidate ``index``, with the slider and the dropdown moved to it."""
        if not len(self.candidates):
            return self.show(0)
        index = int(np.clip(index, 0, len(self.candidates) - 1))
        self._busy = True
        try:
            self.slider.value = index
            self.dropdown.value = int(self.candidates[index])
        finally:
            self._busy = False
        self.show(index)

    def show(self, index: int) -> None:
        """Draw candidate ``index`` into the views; with no candidates, clear them."""
        if not len(self.candidates):
            self.current = None
            text = html.escape(self.search.value.strip())
            self.header.value = f"<i>no query matches {text!r}</i>" if text else "<i>no query to show</i>"
            for view in self.views:
                view.value = ""
            return
        item = int(self.candidates[min(index, len(self.candidates) - 1)])
        self.current = item
        self.rendered.append(item)
        title = html.escape(self.runs[0].title("tst", item))
        final = f'<b class="vixml-query" data-item="{item}">query {item}</b>: {title}'
        if not self._render_enabled:
            self.header.value = final
            return
        if any(item not in c for c in self._cache):
            self.header.value = f'<span data-item="pending">drawing query {item} …</span>'
            for view in self.views:
                view.value = f'<div style="opacity:0.3">{view.value}</div>' if view.value else ""
        figures = [self.figure_html(r, item) for r in range(len(self.runs))]
        self.header.value = final
        for view, fig in zip(self.views, figures):
            view.value = fig

    def figure_html(self, run_index: int, item: int) -> str:
        """Run ``run_index``'s figure of ``item`` as an ``<img>`` (PNG, cached)."""
        cache = self._cache[run_index]
        if item in cache:
            cache.move_to_end(item)
            return cache[item]
        import matplotlib.pyplot as plt

        run = self.runs[run_index]
        fig = plot_query(run, item, self.k, self.images)
        fig.set_size_inches(fig.get_size_inches() * self.scale)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        plt.close(fig)
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        name = html.escape(run.name)
        cache[item] = (f'<img class="vixml-query-figure" data-item="{item}" data-run="{name}" '
                       f'alt="{name}: query {item}" style="max-width:100%" src="data:image/png;base64,{png}">')
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return cache[item]
