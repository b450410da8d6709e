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
        ax.set(title=f"{m.placement}\n(pos 0: {m.position0_kind()})", xlabel="hidden state (0 = embeddings)",
               yscale="log")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("L2 norm")
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{model_name}: hidden-state norms by segment (mean over items)")
    fig.tight_layout()
    return fig
