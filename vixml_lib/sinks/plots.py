"""Figures of the sink measurements (matplotlib): the per-layer mass by placement, the
layer x head heatmaps and the hidden-state norms by segment. One item's attention map is
drawn by :mod:`vixml_lib.sinks.maps`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..prompt import SEGMENT_KINDS
from .measure import SinkMeasurement
from .placements import PLACEMENTS

_TARGET_TITLES = {"pos0": "attention mass on position 0", "images": "attention mass on the image(s)",
                  "eos": "EOS self-attention"}


def _placement_colours(labels: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per placement (those of :data:`PLACEMENTS` first, in their order)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    order = list(PLACEMENTS) + [lab for lab in dict.fromkeys(labels) if lab not in PLACEMENTS]
    return {lab: cmap(i % 10) for i, lab in enumerate(order)}


def _by_hidden_state(ax, m) -> None:
    """One placement's panel over hidden states (0 = embeddings), log scale."""
    ax.set(title=f"{m.placement}\n(pos 0: {m.position0_kind()})", xlabel="hidden state (0 = embeddings)",
           yscale="log")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)


def _figure_legend(fig, axes) -> None:
    """One legend for the figure, with every label of its panels once, to the right."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)


def _plot_layer_band(ax, m: SinkMeasurement, target: str, band: str, colour) -> None:
    """One placement's per-layer mean mass on ``target`` with its band, on ``ax``."""
    s = m.layer_summary(target)
    if s["n_items"] == 0:
        return
    x = np.arange(1, m.n_layers + 1)
    lo, hi = (s["q25"], s["q75"]) if band == "iqr" else (s["mean"] - s["std"], s["mean"] + s["std"])
    ax.plot(x, s["mean"], color=colour, lw=1.6, label=f"{m.placement} (pos 0: {m.position0_kind()})")
    ax.fill_between(x, lo, hi, color=colour, alpha=0.15)


def plot_sink_by_layer(measurements: Sequence[SinkMeasurement], target: str = "pos0", band: str = "iqr"):
    """ONE figure: per-layer mass on ``target`` for every placement (mean over items, band
    = 25-75 % quantiles (``iqr``) or mean ± std (``std``)), one panel per model."""
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(m.model_name for m in measurements))
    colours = _placement_colours([m.placement for m in measurements])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], models):
        for m in (m for m in measurements if m.model_name == name):
            _plot_layer_band(ax, m, target, band, colours[m.placement])
        ax.set(title=name, xlabel="layer", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(_TARGET_TITLES.get(target, target))
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{_TARGET_TITLES.get(target, target)} by layer (mean over items; band: "
                 f"{'25-75 % quantiles' if band == 'iqr' else '± std'})")
    fig.tight_layout()
    return fig


def plot_head_heatmaps(measurements: Sequence[SinkMeasurement], target: str = "pos0", model_name: str | None = None):
    """Layer x head heatmaps of the mass on ``target`` (mean over items), one per placement
    of one model (the first one by default)."""
    import matplotlib.pyplot as plt

    model_name = model_name or measurements[0].model_name
    ms = [m for m in measurements if m.model_name == model_name and not np.isnan(m.head_mean(target)).all()]
    if not ms:
        raise ValueError(f"no measurement of {target!r} for model {model_name!r}")
    fig, axes = plt.subplots(1, len(ms), figsize=(2.1 * len(ms) + 1.5, 0.13 * ms[0].n_layers + 2.2), squeeze=False)
    for ax, m in zip(axes[0], ms):
        im = ax.imshow(m.head_mean(target), vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower",
                       extent=(-0.5, m.mass[target].shape[2] - 0.5, 0.5, m.n_layers + 0.5))
        ax.set(title=f"{m.placement}\n(pos 0: {m.position0_kind()})", xlabel="head")
        ax.title.set_fontsize(9)
    axes[0][0].set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=_TARGET_TITLES.get(target, target))
    fig.suptitle(f"{model_name}: {_TARGET_TITLES.get(target, target)}, per layer and head", y=1.0)
    return fig


def plot_hidden_norms(measurements: Sequence[SinkMeasurement], model_name: str | None = None):
    """Mean hidden-state L2 norm per layer of position 0 and of the other positions by
    segment kind, one panel per placement of one model (log scale)."""
    import matplotlib.pyplot as plt

    model_name = model_name or measurements[0].model_name
    ms = [m for m in measurements if m.model_name == model_name]
    cmap = plt.get_cmap("tab10")
    colour = {name: cmap(i) for i, name in enumerate(["position 0", *SEGMENT_KINDS])}
    fig, axes = plt.subplots(1, len(ms), figsize=(3.2 * len(ms), 3.3), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], ms):
        for name, values in m.norms_by_kind().items():
            ax.plot(np.arange(len(values)), values, color=colour[name], lw=2.4 if name == "position 0" else 1.2,
                    label="position 0" if name == "position 0" else f"other {name}")
        _by_hidden_state(ax, m)
    axes[0][0].set_ylabel("L2 norm")
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{model_name}: hidden-state norms by segment (mean over items)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the literature's measures


