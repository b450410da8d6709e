"""The ipywidgets query browser (:class:`QueryBrowser`) over the test queries of one or two
runs; built without display, so it also runs headless (ipywidgets, matplotlib and IPython
are imported when it is built or draws)."""
from __future__ import annotations

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
    (case-insensitive), a slider and a dropdown over the resulting queries. The selected
    query is drawn with :func:`plot_query`, one output per run, side by side.
    Building it displays nothing; ``.widget`` is the box to display. Works headless
    (the callbacks only draw into ``Output`` widgets)."""

    ORDERS = ("by row", "worst P@k", "best P@k", "A beats B", "B beats A")

    def __init__(self, runs: Sequence[InspectionRun], k: int = 5, images: ItemImages | None = None,
                 max_options: int = 200, render: bool = True, figure_scale: float = 0.8):
        import ipywidgets as w

        self.runs = list(runs)[:2]
        if not self.runs:
            raise ValueError("QueryBrowser needs at least one run")
        self.k, self.images, self.max_options, self.scale = k, images, max_options, figure_scale
        self.pair = pair_runs(self.runs[0], self.runs[1], k) if len(self.runs) == 2 else None
        orders = [o.replace("P@k", f"P@{k}") for o in self.ORDERS[: 5 if self.pair else 3]]
        self.order = w.ToggleButtons(options=orders, value=orders[0], description="order")
        self.search = w.Text(value="", placeholder="search titles", description="search", continuous_update=False)
        self.slider = w.IntSlider(value=0, min=0, max=0, description="query #", continuous_update=False)
        self.dropdown = w.Dropdown(options=[], description="query", layout=w.Layout(width="70%"))
        self.status = w.HTML()
        self.outputs = [w.Output(layout=w.Layout(width=f"{100 // len(self.runs) - 1}%")) for _ in self.runs]
        self.candidates = np.zeros(0, np.int64)
        self._busy = False
        self.rendered: list[int] = []  # items drawn, newest last (for tests)
        self._render_enabled = render
        self.order.observe(self._on_filter, "value")
        self.search.observe(self._on_filter, "value")
        self.slider.observe(self._on_slider, "value")
        self.dropdown.observe(self._on_dropdown, "value")
        self.widget = w.VBox([w.HBox([self.order]), w.HBox([self.search, self.status]), self.slider, self.dropdown,
                              w.HBox(self.outputs)])
        self._on_filter()

    # the queries in the chosen order, restricted by the search
    def compute_candidates(self, order: str, text: str) -> np.ndarray:
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
        ps = []
        for r in self.runs:
            pos = r.positions([item])[0]
            ps.append(f"{per_query_metrics(r, self.k)['P@k'][pos]:.0f}")
        return f"{item}: {self.runs[0].title('tst', item)[:70]}  (P@{self.k} {' / '.join(ps)})"

    def _on_filter(self, *_):
        self.candidates = self.compute_candidates(self.order.value, self.search.value)
        n = len(self.candidates)
        self.status.value = f"&nbsp;{n} queries" + ("" if self.pair is None else
                                                    f" · A = {self.runs[0].name}, B = {self.runs[1].name}")
        self._busy = True
        try:
            self.dropdown.options = [(self._label(i), int(i)) for i in self.candidates[: self.max_options]]
            self.slider.max = max(n - 1, 0)
            self.slider.value = 0
            self.dropdown.value = int(self.candidates[0]) if n else None
        finally:
            self._busy = False
        self.show(0)

    def _on_slider(self, change):
        if self._busy:
            return
        self._busy = True
        try:
            if change["new"] < min(len(self.candidates), self.max_options):
                self.dropdown.value = int(self.candidates[change["new"]])
        finally:
            self._busy = False
        self.show(change["new"])

    def _on_dropdown(self, change):
        if self._busy or change["new"] is None:
            return
        idx = int(np.flatnonzero(self.candidates == change["new"])[0])
        self._busy = True
        try:
            self.slider.value = idx
        finally:
            self._busy = False
        self.show(idx)

    def show(self, index: int) -> None:
        """Draw candidate ``index`` into the outputs (nothing when there are no candidates)."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        for out in self.outputs:
            out.clear_output(wait=True)
        if not len(self.candidates):
            with self.outputs[0]:
                print("no query matches")
            return
        item = int(self.candidates[min(index, len(self.candidates) - 1)])
        self.rendered.append(item)
        if not self._render_enabled:
            return
        for run, out in zip(self.runs, self.outputs):
            with out:
                fig = plot_query(run, item, self.k, self.images)
                fig.set_size_inches(fig.get_size_inches() * self.scale)
                display(fig)
                plt.close(fig)
