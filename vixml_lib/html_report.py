"""HTML reports that read offline: executed notebooks exported with every figure, and a run
folder's ``index.html``.

:func:`export_notebook_html` uses nbconvert's ``lab`` template with its network fetches
removed (require.js, MathJax, Mermaid and the widget loader come from CDNs there):

* plotly figures (``application/vnd.plotly.v1+json``, what plotly's Jupyter renderer
  outputs) become ``Plotly.newPlot`` divs, with plotly.js inlined once in the page's head
  (only when the notebook has a figure);
* ipywidgets views (tqdm progress bars, the query browser) are drawn as static HTML from
  the widget state papermill saves (``nb.metadata.widgets``): boxes, progress bars, HTML,
  images and ``Output`` widgets' outputs; other controls as ``description: value``;
* the page holds no ``<script src>``, so nothing is fetched; TeX in markdown shows as
  written (no MathJax).

:func:`write_index` writes ``reports/<run>/index.html``: the run's config, every notebook
with its status, seconds and links to its export and executed copy, the figures (PNG
thumbnails, interactive HTML files), the metrics files and the training runs.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from .io_utils import read_json
from .report import write_text
from .runs import PipelineFolder

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"

_TEMPLATE_NAME = "vixml_offline.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block extra_css %}<style>
.vixml-widget-row { display: flex; flex-flow: row wrap; gap: 6px; align-items: center; }
.vixml-widget-col { display: flex; flex-flow: column; gap: 4px; }
.vixml-widget-control { font-size: 12px; color: #555; }
.vixml-widget-row > .vixml-widget-col { flex: 1 1 0; min-width: 0; }
table.vixml-table td, table.vixml-table th { text-align: left; vertical-align: top; }
</style>
<!-- vixml:head -->{% endblock extra_css %}
"""
_HEAD_MARK = "<!-- vixml:head -->"


def export_notebook_html(notebook: str | Path, out: str | Path | None = None) -> Path:
    """Export an executed notebook to HTML that shows every figure offline (module
    docstring); ``out`` defaults to the notebook's ``.html`` beside it. Written atomically,
    with the umask's file mode."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    nb = nbformat.read(str(notebook), as_version=4)
    has_plotly = offline_outputs(nb)
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})])
    exporter.template_file = _TEMPLATE_NAME
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    head = ""
    if has_plotly:
        from plotly.offline import get_plotlyjs

        head = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    body = body.replace(_HEAD_MARK, head, 1)
    path = Path(out) if out is not None else PipelineFolder(notebook.parent).html(notebook)
    return write_text(path, body)


def offline_outputs(nb) -> bool:
    """Rewrite ``nb``'s outputs in place for an offline export: plotly figures -> HTML divs,
    widget views -> static HTML (the widget state is then dropped). True if a plotly
    figure was found."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    found = False
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data")
            if not data:
                continue
            if PLOTLY_MIME in data:
                output["data"] = {"text/html": plotly_div(data[PLOTLY_MIME])}
                found = True
            elif WIDGET_VIEW_MIME in data:
                model = data[WIDGET_VIEW_MIME].get("model_id", "")
                fallback = html.escape(str(data.get("text/plain", "")))
                shown = static_widget_html(state, model) if model in state else f"<pre>{fallback}</pre>"
                output["data"] = {"text/html": shown}
    nb.metadata.pop("widgets", None)
    return found


def plotly_div(figure: dict[str, Any]) -> str:
    """A plotly figure (its JSON dict) as a div drawn by the page's plotly.js (not included)."""
    import plotly.io as pio

    height = (figure.get("layout") or {}).get("height") or 500
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, default_width="100%",
                       default_height=f"{height}px", config={"responsive": True}, validate=False)


def _buffer(entry: dict[str, Any], name: str) -> bytes | None:
    """A binary widget attribute (e.g. an Image's ``value``) saved in the state's buffers."""
    for b in entry.get("buffers", []):
        if b.get("path") == [name]:
            return base64.b64decode(b["data"]) if b.get("encoding", "base64") == "base64" else b["data"].encode()
    return None


