"""Attention sinks: how much attention the first position collects, and what an image there changes.

Decoder LLMs send a large share of every query's attention to the first token of the
sequence (an *attention sink*, with an outsized hidden-state norm). The paper argues that
an image vector placed first disrupts this, which is why ``text_image`` beats
``image_text``. This package measures it on real prompts, assembled by the model's own
prompt assembler (the code path training uses), for several placements of the image:
per layer and head, the attention mass on position 0, the images and the EOS, the
strongest receivers and the hidden-state norms; the literature's measures (Gu et al.'s
sink score and share, Sun et al.'s massive activations, key and value norms); and
interventions at inference (masking the sink, mean key / value, moving the image) with
their effect on retrieval.

Modules:

- :mod:`~vixml_lib.sinks.placements` -- the placements of the image (:data:`PLACEMENTS`),
  their templates, and the eager-attention model the analysis runs;
- :mod:`~vixml_lib.sinks.metrics` -- the measures as pure tensor functions, and their
  definitions (counted queries, mass, received share, norms, receiver categories);
- :mod:`~vixml_lib.sinks.measure` -- running the model over a sample of items:
  :class:`SinkMeasurement`, :func:`measure`, :func:`measure_placements`;
- :mod:`~vixml_lib.sinks.items` -- what it runs on: a seeded item sample, the trained runs;
- :mod:`~vixml_lib.sinks.tables` -- placement, summary, per-layer and receiver tables, the retrieval
  results beside the sinks;
- :mod:`~vixml_lib.sinks.maps` -- one item's attention map and its renderers;
- :mod:`~vixml_lib.sinks.plots` -- figures of the measurements;
- :mod:`~vixml_lib.sinks.scores` -- the literature's measures as pure tensor functions;
- :mod:`~vixml_lib.sinks.capture` -- forward hooks: key / value projections, the backbone's call;
- :mod:`~vixml_lib.sinks.literature` -- tables of the literature's measures;
- :mod:`~vixml_lib.sinks.interventions` -- masking a key position, mean key / value, moving the image;
- :mod:`~vixml_lib.sinks.effects` -- retrieval under interventions, per query, and its table;
- :mod:`~vixml_lib.sinks.views` -- layer x head views of one item (plotly, matplotlib).

Usage::

    from vixml_lib import sinks
    model = sinks.create_analysis_model("smollm2-vixml", vision_dim=384)   # eager attention
    sample = sinks.load_items("data/demo-small", model, n_items=32)
    results = sinks.measure_placements(model, sample.inputs, model_name="untrained")
    sinks.summary_rows(results); sinks.plot_sink_by_layer(results)
    sinks.sink_share_rows(results, epsilon=0.3); sinks.massive_summary_rows(results)
    run = sinks.load_trained_run("reports/demo", "smollm2-text_image")
    config, data = sinks.intervention_data(run, max_labels=300)
    effects = sinks.run_interventions(run.model, data, config, ["mask_pos0", "move_image"], model_name=run.name)
    sinks.intervention_rows(effects)
"""
from .capture import backbone_call_hook, capture_projections, kv_heads, projection_modules
from .effects import (
    InterventionResult,
    RetrievalScores,
    baseline_rows,
    intervention_data,
    intervention_rows,
    per_query_precision,
    retrieval_scores,
    run_interventions,
)
from .interventions import (
    Intervention,
    intervene,
    intervention_mask,
    mask_key_position,
    mean_at_position,
    mean_kv_position,
    moved_placement,
    parse_intervention,
)
from .items import ItemSample, TrainedRun, load_items, load_trained_run, read_run_summary
from .literature import massive_carriers, massive_rows, massive_summary_rows, norm_ratio_rows, sink_share_rows
from .maps import AttentionMap, attention_map, plot_attention_map, plotly_attention_map, token_labels
from .measure import SinkMeasurement, measure, measure_placements
from .metrics import TARGETS, attention_mass, counted_queries, hidden_norms, received_share, receiver_categories
from .placements import (
    PLACEMENT_NOTES,
    PLACEMENTS,
    attention_shape,
    create_analysis_model,
    placement_template,
    require_eager,
    untrained_like,
    use_template,
)
from .plots import (
    plot_head_heatmaps,
    plot_hidden_norms,
    plot_intervention_effects,
    plot_kv_norms,
    plot_massive_activations,
    plot_sink_by_layer,
    plot_sink_share,
)
from .scores import (
    SINK_TARGETS,
    massive_activations,
    norms_by_kind,
    position0_ratio,
    projection_norms,
    sink_positions,
    sink_scores,
    sink_share,
)
from .tables import layer_rows, placement_rows, receiver_rows, retrieval_comparison, summary_rows
from .views import AttentionGrid, attention_grid, plot_attention_grid, plotly_attention_grid, segment_runs

__all__ = [
    "PLACEMENTS",
    "PLACEMENT_NOTES",
    "TARGETS",
    "attention_shape",
    "require_eager",
    "create_analysis_model",
    "placement_template",
    "use_template",
    "counted_queries",
    "attention_mass",
    "received_share",
    "hidden_norms",
    "receiver_categories",
    "SinkMeasurement",
    "measure",
    "measure_placements",
    "ItemSample",
    "load_items",
    "TrainedRun",
    "load_trained_run",
    "read_run_summary",
    "placement_rows",
    "summary_rows",
    "layer_rows",
    "receiver_rows",
    "retrieval_comparison",
    "AttentionMap",
    "attention_map",
    "token_labels",
    "plot_sink_by_layer",
    "plot_head_heatmaps",
    "plot_hidden_norms",
    "plot_attention_map",
    "plotly_attention_map",
    # the literature's measures
    "SINK_TARGETS",
    "sink_positions",
    "sink_scores",
    "sink_share",
    "massive_activations",
    "projection_norms",
    "norms_by_kind",
    "position0_ratio",
    "capture_projections",
    "projection_modules",
    "kv_heads",
    "backbone_call_hook",
    "sink_share_rows",
    "massive_rows",
    "massive_summary_rows",
    "massive_carriers",
    "norm_ratio_rows",
    "plot_sink_share",
    "plot_massive_activations",
    "plot_kv_norms",
    "plot_intervention_effects",
    # interventions and their effect on retrieval
    "Intervention",
    "parse_intervention",
    "moved_placement",
    "intervention_mask",
    "mask_key_position",
    "mean_at_position",
    "mean_kv_position",
    "intervene",
    "untrained_like",
    "RetrievalScores",
    "InterventionResult",
    "per_query_precision",
    "retrieval_scores",
    "intervention_data",
    "run_interventions",
    "intervention_rows",
    "baseline_rows",
    # head and model views
    "AttentionGrid",
    "attention_grid",
    "segment_runs",
    "plotly_attention_grid",
    "plot_attention_grid",
]
