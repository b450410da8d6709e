"""The inspection figures (matplotlib, and plotly for the interactive map; both imported
by the functions that draw).

* :func:`plot_query`: one test query in one or more runs: the query, each run's top k with
  images, scores and hit marks, and the missed true labels with their rank.
* :func:`plot_pair_differences`: histogram of the per-query P@k differences of a
  :class:`~vixml_lib.inspection.selection.RunPair`.
* :func:`plot_missed_ranks`: where the true labels missed by the top k rank, per run.
* :func:`plot_embedding_map` / :func:`embedding_map_plotly`: a
  :class:`~vixml_lib.inspection.projection.Projection`, static or interactive.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np

from .images import ItemImages, blank, first_image, tile
from .loading import InspectionRun, run_list
from .numbers import missed_ranks, query_details
from .projection import Projection
from .selection import RunPair

HIT, MISS, MISSED = "#2ca02c", "#d62728", "#ff7f0e"  # frame colours: true label in the top k, wrong one, missed


def _query_row(row_axes, item: int, q_imgs: list, details: list[dict], k: int) -> None:
    """Top row: up to three query images, then its title, number of true labels and P@k per run."""
    ncol = len(row_axes)
    for c in range(ncol):
        if c < max(1, len(q_imgs)) and c < 3:
            tile(row_axes[c], q_imgs[c] if c < len(q_imgs) else None, "", colour="#333333")
        else:
            blank(row_axes[c])
    row_axes[0].set_ylabel(f"query {item}", fontsize=9)
    text_at = min(max(1, len(q_imgs)), 3)
    if text_at < ncol:
        d0 = details[0]
        ptxt = "   ".join(f"{d['run']}: P@{k} {d['P@k']:.0f}" for d in details)
        row_axes[text_at].text(0.0, 0.5, "\n".join(textwrap.wrap(d0["title"], 70)[:3]) +
                               f"\n\n{d0['n_true']} true label(s)   {ptxt}",
                               transform=row_axes[text_at].transAxes, fontsize=10, va="center", ha="left")


def _top_row(row_axes, d: dict, k: int, images: ItemImages | None) -> None:
    """A run's top k: image, title, ``#rank score``; green frame = true label, red = not."""
    for c, ax in enumerate(row_axes):
        if c < len(d["top"]):
            t = d["top"][c]
            mark = "\u2713" if t["hit"] else "\u2717"
            tile(ax, first_image(images, "lbl", t["label"]), t["title"], f"{mark} #{t['rank']}  {t['score']:.3f}",
                 HIT if t["hit"] else MISS)
        else:
            blank(ax)
    row_axes[0].set_ylabel(f"{d['run']}\ntop {k} · P@{k} {d['P@k']:.0f}", fontsize=9)


def _missed_row(row_axes, d: dict, k: int, images: ItemImages | None, max_missed: int) -> None:
    """The true labels a run missed (best rank first, at most ``max_missed``), with their exact rank."""
    shown = d["missed"][:max_missed]
    for c, ax in enumerate(row_axes):
        if c < len(shown):
            m = shown[c]
            rank = f"{m['rank']}-{m['rank'] + m['ties']}" if m["ties"] else str(m["rank"])
            head = f"rank {rank}  {m['score']:.3f}" if m["rank"] > 0 else "filtered pair"
            tile(ax, first_image(images, "lbl", m["label"]), m["title"], head, MISSED)
        else:
            blank(ax)
    if shown:
        row_axes[0].set_ylabel(f"{d['run']}\nmissed ({len(d['missed'])})", fontsize=9)
        if len(d["missed"]) > len(shown):
            row_axes[len(shown) - 1].text(1.05, 0.5, f"+{len(d['missed']) - len(shown)} more",
                                          transform=row_axes[len(shown) - 1].transAxes, fontsize=8)
    else:
        row_axes[0].text(0.0, 0.5, f"{d['run']}: every true label is in the top {k}" if d["n_true"]
                         else f"{d['run']}: this query has no true label", transform=row_axes[0].transAxes,
                         fontsize=9, va="center")


