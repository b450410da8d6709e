"""Retrieval inspection: what a trained run retrieves for single queries, where it misses,
and where two runs (e.g. ViXML and text only) differ.

Runs are held in *run space* (rows = the evaluated test queries, columns = the searched
labels) and shown with dataset ids (a test query by its test row, a label by its label row).

Modules (each re-exported here, so ``from vixml_lib import inspection as insp`` offers all):

* :mod:`~vixml_lib.inspection.loading`: :func:`load_run` / :func:`load_runs` (:class:`InspectionRun`,
  :class:`RunData`) from :class:`vixml_lib.runs.TrainFolder` run folders.
* :mod:`~vixml_lib.inspection.numbers`: per-query P@k, exact true-label ranks, query details, missed-rank summaries.
* :mod:`~vixml_lib.inspection.selection`: text search, worst / best queries, :class:`RunPair`, static picks.
* :mod:`~vixml_lib.inspection.projection`: 2-D embedding maps (:class:`Projection`) and attributes to colour them.
* :mod:`~vixml_lib.inspection.images`: :class:`ItemImages` (item images, read lazily) and the image tiles.
* :mod:`~vixml_lib.inspection.plots`: the matplotlib / plotly figures.
* :mod:`~vixml_lib.inspection.browser`: :class:`QueryBrowser`, the ipywidgets browser.

Only numpy, scipy and yaml are imported at module level; matplotlib, plotly, PIL and
ipywidgets are imported by the functions that draw.
"""
from .browser import QueryBrowser
from .images import ItemImages
from .loading import InspectionRun, RunData, load_dataset_for_inspection, load_run, load_runs
from .numbers import (
    inspection_summary,
    miss_rank_summary,
    missed_ranks,
    per_query_metrics,
    query_details,
    true_label_ranks,
)
from .plots import embedding_map_plotly, plot_embedding_map, plot_missed_ranks, plot_pair_differences, plot_query
from .projection import Projection, point_attribute, project_embeddings
from .selection import RunPair, best_queries, choose_static_queries, find_queries, pair_runs, worst_queries

__all__ = [
    "RunData", "InspectionRun", "RunPair", "Projection", "ItemImages", "QueryBrowser",
    "load_dataset_for_inspection", "load_run", "load_runs", "per_query_metrics", "true_label_ranks",
    "query_details", "find_queries", "worst_queries", "best_queries", "pair_runs", "choose_static_queries",
    "missed_ranks", "miss_rank_summary", "inspection_summary", "plot_pair_differences", "plot_missed_ranks",
    "project_embeddings", "point_attribute", "plot_query", "plot_embedding_map",
    "embedding_map_plotly",
]
