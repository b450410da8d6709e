"""Head and model views of one item: every layer x head attention map of one prompt, with
its segments (prefix, title, image, EOS ...) annotated, as an interactive plotly grid
(hover names the query and key tokens) and a static matplotlib grid.

bertviz's ``head_view`` / ``model_view`` load require.js, d3 and jQuery from a CDN when they
are viewed, so they do not work offline; these grids are self-contained (the HTML written
with ``include_plotlyjs="directory"`` reads plotly.js from beside the file).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..prompt import PromptTemplate
from .maps import _layer_index, token_labels
from .placements import evaluating, forward_with_attentions, placement_template, require_eager
from .scores import kind_name

#: how segment kinds are named on the views
SEGMENT_LABELS = {"bos": "BOS", "cls": "[CLS]", "text_prefix": "prefix", "title": "title",
                  "image_prefix": "image prefix", "images": "image", "eos": "EOS", "sep": "[SEP]"}


def segment_runs(kinds: Sequence[int]) -> list[tuple[str, int, int]]:
    """Consecutive runs of one segment kind: ``(label, start, stop)`` with ``stop``
    exclusive, labels of :data:`SEGMENT_LABELS` (``[2, 2, 3, 5]`` -> prefix 0-2, title 2-3,
    image 3-4)."""
    runs: list[tuple[str, int, int]] = []
    for p, code in enumerate(int(k) for k in kinds):
        name = SEGMENT_LABELS.get(kind_name(code), kind_name(code))
        if runs and runs[-1][0] == name and runs[-1][2] == p:
            runs[-1] = (name, runs[-1][1], p + 1)
        else:
            runs.append((name, p, p + 1))
    return runs


@dataclass
class AttentionGrid:
    """Every selected layer x head attention map of one item (real positions only):
    ``weights`` [layers, heads, n, n] (query rows, key columns), ``layers`` (1-based) and
    ``heads`` shown, token ``labels``, ``segments`` (:func:`segment_runs`)."""

    weights: np.ndarray
    layers: list[int]
    heads: list[int]
    labels: list[str]
    segments: list[tuple[str, int, int]]
    placement: str
    model_name: str

    @property
    def title(self) -> str:
        segs = " | ".join(f"{name} {a}" + (f"-{b - 1}" if b - a > 1 else "") for name, a, b in self.segments)
        return f"{self.model_name} · {self.placement} · segments: {segs}"


@torch.inference_mode()
def attention_grid(model, inputs: Mapping[str, Any], item: int = 0,
                   placement: str | Mapping | PromptTemplate | None = "text_image",
                   layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                   model_name: str = "model") -> AttentionGrid:
    """The layer x head attention maps of item ``item`` of ``inputs`` under ``placement``
    (``None``: the model's own template); ``layers`` 1-based (negative from the end; all by
    default), ``heads`` 0-based (all by default)."""
    require_eager(model)
    tmpl = model.template if placement is None else placement_template(model, placement)
    part = {k: (v[item:item + 1] if v is not None else None) for k, v in inputs.items()}
    with evaluating(model, tmpl):
        out = forward_with_attentions(model, part)
    n_layers, n_heads = len(out.attentions), out.attentions[0].shape[1]
    idx = [_layer_index(int(la), n_layers) for la in (layers if layers is not None else range(1, n_layers + 1))]
    heads = list(range(n_heads)) if heads is None else [int(h) for h in heads]
    if any(not 0 <= h < n_heads for h in heads):
        raise ValueError(f"heads {heads} out of range: the model has {n_heads} heads (0-based)")
    n = int(out.batch.lengths[0])
    w = torch.stack([out.attentions[i][0, heads, :n, :n].float() for i in idx]).cpu().numpy()
    kinds = out.batch.kinds[0, :n].cpu().numpy()
    labels = token_labels(model.tokenizer, out.batch.token_ids[0, :n].tolist(), kinds)
    label = placement if isinstance(placement, str) else tmpl.name
    return AttentionGrid(w, [i + 1 for i in idx], heads, labels, segment_runs(kinds), label, model_name)


def plotly_attention_grid(grid: AttentionGrid, cell_px: int = 110):
    """An interactive layer (rows) x head (columns) grid of the attention maps, one colour
    scale, segment boundaries drawn on every map, hover naming query and key tokens."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    L, H, n, _ = grid.weights.shape
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.006, vertical_spacing=0.012,
                        row_titles=[f"L{la}" for la in grid.layers], column_titles=[f"h{h}" for h in grid.heads])
    hover = "query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>"
    traces = [go.Heatmap(z=grid.weights[r, c], x=grid.labels, y=grid.labels, coloraxis="coloraxis",
                         hovertemplate=hover) for r in range(L) for c in range(H)]
    fig.add_traces(traces, rows=[r + 1 for r in range(L) for _ in range(H)], cols=[c + 1 for _ in range(L)
                                                                                     for c in range(H)])
    # segment boundaries on every map, set at once (adding shapes one by one is quadratic)
    shapes = []
    for i in range(1, L * H + 1):
        ax = "" if i == 1 else str(i)
        for _, start, _ in grid.segments[1:]:
            line = {"type": "line", "line": {"color": "cyan", "width": 0.6}, "xref": f"x{ax}", "yref": f"y{ax}"}
            shapes.append({**line, "x0": start - 0.5, "x1": start - 0.5, "y0": -0.5, "y1": n - 0.5})
            shapes.append({**line, "y0": start - 0.5, "y1": start - 0.5, "x0": -0.5, "x1": n - 0.5})
    fig.update_layout(shapes=shapes)
    fig.update_xaxes(showticklabels=False, type="category")
    fig.update_yaxes(showticklabels=False, type="category", autorange="reversed")
    fig.update_layout(title={"text": grid.title, "font": {"size": 12}}, coloraxis={"colorscale": "Magma", "cmin": 0,
                      "cmax": 1, "colorbar": {"title": "attention"}},
                      width=max(500, cell_px * H + 160), height=max(400, cell_px * L + 120),
                      margin={"l": 40, "r": 40, "t": 90, "b": 30})
    return fig


