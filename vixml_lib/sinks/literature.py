"""Tables of the literature's sink measures (plain-value rows, ready for ``report.table``
and ``save_metrics``), one scalar per placement where the papers give one:

- :func:`sink_share_rows`: Gu et al.'s sink share (epsilon = 0.3) on position 0, on the
  first image and on the first text token, with the mean sink scores;
- :func:`massive_rows` / :func:`massive_summary_rows`: Sun et al.'s top-3 and median
  activation magnitudes per layer, their carrier (segment, position, channel), and
  whether the image becomes the carrier when it sits first;
- :func:`norm_ratio_rows`: hidden, key and value norms at position 0 over the other
  positions' (a sink: hidden >> 1, value < 1).

Definitions in :mod:`vixml_lib.sinks.scores`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .measure import SinkMeasurement
from .metrics import RECEIVER_CATEGORIES, receiver_categories
from .scores import SINK_TARGETS


def _f(x) -> float | None:
    """A plain float (``None`` for NaN)."""
    x = float(x)
    return None if np.isnan(x) else x


def sink_share_rows(measurements: Sequence[SinkMeasurement], epsilon: float = 0.3) -> list[dict]:
    """One row per (model, placement): what sits at position 0, the queries counted
    (``later`` / ``all``), and per key of :data:`~vixml_lib.sinks.scores.SINK_TARGETS` the
    sink share above ``epsilon`` (percent of layer x head pairs) and the mean sink score
    (over items, layers and heads)."""
    rows = []
    for m in measurements:
        row = {"model": m.model_name, "placement": m.placement, "position 0": m.position0_kind(),
               "queries": m.meta.get("queries")}
        for t in SINK_TARGETS:
            s = m.scores[t]
            ok = ~np.isnan(s).any((1, 2))
            share = m.sink_share(t, epsilon)
            row[f"{t} share > {epsilon:g} (%)"] = None if np.isnan(share) else round(100 * share, 1)
            row[f"{t} mean score"] = _f(s[ok].mean()) if ok.any() else None
        row["n_items"] = m.n_items
        rows.append(row)
    return rows


def massive_carriers(m: SinkMeasurement, rank: int = 0) -> np.ndarray:
    """[N, layers + 1]: the category (:func:`~vixml_lib.sinks.metrics.receiver_categories`:
    ``image at 0``, ``text at 0``, ``first text token``, ``image``, ``EOS``, ``other
    text``) of the position carrying the ``rank``-th largest activation."""
    return receiver_categories(m.massive["position"][..., rank], m.kinds)


def _mode(values: np.ndarray) -> tuple[object, float]:
    """The most frequent value and its share."""
    names, counts = np.unique(values, return_counts=True)
    return names[counts.argmax()].item(), float(counts.max() / counts.sum())


def massive_rows(measurements: Sequence[SinkMeasurement]) -> list[dict]:
    """Tidy rows per (model, placement, hidden state; 0 = the embeddings): top-1..3 and
    median ``|h|`` (mean over items), the top-1 / median ratio, and the top-1 carrier's most
    frequent category, position and channel with the share of items where it is so."""
    rows = []
    for m in measurements:
        top, med = m.massive["top"], m.massive["median"]  # [N, S, 3], [N, S]
        cats = massive_carriers(m)
        for s in range(top.shape[1]):
            cat, cat_share = _mode(cats[:, s])
            pos, pos_share = _mode(m.massive["position"][:, s, 0])
            ch, ch_share = _mode(m.massive["channel"][:, s, 0])
            rows.append({"model": m.model_name, "placement": m.placement, "state": s,
                         **{f"top{j + 1}": float(top[:, s, j].mean()) for j in range(top.shape[2])},
                         "median": float(med[:, s].mean()), "top1/median": float((top[:, s, 0] / med[:, s]).mean()),
                         "carrier": cat, "carrier share": round(cat_share, 2), "position": int(pos),
                         "position share": round(pos_share, 2), "channel": int(ch),
                         "channel share": round(ch_share, 2)})
    return rows


def _layer_outputs(m: SinkMeasurement, n_states: int) -> slice:
    """The hidden states that are layer outputs of the residual stream: 1 .. S-1, less the
    last one for decoders (transformers returns it after the final norm)."""
    stop = n_states - 1 if m.meta.get("queries") == "later" and n_states > 2 else n_states
    return slice(1, stop)


def massive_summary_rows(measurements: Sequence[SinkMeasurement]) -> list[dict]:
    """One row per (model, placement): the hidden state with the largest mean top-1 /
    median ratio (the final-norm output excluded: the last state of decoders), that
    ratio, its top-1 value, carrier and channel, and over those layer outputs the
    percentage of (item, layer) pairs whose top-1 carrier is in each category (does an
    image at position 0 become the carrier, or does the first text token take over?)."""
    rows = []
    for m in measurements:
        top, med = m.massive["top"][..., 0], m.massive["median"]  # [N, S]
        inner = _layer_outputs(m, top.shape[1])
        ratio = (top / med).mean(0)
        peak = int(np.argmax(ratio[inner])) + inner.start
        cats = massive_carriers(m)
        cat, _ = _mode(cats[:, peak])
        ch, _ = _mode(m.massive["channel"][:, peak, 0])
        row = {"model": m.model_name, "placement": m.placement, "position 0": m.position0_kind(),
               "peak state": peak, "top1/median": float(ratio[peak]), "top1": float(top[:, peak].mean()),
               "carrier": cat, "channel": int(ch)}
        inner_cats = cats[:, inner]
        row.update({f"{c} (%)": round(100.0 * float(np.mean(inner_cats == c)), 1) for c in RECEIVER_CATEGORIES})
        rows.append(row)
    return rows


def norm_ratio_rows(measurements: Sequence[SinkMeasurement]) -> list[dict]:
    """One row per (model, placement): the norm at position 0 over the mean of the other
    positions (per item, averaged), for the hidden states (largest over the layer outputs),
    the keys and the values (mean and smallest / largest over the layers)."""
    rows = []
    for m in measurements:
        row = {"model": m.model_name, "placement": m.placement, "position 0": m.position0_kind(),
               "hidden ratio (peak)": _f(np.nanmax(m.position0_norm_ratio("hidden")[1:]))}
        for which in ("key", "value"):
            if getattr(m, f"{which}_norms") is None:
                continue
            r = m.position0_norm_ratio(which)
            row.update({f"{which} ratio (mean)": _f(np.nanmean(r)), f"{which} ratio (min)": _f(np.nanmin(r)),
                        f"{which} ratio (max)": _f(np.nanmax(r))})
        rows.append(row)
    return rows
