"""The notebooks in a real browser: Playwright drives Debian's Chromium (``apt-get install
chromium``; Playwright's own browser download is not used) against JupyterLab on 127.0.0.1
with a token, and against the offline HTML reports.

* notebook 06, opened from ``notebooks/`` with its default ``data_root`` / ``run_dir``, on the
  tiny demo dataset with two tiny trained runs: the slider, the search box and the dropdown
  change the query, and the rendered query id, the dropdown and both runs' images agree;
  an empty search clears the view;
* an executed notebook's HTML export, opened with every network request refused: the
  plotly figure and the progress bar are drawn, the table keeps its templates, no image is
  broken; the run's index.html links only files that exist.

Skipped only where Chromium is missing (``.ci/run`` installs it). Set ``VIXML_SCREENSHOTS``
to a folder to keep the screenshots.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("VIXML_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TINY = {"backbone": "random-tiny-bert", "kind": "encoder"}
TEMPLATE = "<title> This product text <img> and its image <|im_end|>"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` "
                    "(.ci/run does) or set VIXML_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def keep_screenshot(path: Path) -> None:
    folder = os.environ.get("VIXML_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A checkout-like folder: notebooks/06 (parameters for the tiny data), data/demo-tiny,
    and two tiny trained runs in reports/tiny/train/."""
    from vixml_lib.data.demo import make_demo_dataset
    from vixml_lib.data.prepare import prepare_dataset
    from vixml_lib.runs import PipelineFolder
    from vixml_lib.training import TrainConfig, train

    root = tmp_path_factory.mktemp("checkout")
    data = root / "data" / "demo-tiny"
    make_demo_dataset(data, preset="tiny", seed=0)
    prepare_dataset(data)
    runs = PipelineFolder(root / "reports" / "tiny")
    for name, seed, epochs in (("vixml-prime", 0, 2), ("text-prime", 1, 1)):  # the notebook's default run names
        train(TrainConfig(data_dir=str(data), out_dir=str(runs.train_run(name).path),
                          model="minilm", use_images=False, model_overrides=dict(TINY), epochs=epochs, batch_size=64,
                          warmup_steps=2, lr=1e-3, seed=seed, threads=1), progress=False)
    nb = nbformat.read(str(REPO / "notebooks" / "06_retrieval_inspection.ipynb"), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    # data_root and run_dir keep their defaults: relative to the checkout, from the kernel's folder notebooks/
    params.source += '\ndataset = "demo-tiny"\nsource_run = "reports/tiny"\nn_static = 2\nmax_points = 300\n'
    (root / "notebooks").mkdir()
    nbformat.write(nb, str(root / "notebooks" / "06_retrieval_inspection.ipynb"))
    return root


@pytest.fixture(scope="module")
def lab(checkout):
    """JupyterLab serving the checkout on 127.0.0.1 with a token; yields its base URL (token in it)."""
    port, token = free_port(), os.urandom(12).hex()
    home = checkout.parent / (checkout.name + "-jupyter")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "IPYTHONDIR": str(home / "ipython")}
    # no news or update checks (nothing to fetch, no toast over the notebook)
    settings = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # start the notebook's kernel without asking; no autosave ("file changed on disk" dialogs)
    for plugin, values in (("notebook-extension/tracker", {"autoStartDefaultKernel": True}),
                           ("docmanager-extension/plugin", {"autosave": False})):
        path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    log = open(home.with_suffix(".log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={checkout}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
         "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=checkout)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start; see {log.name}") from None
                time.sleep(0.5)
        yield base, token, Path(log.name)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


STATE_JS = """() => {
  const header = document.querySelector('b.vixml-query');
  const select = document.querySelector('.widget-dropdown select');
  const handle = document.querySelector('.widget-slider .noUi-handle');
  const imgs = [...document.querySelectorAll('img.vixml-query-figure')];
  return {header: header ? Number(header.dataset.item) : null,
          headerText: header ? header.parentElement.textContent : document.body.innerText.includes('no query matches'),
          images: imgs.map(i => Number(i.dataset.item)), loaded: imgs.every(i => i.complete && i.naturalWidth > 0),
          options: select ? [...select.options].map(o => o.textContent) : [],
          selected: select && select.selectedIndex >= 0 ? select.options[select.selectedIndex].textContent : null,
          sliderMax: handle ? Number(handle.getAttribute('aria-valuemax')) : null,
          sliderNow: handle ? Number(handle.getAttribute('aria-valuenow')) : null};
}"""


DIALOGS_JS = "() => [...document.querySelectorAll('dialog.jp-Dialog')].map(d => d.innerText.trim())"


def answer_dialogs(page, seen: list[str]) -> None:
    """Answer JupyterLab's modal dialogs with their default button and note their text in ``seen``.

    On a loaded machine the first kernel start can fail; JupyterLab then asks "Select Kernel"
    with the notebook's kernel preselected, and its default button starts that kernel. A dialog
    that hides a real problem (a dead kernel) leaves the cells unrun, and the test then fails
    with every dialog it saw."""
    for text in page.evaluate(DIALOGS_JS):
        seen.append(text)
        page.locator("dialog.jp-Dialog .jp-Dialog-button.jp-mod-accept").last.click()
        page.wait_for_timeout(500)


def run_all_cells(page, url: str, dialogs: list[str]) -> None:
    """Open ``url`` in JupyterLab, wait for its kernel and run every cell from the Run menu."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(url)
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    deadline = time.time() + 120
    while not page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count():
        answer_dialogs(page, dialogs)
        if time.time() > deadline:
            raise PlaywrightTimeout("the notebook's kernel never became idle")
        page.wait_for_timeout(300)
    for _ in range(4):  # the menu may not react while JupyterLab is still settling
        answer_dialogs(page, dialogs)
        try:
            page.get_by_role("menuitem", name="Run", exact=True).click(timeout=10_000)
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click(timeout=10_000)
            page.wait_for_selector(".jp-InputArea-prompt:text-matches('\\[(\\*|\\d+)\\]')", timeout=20_000)
            return
        except PlaywrightTimeout:  # not started (a dialog came, or the menu did not open): again
            page.keyboard.press("Escape")
    raise PlaywrightTimeout("Run All Cells never started the cells")


def wait_for_state(page, check, timeout=90):
    """Poll the browser's DOM until ``check(state)`` holds; return the state (or fail with the last one)."""
    deadline = time.time() + timeout
    while True:
        state = page.evaluate(STATE_JS)
        if check(state):
            return state
        if time.time() > deadline:
            pytest.fail(f"browser state never agreed: {json.dumps(state)[:2000]}")
        page.wait_for_timeout(300)


def agrees(state, item=None):
    """Header, dropdown selection and both runs' images name the same query (``item`` if given)."""
    if state["header"] is None or state["selected"] is None or len(state["images"]) != 2 or not state["loaded"]:
        return False
    chosen = int(state["selected"].split(":")[0])
    ok = state["header"] == chosen and state["images"] == [chosen, chosen]
    ok &= state["sliderNow"] == state["options"].index(state["selected"])
    ok &= state["sliderMax"] + 1 == len(state["options"])
    return ok and (item is None or chosen == item)


def test_query_browser_in_jupyterlab_stays_in_sync(chromium, checkout, lab, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    base, token, log = lab
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    dialogs: list[str] = []
    try:
        run_all_cells(page, f"{base}/lab/tree/notebooks/06_retrieval_inspection.ipynb?token={token}", dialogs)
        page.wait_for_selector("img.vixml-query-figure", timeout=300_000)
    except PlaywrightTimeout as e:
        shot = tmp_path / "06_browser_timeout.png"
        page.screenshot(path=str(shot))
        keep_screenshot(shot)
        lines = log.read_text(errors="replace").splitlines()[-40:]
        pytest.fail(f"{str(e).splitlines()[0]}\ndialogs seen: {dialogs}\nscreenshot: {shot}\n"
                    f"JupyterLab log ({log}), last lines:\n" + "\n".join(lines))
    if dialogs:  # answered and passed, but worth seeing in the summary
        warnings.warn(f"JupyterLab showed {len(dialogs)} dialog(s), answered with their default button: {dialogs}",
                      stacklevel=1)
    first = wait_for_state(page, agrees)
    # the notebook found ../data and ../reports/tiny from notebooks/ and wrote to reports/interactive
    assert (checkout / "reports" / "interactive" / "figures" / "06_query_0.png").is_file()
    assert not (checkout / "notebooks" / "reports").exists()
    assert first["sliderNow"] == 0 and first["sliderMax"] + 1 == len(first["options"]) > 3

    # 1. the slider: two steps to the right (keyboard on its handle)
    page.locator(".widget-slider .noUi-handle").first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expected = int(first["options"][2].split(":")[0])
    wait_for_state(page, lambda s: agrees(s, expected) and s["sliderNow"] == 2)

    # 2. the search box: a word of some title; every option matches, the first is shown
    word = first["options"][3].split(":", 1)[1].split()[0].strip("(),").lower()
    search = page.locator(".widget-text input[placeholder='search titles']").first
    search.fill(word)
    search.press("Enter")
    state = wait_for_state(page, lambda s: agrees(s) and all(word in o.split("(P@")[0].lower() for o in s["options"])
                           and s["sliderNow"] == 0)
    assert word in state["headerText"].lower()

    # 3. the dropdown: the last option; the slider follows
    last = len(state["options"]) - 1
    page.locator(".widget-dropdown select").first.select_option(index=last)
    expected = int(state["options"][last].split(":")[0])
    wait_for_state(page, lambda s: agrees(s, expected) and s["sliderNow"] == last)
    shot = tmp_path / "06_browser_after_three_changes.png"
    page.locator(".widget-vbox:has(b.vixml-query)").first.screenshot(path=str(shot))
    keep_screenshot(shot)

    # an empty result clears the view
    search.fill("no title has this")
    search.press("Enter")
    cleared = wait_for_state(page, lambda s: s["header"] is None and not s["images"])
    assert cleared["headerText"] is True and cleared["options"] == []
    page.close()


REPORT_CELLS = [
    "from tqdm.auto import tqdm\nimport plotly.graph_objects as go\n"
    "from vixml_lib.report import notebook_logging, table\nimport logging\n"
    "notebook_logging()\nlogging.getLogger('demo').info('an info line')",
    "for _ in tqdm(range(5), desc='work'):\n    pass",
    f"table([{{'placement': f'p{{i}}', 'template': {TEMPLATE!r}}} for i in range(5)])",
    "go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], mode='markers')).show()",
]


def test_report_html_draws_plotly_and_progress_offline(chromium, tmp_path):
    import papermill as pm

    from vixml_lib import html_report
    from vixml_lib.runs import PipelineFolder

    source = tmp_path / "src.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in REPORT_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(source))
    run = PipelineFolder(tmp_path / "run")
    run.path.mkdir()
    executed = run.notebook("01_report.ipynb")
    pm.execute_notebook(str(source), str(executed), kernel_name="python3", progress_bar=False, cwd=str(run.path))
    html = html_report.export_notebook_html(executed)
    run.summary.write_text(json.dumps({"notebooks": [{"notebook": "01_report", "status": "ok", "seconds": 1.0}]}))
    index = html_report.write_index(run.path)

    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    remote = []
    page.route("**/*", lambda r: (remote.append(r.request.url), r.abort()) if not r.request.url.startswith(
        ("file:", "data:")) else r.continue_())
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html.as_uri())
    page.wait_for_selector(".plotly-graph-div .main-svg", timeout=30_000)
    assert page.locator(".plotly-graph-div .scatterlayer .point").count() == 3
    assert page.locator("progress").count() == 1 and re.search(r"work:\s100%", page.inner_text("body"))
    rows = page.locator("table.vixml-table tbody tr")
    assert rows.count() == 5 and all(rows.nth(i).locator("td").nth(1).inner_text() == TEMPLATE for i in range(5))
    assert page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length") == 0
    stderr_blocks = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    assert "an info line" in page.inner_text("body") and stderr_blocks.count() == 0
    assert not remote and not errors
    shot = tmp_path / "report_offline.png"
    page.screenshot(path=str(shot), full_page=True)
    keep_screenshot(shot)

    page.goto(index.as_uri())
    hrefs = page.eval_on_selector_all("a", "els => els.map(e => e.getAttribute('href'))")
    assert "01_report.html" in hrefs and all((run.path / h).is_file() for h in hrefs)
    assert "ok" in page.locator("tr", has_text="01_report").inner_text()
    page.close()
