"""Choosing test queries to look at (all returned as dataset test rows).

* :func:`find_queries`: case-insensitive text search in the test titles.
* :func:`worst_queries` / :func:`best_queries`: by per-query P@k.
* :func:`pair_runs`: :class:`RunPair`, per-query P@k differences of two runs on their
  common queries (:meth:`RunPair.helped` / :meth:`RunPair.hurt`).
* :func:`choose_static_queries`: a fixed handful for a static report.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .loading import InspectionRun
from .numbers import per_query_metrics


def find_queries(run: InspectionRun, text: str, limit: int | None = None) -> np.ndarray:
    """Dataset test rows (evaluated by the run, ascending) whose title contains ``text``,
    case-insensitively; every evaluated query for an empty text."""
    items = np.sort(run.items_tst)
    needle = (text or "").strip().casefold()
    if needle:
        if run.data._folded is None:
            run.data._folded = [t.casefold() for t in run.data.titles["tst"]]
        folded = run.data._folded
        items = np.array([i for i in items if needle in folded[i]], dtype=np.int64)
    return items[:limit] if limit is not None else items


def _ranked(run: InspectionRun, k: int, worst: bool, n: int | None) -> np.ndarray:
    p = per_query_metrics(run, k)["P@k"]
    # worst: lowest P@k first, then queries with more true labels (more to miss); best: highest
    # P@k first, then fewer true labels; finally the dataset row, so the order is deterministic
    n_true = per_query_metrics(run, k)["n_true"]
    order = np.lexsort((run.items_tst, -n_true if worst else n_true, p if worst else -p))
    return run.items_tst[order][:n]


def worst_queries(run: InspectionRun, n: int | None = 10, k: int = 5) -> np.ndarray:
    """Dataset test rows of the ``n`` queries with the lowest P@k (ties: more true labels first)."""
    return _ranked(run, k, True, n)


def best_queries(run: InspectionRun, n: int | None = 10, k: int = 5) -> np.ndarray:
    """Dataset test rows of the ``n`` queries with the highest P@k (ties: fewer true labels first)."""
    return _ranked(run, k, False, n)


@dataclass
class RunPair:
    """Two runs on their common test queries: ``diff = P@k(a) - P@k(b)`` per query."""

    a: InspectionRun
    b: InspectionRun
    k: int
    items: np.ndarray  # (n_common,) common dataset test rows, ascending
    pos_a: np.ndarray  # (n_common,) their positions in a
    pos_b: np.ndarray  # (n_common,) their positions in b
    p_a: np.ndarray  # (n_common,) P@k of a
    p_b: np.ndarray  # (n_common,) P@k of b

    @property
    def diff(self) -> np.ndarray:
        return self.p_a - self.p_b

    def helped(self, n: int | None = 10) -> np.ndarray:
        """Common items where ``a`` beats ``b`` most (largest difference first; ties by row).
        Only strictly positive differences."""
        d = self.diff
        order = np.lexsort((self.items, -d))
        order = order[d[order] > 0]
        return self.items[order][:n]

    def hurt(self, n: int | None = 10) -> np.ndarray:
        """Common items where ``a`` loses most to ``b`` (most negative first). Only strictly negative."""
        d = self.diff
        order = np.lexsort((self.items, d))
        order = order[d[order] < 0]
        return self.items[order][:n]

    def sorted_items(self, descending: bool = True) -> np.ndarray:
        """Every common item by difference (ties by row)."""
        d = self.diff
        return self.items[np.lexsort((self.items, -d if descending else d))]

    def summary(self) -> dict[str, Any]:
        d = self.diff
        n = max(len(d), 1)
        return {"a": self.a.name, "b": self.b.name, "k": self.k, "n_common": int(len(d)),
                f"P@{self.k}_a": float(self.p_a.mean()) if len(d) else float("nan"),
                f"P@{self.k}_b": float(self.p_b.mean()) if len(d) else float("nan"),
                "mean_diff": float(d.mean()) if len(d) else float("nan"),
                "helped_frac": float((d > 0).sum() / n), "hurt_frac": float((d < 0).sum() / n),
                "tie_frac": float((d == 0).sum() / n)}


def pair_runs(a: InspectionRun, b: InspectionRun, k: int = 5) -> RunPair:
    """Pair two runs on the test queries both evaluated (the intersection of their items)."""
    if a.data is not b.data and (a.data.n_labels != b.data.n_labels or a.data.n_test != b.data.n_test
                                 or a.data.titles["lbl"] != b.data.titles["lbl"]):
        raise ValueError(f"runs {a.name!r} ({a.data.path}) and {b.name!r} ({b.data.path}) are on different datasets")
    items = np.intersect1d(a.items_tst, b.items_tst)
    if len(items) == 0:
        raise ValueError(f"runs {a.name!r} and {b.name!r} evaluated no test query in common")
    pa, pb = a.positions(items), b.positions(items)
    return RunPair(a, b, k, items, pa, pb, per_query_metrics(a, k)["P@k"][pa], per_query_metrics(b, k)["P@k"][pb])


def choose_static_queries(source: InspectionRun | RunPair, n: int = 6, k: int = 5, fixed: Sequence[int] | None = None,
                          seed: int = 0) -> list[tuple[str, int]]:
    """A handful of (reason, test item) pairs to draw in a static report: for a pair, the
    ``n // 3`` queries ``a`` helped most, the ``n // 3`` it hurt most (fewer when there are
    fewer), then ``fixed`` items or seeded random common ones up to ``n``; for one run,
    worst and best by P@k then fixed/random. No item twice."""
    chosen: list[tuple[str, int]] = []
    seen: set[int] = set()

    def add(reason, items, limit):
        for it in items:
            if limit <= 0:
                break
            if int(it) not in seen:
                chosen.append((reason, int(it)))
                seen.add(int(it))
                limit -= 1

    third = n // 3
    if isinstance(source, RunPair):
        add(f"{source.a.name} beats {source.b.name}", source.helped(None), third)
        add(f"{source.b.name} beats {source.a.name}", source.hurt(None), third)
        pool = source.items
    else:
        add(f"worst P@{k}", worst_queries(source, None, k), third)
        add(f"best P@{k}", best_queries(source, None, k), third)
        pool = np.sort(source.items_tst)
    if fixed:
        bad = [int(i) for i in fixed if int(i) not in set(pool.tolist())]
        if bad:
            raise ValueError(f"static queries {bad} are not among the evaluated test queries")
        add("chosen", fixed, n - len(chosen))
    if len(chosen) < n:
        rest = np.array([i for i in pool if int(i) not in seen], dtype=np.int64)
        pick = np.random.default_rng(seed).permutation(len(rest))[: n - len(chosen)]
        add("random", np.sort(rest[pick]), n - len(chosen))
    return chosen
