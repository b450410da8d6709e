"""Prompt-template ablations: a declarative grid of templates, trained for several backbones.

- :mod:`~vixml_lib.ablation.grid`: factor levels -> distinct templates (cells), one cell's TrainConfig;
- :mod:`~vixml_lib.ablation.runner`: :func:`run_grid` trains every cell for every backbone
  (reuse of finished cells, failures recorded, checkpoints pruned);
- :mod:`~vixml_lib.ablation.results`: result rows, ``results.{csv,json}``, tables, factor effects, plots.
"""
from .grid import DEFAULT_FACTORS, Cell, backbone_kind, cell_config, expand_grid
from .results import METRICS, describe_grid, factor_effects, load_results, plot_grid, results_table, save_results
from .runner import run_grid

__all__ = [
    "DEFAULT_FACTORS", "METRICS", "Cell", "expand_grid", "backbone_kind", "describe_grid", "cell_config", "run_grid",
    "results_table", "save_results", "load_results", "factor_effects", "plot_grid",
]