def plot_query(runs: InspectionRun | Sequence[InspectionRun], item: int, k: int = 5, images: ItemImages | None = None,
               max_missed: int = 5, note: str = "", fig=None):
    """One test query (dataset row ``item``) in one or more runs: the query title and
    images, then per run its top ``k`` labels (image, title, score; green = true label, red
    = not) and the true labels it missed with their exact rank among all labels."""
    import matplotlib.pyplot as plt

    runs = run_list(runs)
    if not runs:
        raise ValueError("no run to draw")
    details = [query_details(r, item, k) for r in runs]
    ncol = max(k, max_missed, 4)
    nrow = 1 + 2 * len(runs)
    if fig is None:
        fig = plt.figure(figsize=(1.6 * ncol + 1.0, 2.05 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)  # (nrow, ncol)
    _query_row(axes[0], item, images.get("tst", item) if images is not None else [], details, k)
    for r, d in enumerate(details):
        _top_row(axes[1 + 2 * r], d, k, images)
        _missed_row(axes[2 + 2 * r], d, k, images, max_missed)
    fig.suptitle(f"Test query {item}" + (f" — {note}" if note else ""), fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - 0.35 / nrow, bottom=0.05, hspace=0.6, wspace=0.12)
    return fig


def plot_pair_differences(pair: RunPair, ax=None):
    """Histogram of the per-query differences P@k(a) - P@k(b) on the common queries."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    d = pair.diff
    step = 100 / pair.k
    edges = np.arange(-100 - step / 2, 100 + step, step)
    counts, _ = np.histogram(d, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    colours = ["#2ca02c" if c > 0 else "#d62728" if c < 0 else "#999999" for c in centres]
    ax.bar(centres, 100 * counts / max(len(d), 1), width=step * 0.85, color=colours)
    lo, hi = (d.min(), d.max()) if len(d) else (-step, step)
    ax.set_xlim(min(lo, -step) - step, max(hi, step) + step)
    s = pair.summary()
    ax.set(xlabel=f"P@{pair.k}({pair.a.name}) - P@{pair.k}({pair.b.name})", ylabel="% of queries",
           title=f"{pair.a.name} better on {100 * s['helped_frac']:.1f}%, worse on {100 * s['hurt_frac']:.1f}%, "
                 f"tie on {100 * s['tie_frac']:.1f}% of {s['n_common']} queries")
    ax.title.set_fontsize(9)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_missed_ranks(runs: dict[str, InspectionRun] | Sequence[InspectionRun], k: int = 5, ax=None,
                      max_queries: int | None = 5000, seed: int = 0):
    """Cumulative share of the missed true labels found within rank r (log scale), per run
    (:func:`~vixml_lib.inspection.numbers.missed_ranks`)."""
    import matplotlib.pyplot as plt

    runs = run_list(runs)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    for r in runs:
        missed = missed_ranks(r, k, max_queries, seed)
        missed = np.sort(missed[missed > 0])
        if len(missed):
            ax.step(missed, np.arange(1, len(missed) + 1) / len(missed) * 100, where="post",
                    label=f"{r.name} ({len(missed)} missed)")
    ax.set_xscale("log")
    ax.set(xlabel="exact rank among all labels (tied scores: best case)", ylabel="% of missed true labels",
           ylim=(0, 101), title=f"Where the true labels missed by the top {k} rank")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def _categories(values: np.ndarray | None, max_categories: int) -> tuple[np.ndarray, list[str]]:
    """``(values, categories)``: the ``max_categories`` most frequent values, the rest "other"."""
    if values is None:
        return np.zeros(0, str), []
    vals, counts = np.unique(values, return_counts=True)
    keep = list(vals[np.argsort(-counts, kind="stable")][:max_categories])
    if len(vals) > max_categories:
        values = np.where(np.isin(values, keep), values, "other")
        keep.append("other")
    return np.asarray(values), [str(v) for v in keep]


_NAMED = {"black": "#222222", "white": "#dddddd", "grey": "#888888", "gray": "#888888", "silver": "#b0b0b0",
          "red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "yellow": "#e6c619", "orange": "#ff7f0e",
          "purple": "#9467bd", "pink": "#e377c2", "brown": "#8c564b", "beige": "#d8c9a3", "navy": "#1b2a6b",
          "teal": "#17becf", "gold": "#c9a227", "cyan": "#17becf", "other": "#cccccc"}


def _palette(cats: list[str]) -> dict[str, str]:
    """A colour per category: the colour itself when every category names one, else tab20."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    named = all(c in _NAMED for c in cats)
    return {c: (_NAMED[c] if named else ("#cccccc" if c == "other" else matplotlib.colors.to_hex(cmap(i % 20))))
            for i, c in enumerate(cats)}


def _axis_label(proj: Projection, i: int) -> str:
    axis = "PC" if proj.method == "pca" else proj.method.upper()
    share = f" ({100 * proj.explained[i]:.1f}%)" if proj.explained is not None else ""
    return f"{axis}{i + 1}{share}"


def plot_embedding_map(proj: Projection, colour: np.ndarray | None = None, colour_name: str = "", ax=None,
                       max_categories: int = 12, title: str | None = None):
    """Static scatter of a :class:`Projection`: labels as dots, queries as crosses, coloured
    by a categorical attribute (most frequent ``max_categories``, the rest "other")."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 6))
    values, cats = _categories(colour, max_categories)
    pal = _palette(cats) if cats else {}
    markers = {"lbl": ("o", 10, "labels"), "tst": ("x", 14, "queries")}
    for s, (mk, size, _) in markers.items():
        sel = proj.split == s
        if not sel.any():
            continue
        c = [pal[v] for v in values[sel]] if cats else ("#1f77b4" if s == "lbl" else "#d62728")
        ax.scatter(proj.xy[sel, 0], proj.xy[sel, 1], s=size, marker=mk, c=c, alpha=0.6,
                   linewidths=0.8 if mk == "x" else 0)
    handles = [Line2D([], [], marker=m, ls="", color="#444444", label=lab) for s, (m, _, lab) in markers.items()
               if (proj.split == s).any()]
    handles += [Line2D([], [], marker="s", ls="", color=pal[c], label=c) for c in cats]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              title=colour_name or None)
    ax.set(xlabel=_axis_label(proj, 0), ylabel=_axis_label(proj, 1),
           title=title or f"Embedding map ({len(proj.items)} points)")
    ax.grid(alpha=0.2)
    return ax


def embedding_map_plotly(proj: Projection, colour: np.ndarray | None = None, colour_name: str = "",
                         max_categories: int = 12, title: str | None = None, height: int = 600):
    """Interactive plotly scatter of a :class:`Projection`, titles on hover: labels as dots,
    queries as crosses, axes titled as in :func:`plot_embedding_map`. Coloured, the legend
    has one entry per colour (a click hides that colour's labels and queries; the legend
    title names the symbols); uncoloured, one per kind of point. No fixed width: the
    figure fills its container."""
    import plotly.graph_objects as go

    values, cats = _categories(colour, max_categories)
    pal = _palette(cats) if cats else {}
    fig = go.Figure()
    kinds = {"lbl": ("circle", "label", "labels"), "tst": ("x", "query", "queries")}
    in_legend: set[str] = set()
    for s, (symbol, one, many) in kinds.items():
        for c in (cats or [None]):
            sel = (proj.split == s) & ((values == c) if c is not None else True)
            if not np.any(sel):
                continue
            idx = np.flatnonzero(sel)
            extra = (lambda i: f"<br>{colour_name}: {values[i]}") if c is not None else (lambda i: "")
            text = [f"{one} {proj.items[i]}: {proj.titles[i]}{extra(i)}" for i in idx]
            group = str(c) if c is not None else s
            fig.add_trace(go.Scattergl(
                x=proj.xy[idx, 0], y=proj.xy[idx, 1], mode="markers", name=str(c) if c is not None else many,
                legendgroup=group, showlegend=group not in in_legend, hovertext=text, hoverinfo="text",
                marker=dict(symbol=symbol, size=5 if s == "lbl" else 7, opacity=0.7,
                            color=pal.get(c, "#1f77b4" if s == "lbl" else "#d62728"))))
            in_legend.add(group)
    legend_title = f"{colour_name}<br>\u25cf labels, \u2715 queries" if cats else ""
    fig.update_layout(title=title or f"Embedding map ({proj.method}, {len(proj.items)} points)"
                      + (f", coloured by {colour_name}" if colour_name else ""),
                      xaxis_title=_axis_label(proj, 0), yaxis_title=_axis_label(proj, 1), autosize=True,
                      height=height, template="plotly_white", margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(font=dict(size=10), itemsizing="constant", tracegroupgap=0,
                                  title=dict(text=legend_title, font=dict(size=11))))
    return fig
