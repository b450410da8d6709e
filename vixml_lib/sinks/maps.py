"""One item's attention map: query rows, key columns, tokens on the axes (image slots as
``<img1>``, ``<img2>`` ...), and its two renderers (matplotlib, plotly)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..prompt import IMAGE_TOKEN_ID, PromptTemplate
from .metrics import IMAGE_CODE
from .placements import evaluating, forward_with_attentions, placement_template, require_eager


@dataclass
class AttentionMap:
    """The attention of one item (real positions only): ``weights`` [n, n] (query rows,
    key columns; mean over heads unless ``head``), token ``labels``, ``kinds`` codes."""

    weights: np.ndarray
    labels: list[str]
    kinds: np.ndarray
    layer: int
    head: int | None
    placement: str
    model_name: str

    @property
    def title(self) -> str:
        who = "mean over heads" if self.head is None else f"head {self.head}"
        return f"{self.model_name} · {self.placement} · layer {self.layer} ({who})"


def token_labels(tokenizer, token_ids: Sequence[int], kinds: Sequence[int] | None = None) -> list[str]:
    """Readable, unique axis labels ``"<pos> <token>"``: tokens decoded one by one, image
    slots as ``<img1>``, ``<img2>`` ..."""
    out, n_img = [], 0
    for p, tid in enumerate(int(t) for t in token_ids):
        if tid == IMAGE_TOKEN_ID or (kinds is not None and int(kinds[p]) == IMAGE_CODE):
            n_img += 1
            tok = f"<img{n_img}>"
        else:
            try:
                tok = tokenizer.decode([tid])
            except Exception:  # tokenizers without decode (random test stand-in)
                tok = f"#{tid}"
            tok = tok.replace("\n", "\\n")
            tok = tok if tok.strip() else repr(tok)
        out.append(f"{p} {tok.strip() if tok.strip() else tok}")
    return out


def _layer_index(layer: int, n_layers: int) -> int:
    """0-based index of a 1-based (or negative, from the end) ``layer``."""
    index = layer - 1 if layer > 0 else n_layers + layer
    if not 0 <= index < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers (1-based, or negative)")
    return index


@torch.inference_mode()
def attention_map(model, inputs: Mapping[str, Any], item: int = 0,
                  placement: str | Mapping | PromptTemplate | None = "text_image",
                  layer: int = -1, head: int | None = None, model_name: str = "model") -> AttentionMap:
    """The attention map of item ``item`` of ``inputs`` under ``placement`` at ``layer``
    (1-based; negative counts from the end), one ``head`` or the mean over heads."""
    require_eager(model)
    tmpl = model.template if placement is None else placement_template(model, placement)
    part = {k: (v[item:item + 1] if v is not None else None) for k, v in inputs.items()}
    with evaluating(model, tmpl):
        out = forward_with_attentions(model, part)
    index = _layer_index(layer, len(out.attentions))
    n = int(out.batch.lengths[0])
    a = out.attentions[index][0].float()  # [H, T, T]
    w = a.mean(0) if head is None else a[head]
    ids = out.batch.token_ids[0, :n].tolist()
    kinds = out.batch.kinds[0, :n].cpu().numpy()
    label = placement if isinstance(placement, str) else tmpl.name
    return AttentionMap(w[:n, :n].cpu().numpy(), token_labels(model.tokenizer, ids, kinds), kinds, index + 1, head,
                        label, model_name)


def plot_attention_map(amap: AttentionMap, ax=None):
    """A static (matplotlib) annotated attention map: query rows, key columns, tokens on the axes."""
    import matplotlib.pyplot as plt

    n = len(amap.labels)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.28 * n + 3, 0.28 * n + 2))
    im = ax.imshow(amap.weights, cmap="magma", vmin=0, vmax=max(1e-6, float(amap.weights.max())))
    ax.set_xticks(range(n), amap.labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), amap.labels, fontsize=7)
    ax.set(xlabel="key", ylabel="query")
    ax.set_title(amap.title, fontsize=9)
    ax.figure.colorbar(im, ax=ax, shrink=0.7, label="attention")
    return ax


def plotly_attention_map(amap: AttentionMap):
    """An interactive (plotly: zoom, hover) version of :func:`plot_attention_map`."""
    import plotly.graph_objects as go

    hover = "query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>"
    fig = go.Figure(go.Heatmap(z=amap.weights, x=amap.labels, y=amap.labels, colorscale="Magma",
                               zmin=0, hovertemplate=hover, colorbar={"title": "attention"}))
    fig.update_layout(title=amap.title,
                      xaxis={"title": "key", "tickangle": -90, "type": "category"},
                      yaxis={"title": "query", "autorange": "reversed", "type": "category"},
                      width=720, height=680)
    return fig