def _output_html(output: dict[str, Any]) -> str:
    """One output of an ``Output`` widget (images, HTML, text)."""
    data = output.get("data", {})
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            return f'<img src="data:{mime};base64,{data[mime]}" style="max-width:100%">'
    if "text/html" in data:
        return data["text/html"]
    text = output.get("text") or data.get("text/plain") or ""
    return f"<pre>{html.escape(text if isinstance(text, str) else ''.join(text))}</pre>"


def static_widget_html(state: dict[str, Any], model_id: str, depth: int = 0) -> str:
    """Static HTML for widget ``model_id`` of a saved widget state (children drawn in turn)."""
    entry = state.get(model_id)
    if entry is None or depth > 20:
        return ""
    name, s = entry.get("model_name", ""), entry.get("state", {})
    children = [static_widget_html(state, c.removeprefix("IPY_MODEL_"), depth + 1) for c in s.get("children", [])]
    desc = html.escape(str(s.get("description") or ""))
    if name in ("HBoxModel", "GridBoxModel"):
        return f'<div class="vixml-widget-row">{"".join(children)}</div>'
    if name in ("VBoxModel", "BoxModel", "AccordionModel", "TabModel"):
        return f'<div class="vixml-widget-col">{"".join(children)}</div>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<div>{s.get('value', '')}</div>"
    if name == "LabelModel":
        return f"<span>{html.escape(str(s.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        colour = {"success": "#4caf50", "danger": "#f44336", "warning": "#ff9800"}.get(s.get("bar_style") or "", "")
        style = f' style="accent-color:{colour}"' if colour else ""
        label = f"<span>{desc}</span>" if desc else ""
        return (f'{label}<progress value="{s.get("value", 0) - s.get("min", 0)}" '
                f'max="{s.get("max", 100) - s.get("min", 0)}"{style}></progress>')
    if name == "OutputModel":
        return '<div class="vixml-widget-col">' + "".join(_output_html(o) for o in s.get("outputs", [])) + "</div>"
    if name == "ImageModel":
        raw = _buffer(entry, "value")
        fmt = s.get("format", "png")
        return f'<img src="data:image/{fmt};base64,{base64.b64encode(raw).decode()}">' if raw else ""
    value = s.get("value")
    if "_options_labels" in s and s.get("index") is not None:
        value = s["_options_labels"][s["index"]]
    if value is None or name.endswith("LayoutModel") or name.endswith("StyleModel"):
        return ""
    label = f"{desc}: " if desc else ""
    return f'<span class="vixml-widget-control">{label}{html.escape(str(value))}</span>'


# ------------------------------------------------------------------ the run folder's index page

