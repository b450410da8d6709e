"""Notebook tables, file modes, logging, the offline HTML export and a run folder's index page."""
import json
import logging
import os
import re
from html.parser import HTMLParser

import nbformat
import pytest

from vixml_lib import html_report
from vixml_lib.report import notebook_logging, save_metrics, table, write_text
from vixml_lib.runs import PipelineFolder

TEMPLATE = "<title> This product text <img> and its image <|im_end|>"


class Cells(HTMLParser):
    """Text of every <td>/<th>, per row, and every tag seen (as a browser would parse it)."""

    def __init__(self):
        super().__init__()
        self.rows, self.tags, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def parse(html):
    p = Cells()
    p.feed(html)
    return p


def test_table_cells_keep_their_text_when_parsed_as_html():
    rows = [{"placement": f"p{i}", "template": TEMPLATE.replace("This", f"#{i} & <b>"), "P@1": 12.3456, "n": i}
            for i in range(5)] + [{"placement": "x<y", "note": None}]
    t = table(rows, digits=1)
    parsed = parse(t._repr_html_())
    assert parsed.rows[0] == ["placement", "template", "P@1", "n", "note"]
    assert len(parsed.rows) == 1 + 6  # every row survives
    assert [r[1] for r in parsed.rows[1:6]] == [r["template"] for r in rows[:5]]
    assert parsed.rows[1][2] == "12.3" and parsed.rows[6] == ["x<y", "", "", "", ""]
    assert not {"img", "title", "b"} & set(parsed.tags)  # no cell text became a tag
    assert repr(table([{"a": 1.0, "bb": "<x>"}, {"a": 22.5}])).splitlines() == ["a      bb", "1.00   <x>", "22.50"]


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_report_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    expected = 0o666 & ~mask
    metrics = save_metrics(tmp_path, "01_x", {"a": 1})
    text = write_text(tmp_path / "page.html", "<p>hi</p>")
    index = html_report.write_index(tmp_path)
    for path in (metrics, text, index):
        assert path.stat().st_mode & 0o777 == expected, (path, oct(path.stat().st_mode))
    assert json.loads(metrics.read_text()) == {"a": 1}


def test_notebook_logging_sends_info_to_stdout_and_warnings_to_stderr(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        notebook_logging(quiet=["vixml_test.noisy"])
        logging.getLogger("vixml_test.a").info("step one")
        logging.getLogger("vixml_test.a").warning("careful")
        logging.getLogger("vixml_test.noisy").info("per-epoch line")
        notebook_logging()  # again: still one line per record
        logging.getLogger("vixml_test.a").info("step two")
        out, err = capsys.readouterr()
        assert out.splitlines() == ["INFO vixml_test.a: step one", "INFO vixml_test.a: step two"]
        assert err.splitlines() == ["WARNING vixml_test.a: careful"]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.getLogger("vixml_test.noisy").setLevel(logging.NOTSET)


def _widget_state():
    """What papermill saves for a finished tqdm bar: HBox(HTML, FloatProgress, HTML)."""
    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "model_module_version": "2.0.0",
                "state": state}

    return {"box": model("HBoxModel", children=["IPY_MODEL_d", "IPY_MODEL_p", "IPY_MODEL_s"]),
            "d": model("HTMLModel", value="encode test: 100%"),
            "p": model("FloatProgressModel", value=7.0, min=0.0, max=10.0, bar_style="success"),
            "s": model("HTMLModel", value=" 7/7 [00:01&lt;00:00]"),
            "dd": model("DropdownModel", description="query", _options_labels=["3: red hat", "5: lamp"], index=1)}


def _report_notebook(path, plotly=True):
    nb = nbformat.v4.new_notebook()
    fig = {"data": [{"type": "scatter", "x": [1, 2], "y": [3, 4]}], "layout": {"height": 300}}
    outputs = [nbformat.v4.new_output("stream", name="stdout", text="INFO x: hello\n"),
               nbformat.v4.new_output("display_data", data={
                   "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2},
                   "text/plain": "HBox(...)"}),
               nbformat.v4.new_output("display_data", data={
                   "application/vnd.jupyter.widget-view+json": {"model_id": "dd", "version_major": 2},
                   "text/plain": "Dropdown(...)"}),
               nbformat.v4.new_output("display_data", data={
                   "application/vnd.jupyter.widget-view+json": {"model_id": "gone", "version_major": 2},
                   "text/plain": "Text(value='fallback')"})]
    if plotly:
        outputs += [nbformat.v4.new_output("display_data", data={"application/vnd.plotly.v1+json": fig,
                                                                 "text/plain": "Figure()"})] * 2
    cell = nbformat.v4.new_code_cell("work()")
    cell.outputs = outputs
    table_cell = nbformat.v4.new_code_cell("table(rows)")
    table_cell.outputs = [nbformat.v4.new_output("execute_result", data={
        "text/html": table([{"template": TEMPLATE}])._repr_html_(), "text/plain": "t"}, execution_count=2)]
    nb.cells = [nbformat.v4.new_markdown_cell("# Report"), cell, table_cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0,
                                                                             "state": _widget_state()}}
    nbformat.write(nb, str(path))
    return path


