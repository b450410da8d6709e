"""What notebook 03 shows of finished runs: learning curves, a results table (each run beside
its zero-shot start) and the before / after bar chart."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: the final metrics a results row carries (those a run reports)
RESULT_METRICS = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5", "R@100")


def plot_history(histories: dict[str, list[dict]], metric: str = "P@1", ax=None, loss_ax=None,
                 hard_negatives_from: int | None = None):
    """Learning curves: ``metric`` over epochs (and the training loss) for several runs.
    ``hard_negatives_from``: the first (0-based) epoch trained on NGAME clustered batches,
    marked on both panels."""
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
            if hard_negatives_from is not None:  # history epoch e+1 is the first trained on clusters
                a.axvline(hard_negatives_from + 0.5, color="grey", linestyle="--", linewidth=1)
                a.text(hard_negatives_from + 0.55, 0.02, "hard negatives (clustered batches)", rotation=90,
                       transform=a.get_xaxis_transform(), fontsize=7, color="grey", va="bottom")
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


#: The paper's LF-AmazonTitles-131K numbers (percent; ``None`` where the paper gives none),
#: from /work/shared/METHOD.md and the paper summary in shared/seeds: its ablation table
#: (text-only vs ViXML, DistilBERT / Qwen2.5-3B), its main table (ViXML + PRIME) and its
#: fusion ablation (PRIME early vs MUFIN-style late fusion).
PAPER_131K: dict[str, dict[str, Any]] = {
    "text-only DistilBERT": {"P@1": 44.86, "P@5": 21.45},
    "text-only Qwen2.5-3B": {"P@1": 47.42, "P@5": 22.89},
    "ViXML DistilBERT": {"P@1": 49.55, "P@5": 23.73},
    "ViXML Qwen2.5-3B": {"P@1": 52.47, "P@5": 25.26},
    "ViXML + PRIME (main table)": {"P@1": 53.08},
    "PRIME text-only (main table)": {"P@1": 45.26},
    "ViXML + PRIME, early fusion": {"P@1": 55.03, "P@5": 35.91},
    "MUFIN-style late fusion": {"P@1": 52.62, "P@5": 34.35},
}
PAPER_METRICS = ("P@1", "P@5", "PSP@1", "PSP@5")


def paper_table(summaries: Mapping[str, Mapping[str, Any]], paper_rows: Mapping[str, str] | None = None,
                metrics: Sequence[str] = PAPER_METRICS) -> list[dict[str, Any]]:
    """The runs in the paper's table layout (P@1, P@5, PSP@1, PSP@5), each beside the paper's
    row it corresponds to (``paper_rows``: run name -> a key of :data:`PAPER_131K`)."""
    rows = []
    for name, s in summaries.items():
        ref_name = (paper_rows or {}).get(name)
        ref = PAPER_131K.get(ref_name, {}) if ref_name else {}
        rows.append({"run": name, **{m: s["final"].get(m) for m in metrics},
                     "paper row": ref_name or "", **{f"paper {m}": ref.get(m) for m in ("P@1", "P@5")}})
    return rows


def seed_run_name(name: str, seed: int, seeds: Sequence[int]) -> str:
    """The run folder name of ``name`` trained with ``seed``: the first seed keeps the plain
    name (what notebooks 04-06 read), the others get ``-seed<k>``."""
    return name if seed == seeds[0] else f"{name}-seed{seed}"


def seed_rows(by_seed: Mapping[str, Mapping[int, Mapping[str, Any]]],
              metrics: Sequence[str] = PAPER_METRICS) -> list[dict[str, Any]]:
    """One row per run: each metric's mean and standard deviation over its seeds
    (``by_seed``: run name -> seed -> summary)."""
    import numpy as np

    rows = []
    for name, runs in by_seed.items():
        row: dict[str, Any] = {"run": name, "seeds": len(runs)}
        for m in metrics:
            values = np.array([s["final"][m] for s in runs.values() if m in s["final"]], float)
            row[m] = float(values.mean()) if len(values) else None
            row[f"{m} sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
        rows.append(row)
    return rows