def plot_sink_share(measurements: Sequence[SinkMeasurement], epsilon: float = 0.3,
                    targets: Sequence[str] = ("pos0", "first_image", "first_text")):
    """Gu et al.'s sink share (percent of layer x head pairs with a mean sink score above
    ``epsilon``) per (model, placement), one group of bars per key target."""
    import matplotlib.pyplot as plt

    labels = [f"{m.model_name}\n{m.placement}" for m in measurements]
    x = np.arange(len(measurements))
    width = 0.8 / len(targets)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(measurements) + 2), 3.6))
    for j, t in enumerate(targets):
        vals = [100 * m.sink_share(t, epsilon) for m in measurements]
        ax.bar(x + (j - (len(targets) - 1) / 2) * width, np.nan_to_num(vals), width, label=t)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set(ylabel=f"heads with sink score > {epsilon:g} (%)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"sink share (Gu et al. 2024, ε = {epsilon:g}); position 0 kind in the tables", fontsize=9)
    fig.tight_layout()
    return fig


def plot_massive_activations(measurements: Sequence[SinkMeasurement], model_name: str | None = None):
    """Sun et al.'s figure: per hidden state, the top-1, top-2, top-3 and median ``|h|``
    (mean over items, log scale), one panel per placement of one model; the top-1 marker is
    filled where an image carries it in most items."""
    import matplotlib.pyplot as plt

    from .literature import massive_carriers

    model_name = model_name or measurements[0].model_name
    ms = [m for m in measurements if m.model_name == model_name]
    fig, axes = plt.subplots(1, len(ms), figsize=(3.2 * len(ms), 3.3), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], ms):
        top, med = m.massive["top"].mean(0), m.massive["median"].mean(0)  # [S, 3], [S]
        x = np.arange(len(med))
        for j, style in enumerate(("-o", "--", ":")):
            ax.plot(x, top[:, j], style, lw=1.4, ms=4, mfc="none", label=f"top {j + 1}")
        image = np.isin(massive_carriers(m), ("image at 0", "image")).mean(0) > 0.5
        ax.plot(x[image], top[image, 0], "o", color="crimson", ms=5, label="top 1 on an image")
        ax.plot(x, med, color="grey", lw=1.2, label="median")
        _by_hidden_state(ax, m)
    axes[0][0].set_ylabel("|activation|")
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{model_name}: massive activations (Sun et al. 2024; mean over items)")
    fig.tight_layout()
    return fig


def plot_kv_norms(measurements: Sequence[SinkMeasurement], model_name: str | None = None):
    """Hidden, key and value norms per layer (rows) of position 0 and of the other
    positions by segment (mean over items, log scale), one column per placement of one
    model. A sink in the literature: large hidden norm, small value norm."""
    import matplotlib.pyplot as plt

    model_name = model_name or measurements[0].model_name
    ms = [m for m in measurements if m.model_name == model_name]
    which = ["hidden"] + [w for w in ("key", "value") if getattr(ms[0], f"{w}_norms") is not None]
    cmap = plt.get_cmap("tab10")
    colour = {name: cmap(i) for i, name in enumerate(["position 0", *SEGMENT_KINDS])}
    fig, axes = plt.subplots(len(which), len(ms), figsize=(3.2 * len(ms), 2.6 * len(which)), sharey="row",
                             squeeze=False)
    for r, w in enumerate(which):
        for ax, m in zip(axes[r], ms):
            by_kind = m.norms_by_kind(w)
            start = 0 if w == "hidden" else 1  # key / value of layer 1 .. L
            for name, values in by_kind.items():
                ax.plot(np.arange(start, start + len(values)), values, color=colour[name],
                        lw=2.4 if name == "position 0" else 1.2,
                        label="position 0" if name == "position 0" else f"other {name}")
            ax.set(yscale="log")
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(f"{m.placement}\n(pos 0: {m.position0_kind()})", fontsize=9)
            if r == len(which) - 1:
                ax.set_xlabel("layer (hidden: 0 = embeddings)")
        axes[r][0].set_ylabel(f"{w} norm")
    _figure_legend(fig, axes.ravel())
    fig.suptitle(f"{model_name}: hidden-state, key and value norms by segment (mean over items)")
    fig.tight_layout()
    return fig


def plot_intervention_effects(rows: Sequence[dict], metric: str = "P@1"):
    """The change of ``metric`` per (model, intervention) row of
    :func:`~vixml_lib.sinks.effects.intervention_rows`, with its 95 % paired bootstrap
    interval (points left of 0: the intervention hurts retrieval)."""
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no intervention rows to plot")
    labels = [f"{r['model']}: {r['intervention']} ({r['template used']})" for r in rows]
    d = np.array([r[f"Δ{metric}"] for r in rows])
    lo = d - np.array([r[f"Δ{metric} 95% low"] for r in rows])
    hi = np.array([r[f"Δ{metric} 95% high"] for r in rows]) - d
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.42 * len(rows) + 1.4))
    ax.errorbar(d, y, xerr=[lo, hi], fmt="o", color="tab:blue", ecolor="grey", capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set(xlabel=f"Δ{metric} (after − before, points; 95 % paired bootstrap)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"retrieval under interventions at inference: change of {metric}", fontsize=9)
    fig.tight_layout()
    return fig
