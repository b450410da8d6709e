"""The interactive embedding map: axis titles, legend entries, no fixed width."""
import numpy as np
from inspection_data import make_hand_run

from vixml_lib import inspection as insp


def test_plotly_map_titles_axes_names_queries_and_has_one_legend_entry_per_colour(tmp_path):
    run, _ = make_hand_run(tmp_path)
    proj = insp.project_embeddings(run, max_points=100)  # 3 queries + 5 labels
    fig = insp.embedding_map_plotly(proj)
    assert [t.name for t in fig.data] == ["labels", "queries"] and all(t.showlegend for t in fig.data)
    assert fig.layout.xaxis.title.text.startswith("PC1 (") and fig.layout.yaxis.title.text.startswith("PC2 (")
    assert fig.layout.width is None and fig.layout.autosize
    assert "querys" not in fig.to_json()
    assert fig.data[1].hovertext[0].startswith("query ")

    colours = np.array(["red" if i % 2 else "blue" for i in range(len(proj.items))])
    fig = insp.embedding_map_plotly(proj, colours, "colour")
    shown = [t.name for t in fig.data if t.showlegend]
    assert sorted(shown) == ["blue", "red"]  # one entry per colour, not per colour and kind
    for c in ("red", "blue"):
        traces = [t for t in fig.data if t.legendgroup == c]
        assert {t.marker.symbol for t in traces} <= {"circle", "x"}
        assert sum(len(t.x) for t in traces) == (colours == c).sum()
    assert "labels" in fig.layout.legend.title.text and "queries" in fig.layout.legend.title.text