_INDEX_CSS = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }
.ok { color: #2e7d32; } .failed { color: #c62828; font-weight: bold; } .missing { color: #888; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; } .figs figure { margin: 0; width: 250px; }
.figs img { width: 250px; border: 1px solid #ddd; } figcaption { font-size: 12px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }"""


def _link(path: Path, base: Path, text: str | None = None) -> str:
    rel = path.relative_to(base).as_posix()
    return f'<a href="{html.escape(rel)}">{html.escape(text or rel)}</a>'


def _notebook_rows(folder: PipelineFolder, summary: dict[str, Any]) -> list[str]:
    """One table row per notebook of ``pipeline.json``, then per executed copy it does not list
    (status ``?``): status (with the failing cell and error), seconds, and links to its export,
    executed copy, the copy of a failed run and its metrics, where they exist."""
    entries = list(summary.get("notebooks") or [])
    listed = {e["notebook"] for e in entries}
    entries += [{"notebook": p.stem, "status": "?"} for p in sorted(folder.path.glob("[0-9][0-9]_*.ipynb"))
                if not p.stem.endswith(".failed") and p.stem not in listed]
    rows = []
    for e in entries:
        name = e["notebook"]
        status = str(e.get("status", "?"))
        where = f" (cell {e['cell']})" if e.get("cell") else ""
        error = f"<br><small>{html.escape(str(e['error'])[:300])}</small>" if e.get("error") else ""
        good, failed = folder.notebook(name + ".ipynb"), folder.failed_notebook(name + ".ipynb")
        files = ((folder.html(good), "HTML"), (good, "ipynb"), (folder.html(failed), "failed run (HTML)"),
                 (failed, "failed run (ipynb)"), (folder.notebook_metrics(name), "metrics"))
        links = [_link(path, folder.path, label) for path, label in files if path.is_file()]
        seconds = e.get("seconds")
        css = "ok" if status == "ok" else "failed" if status not in ("?", "running") else "missing"
        rows.append(f'<tr><td>{html.escape(name)}</td><td class="{css}">{html.escape(status)}{where}{error}</td>'
                    f"<td>{'' if seconds is None else f'{seconds:.1f}'}</td><td>{' · '.join(links)}</td></tr>")
    return rows


def _thumbnail(path: Path, base: Path) -> str:
    rel = html.escape(path.relative_to(base).as_posix())
    name = html.escape(path.stem)
    return (f'<figure><a href="{rel}"><img loading="lazy" src="{rel}" alt="{name}"></a>'
            f"<figcaption>{name}</figcaption></figure>")


def _figures(folder: PipelineFolder) -> str:
    """The figures by notebook (file-name prefix ``NN``): PNG / SVG as linked thumbnails,
    interactive HTML files as links."""
    if not folder.figures_dir.is_dir():
        return "<p class=missing>no figures</p>"
    files = sorted(p for p in folder.figures_dir.iterdir() if p.suffix in (".png", ".svg", ".html"))
    groups: dict[str, list[Path]] = {}
    for p in files:
        groups.setdefault(p.name.split("_")[0], []).append(p)
    parts = []
    for prefix, paths in groups.items():
        thumbs = "".join(_thumbnail(p, folder.path) for p in paths if p.suffix != ".html")
        links = "".join(f"<li>{_link(p, folder.path)} (interactive)</li>" for p in paths if p.suffix == ".html")
        parts.append(f"<h3>{html.escape(prefix)}</h3><div class=\"figs\">{thumbs}</div>"
                     + (f"<ul>{links}</ul>" if links else ""))
    return "".join(parts) or "<p class=missing>no figures</p>"


def _train_runs(folder: PipelineFolder) -> str:
    """The training runs with their final P@1 / P@5 and links to their metrics and config."""
    items = []
    for name in folder.train_runs():
        run = folder.train_run(name)
        final = run.read_metrics().get("final", {}) if run.is_finished() else {}
        numbers = ", ".join(f"{k} {final[k]:.2f}" for k in ("P@1", "P@5") if isinstance(final.get(k), (int, float)))
        links = " · ".join(_link(p, folder.path, p.name) for p in (run.metrics, run.config) if p.is_file())
        items.append(f"<li>{html.escape(name)}: {numbers or 'not finished'} ({links})</li>")
    return f"<ul>{''.join(items)}</ul>" if items else "<p class=missing>none</p>"


def index_html(run_dir: str | Path) -> str:
    """The index page of a run folder (see the module docstring)."""
    folder = PipelineFolder(run_dir)
    summary = read_json(folder.summary) if folder.summary.is_file() else {}
    config = folder.config.read_text(encoding="utf-8") if folder.config.is_file() else f"(no {folder.config.name})"
    state = ", ".join(f"{k} {html.escape(str(summary[k]))}" for k in ("status", "mode") if k in summary)
    metrics = [folder.metrics] + (sorted(folder.metrics_dir.glob("*.json")) if folder.metrics_dir.is_dir() else [])
    metric_links = " · ".join(_link(p, folder.path) for p in metrics if p.is_file()) or "none"
    name = html.escape(folder.path.resolve().name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>run {name}</title><style>{_INDEX_CSS}</style></head>
<body><h1>Run {name}</h1>
<p>{html.escape(str(folder.path.resolve()))} · {state + " · " if state else ""}index written \
{time.strftime("%Y-%m-%d %H:%M:%S")}</p>
<h2>Notebooks</h2>
<table><thead><tr><th>notebook</th><th>status</th><th>seconds</th><th>files</th></tr></thead>
<tbody>{"".join(_notebook_rows(folder, summary))}</tbody></table>
<h2>Figures</h2>{_figures(folder)}
<h2>Metrics</h2><p>{metric_links}</p>
<h2>Training runs</h2>{_train_runs(folder)}
<h2>Config</h2><pre>{html.escape(config)}</pre>
</body></html>
"""


def write_index(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/index.html`` (atomically, with the umask's file mode)."""
    return write_text(PipelineFolder(run_dir).index, index_html(run_dir))

