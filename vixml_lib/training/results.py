"""What notebook 03 shows of finished runs: learning curves, a results table (each run beside
its zero-shot start) and the before / after bar chart."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: the final metrics a results row carries (those a run reports)
RESULT_METRICS = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5", "R@100")


def plot_history(histories: dict[str, list[dict]], metric: str = "P@1", ax=None, loss_ax=None):
    """Learning curves: ``metric`` over epochs (and the training loss) for several runs."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, (ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, hist in histories.items():
        ev = [h for h in hist if metric in h]
        ax.plot([h["epoch"] for h in ev], [h[metric] for h in ev], marker="o", label=name)
        if loss_ax is not None:
            tr = [h for h in hist if h.get("loss") is not None]
            loss_ax.plot([h["epoch"] for h in tr], [h["loss"] for h in tr], marker=".", label=name)
    for a in (ax, loss_ax):
        if a is not None:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=f"{metric} (%)", title=f"{metric} on test (epoch 0 = no fine-tuning)")
    ax.grid(alpha=0.3)
    ax.legend()
    if loss_ax is not None:
        loss_ax.set(xlabel="epoch", ylabel="triplet loss", title="Training loss")
        loss_ax.grid(alpha=0.3)
        loss_ax.legend()
    return ax


def results_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per run (summaries as :func:`~vixml_lib.training.train` returns them): model,
    images, template, the zero-shot P@1 (epoch 0), the final metrics and the training seconds."""
    rows = []
    for name, s in summaries.items():
        start = s["history"][0]
        rows.append({"run": name, "model": s["model"], "images": s["use_images"], "template": s["template"],
                     "P@1 zero-shot": start.get("P@1"),
                     **{k: s["final"][k] for k in RESULT_METRICS if k in s["final"]},
                     "train s": round(sum(h.get("train_seconds", 0) for h in s["history"]), 1)})
    return rows


def plot_before_after(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("P@1 zero-shot", "P@1", "P@5")):
    """Grouped bars per run of :func:`results_rows`: zero-shot P@1, fine-tuned P@1 and P@5."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(2 + 1.5 * len(rows), 3.6))
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, [r.get(key) or 0 for r in rows], width=width, label=key)
    ax.set_xticks(x, [r["run"] for r in rows], rotation=15)
    ax.legend()
    ax.set(ylabel="%", title="Before and after fine-tuning")
    ax.grid(axis="y", alpha=0.3)
    return fig
