"""Attention sinks: how much attention the first position collects, and what an image there changes.

Decoder LLMs send a large share of every query's attention to the first token of the
sequence (an *attention sink*, with an outsized hidden-state norm). The paper argues that
an image vector placed first disrupts this, which is why ``text_image`` beats
``image_text``. This package measures it on real prompts, assembled by the model's own
prompt assembler (the code path training uses), for several placements of the image:
per layer and head, the attention mass on position 0, the images and the EOS, the
strongest receivers and the hidden-state norms.

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
- :mod:`~vixml_lib.sinks.plots` -- figures of the measurements.

Usage::

    from vixml_lib import sinks
    model = sinks.create_analysis_model("smollm2-vixml", vision_dim=384)   # eager attention
    sample = sinks.load_items("data/demo-small", model, n_items=32)
    results = sinks.measure_placements(model, sample.inputs, model_name="untrained")
    sinks.summary_rows(results); sinks.plot_sink_by_layer(results)
"""
from .items import ItemSample, TrainedRun, load_items, load_trained_run, read_run_summary
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
    use_template,
)
from .plots import plot_head_heatmaps, plot_hidden_norms, plot_sink_by_layer
from .tables import layer_rows, placement_rows, receiver_rows, retrieval_comparison, summary_rows

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
]