def test_export_needs_no_network_and_embeds_plotly_once(tmp_path):
    out = html_report.export_notebook_html(_report_notebook(tmp_path / "01_r.ipynb"))
    assert out == tmp_path / "01_r.html"
    page = out.read_text()
    assert not re.findall(r"<script[^>]*\bsrc=", page)  # nothing is fetched: no require.js, MathJax, widget loader
    assert "application/vnd.jupyter.widget-state+json" not in page
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined once for two figures
    assert page.count("Plotly.newPlot(") == 2 and 'height:300px' in page
    # the progress bar and the dropdown drawn from the saved widget state; an unknown model by its text
    bars = re.findall(r"<progress([^>]*)></progress>", page)
    assert len(bars) == 1 and {'value="7.0"', 'max="10.0"', 'style="accent-color:#4caf50"'} == set(bars[0].split())
    assert "encode test: 100%" in page and "query: 5: lamp" in page and "Text(value='fallback')" in page
    assert "&lt;title&gt; This product text &lt;img&gt;" in page


def test_export_without_figures_has_no_plotly(tmp_path):
    page = html_report.export_notebook_html(_report_notebook(tmp_path / "02_r.ipynb", plotly=False)).read_text()
    assert "Plotly.newPlot" not in page and len(page) < 1_000_000


def test_index_links_notebooks_figures_metrics_and_shows_config_and_status(tmp_path):
    run = PipelineFolder(tmp_path / "demo")
    run.path.mkdir()
    run.config.write_text("run_name: demo\ndataset: <demo-small>\n")
    run.summary.write_text(json.dumps({"status": "failed", "mode": "new", "notebooks": [
        {"notebook": "01_data_preparation", "status": "ok", "seconds": 29.04},
        {"notebook": "02_image_caching", "status": "failed", "seconds": 3.5, "cell": 4, "error": "ValueError: <x>"}]}))
    run.notebook("01_data_preparation.ipynb").write_text("{}")
    run.failed_notebook("02_image_caching.ipynb").write_text("{}")
    run.notebook("06_retrieval_inspection.ipynb").write_text("{}")  # run by hand: not in pipeline.json
    run.html(run.notebook("01_data_preparation.ipynb")).write_text("<html></html>")
    save_metrics(run.path, "01_data_preparation", {"n": 1})
    run.metrics.write_text("{}")
    run.figures_dir.mkdir()
    for name in ("01_labels.png", "06_embedding_map.html", "plotly.min.js"):
        (run.figures_dir / name).write_text("x")
    train = run.train_run("minilm-vixml")
    train.path.mkdir(parents=True)
    train.metrics.write_text(json.dumps({"final": {"P@1": 41.234, "P@5": 20.0}}))
    page = html_report.write_index(run.path).read_text()
    p = parse(page)
    assert p.rows[1:] == [["01_data_preparation", "ok", "29.0", "HTML · ipynb · metrics"],
                          ["02_image_caching", "failed (cell 4)ValueError: <x>", "3.5", "failed run (ipynb)"],
                          ["06_retrieval_inspection", "?", "", "ipynb"]]
    assert "status failed, mode new" in page
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert hrefs == ["01_data_preparation.html", "01_data_preparation.ipynb", "metrics/01_data_preparation.json",
                     "02_image_caching.failed.ipynb", "06_retrieval_inspection.ipynb", "figures/01_labels.png",
                     "figures/06_embedding_map.html",
                     "metrics.json", "metrics/01_data_preparation.json", "train/minilm-vixml/metrics.json"]
    assert all((run.path / h).is_file() for h in hrefs)
    assert 'src="figures/01_labels.png"' in page and "plotly.min.js" not in page
    assert "minilm-vixml: P@1 41.23, P@5 20.00" in page
    assert "dataset: &lt;demo-small&gt;" in page