def plot_attention_grid(grid: AttentionGrid, cell: float = 1.1):
    """A static layer x head grid of the attention maps, drawn as one tiled image (segment
    boundaries in cyan, the segments named in the title)."""
    import matplotlib.pyplot as plt

    L, H, n, _ = grid.weights.shape
    step = n + 1  # one blank row / column between the maps
    mosaic = np.full((L * step - 1, H * step - 1), np.nan)
    for r in range(L):
        for c in range(H):
            mosaic[r * step:r * step + n, c * step:c * step + n] = grid.weights[r, c]
    fig, ax = plt.subplots(figsize=(cell * H + 1.2, cell * L + 1.0))
    ax.imshow(mosaic, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    bounds = np.array([start - 0.5 for _, start, _ in grid.segments[1:]])
    offsets_r, offsets_c = np.arange(L) * step, np.arange(H) * step
    for off in offsets_c:  # vertical lines on every map of a column
        ax.vlines((off + bounds)[:, None].repeat(L, 1).ravel(), np.tile(offsets_r - 0.5, len(bounds)),
                  np.tile(offsets_r + n - 0.5, len(bounds)), color="cyan", lw=0.4)
    for off in offsets_r:
        ax.hlines((off + bounds)[:, None].repeat(H, 1).ravel(), np.tile(offsets_c - 0.5, len(bounds)),
                  np.tile(offsets_c + n - 0.5, len(bounds)), color="cyan", lw=0.4)
    ax.set_xticks(offsets_c + (n - 1) / 2, [f"h{h}" for h in grid.heads], fontsize=8)
    ax.set_yticks(offsets_r + (n - 1) / 2, [f"L{la}" for la in grid.layers], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(grid.title, fontsize=9)
    fig.tight_layout()
    return fig
