"""Extreme multi-label classification metrics, numerically identical to pyxclib
(``xclib.evaluation.xc_metrics``): P@k, nDCG@k, PSP@k, PSnDCG@k and R@k of a sparse score
matrix against the ground truth, and the inverse propensity weights.

* :mod:`.xmc` -- the metric definitions, :func:`evaluate` (all metrics from one top-k
  pass) and :func:`evaluate_files` (on the repository files);
* :mod:`.topk` -- the top-k selection in CSR score matrices that every metric ranks with.

Only numpy and scipy are imported.
"""
from .topk import topk_indices
from .xmc import (
    evaluate,
    evaluate_files,
    inverse_propensity,
    inverse_propensity_from_file,
    ndcg,
    precision,
    psndcg,
    psprecision,
    recall,
)

__all__ = [
    "inverse_propensity", "topk_indices", "precision", "ndcg", "psprecision", "psndcg",
    "recall", "evaluate", "evaluate_files", "inverse_propensity_from_file",
]
