import json
from pathlib import Path

import nbformat
import pytest
import yaml
from notebook_data import make_notebook

from vixml_lib.cli import main
from vixml_lib.config import PipelineConfig, load_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def nb_dir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(
        d / "01_ok.ipynb",
        'run_dir = "."\nseed = 0\nscale = 1',
        "from vixml_lib.report import save_metrics\nsave_metrics(run_dir, '01_ok', {'value': seed * scale})",
    )
    return d


def write_params(tmp_path, nb_dir, **extra):
    params = {"run_name": "t", "data_root": str(tmp_path / "data"), "notebooks_dir": str(nb_dir), "export_html": False}
    params.update(extra)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_parameters_reach_only_declaring_notebooks_and_metrics_merge(tmp_path, nb_dir, capsys):
    params = write_params(tmp_path, nb_dir, seed=3, notebook_parameters={"01_ok": {"scale": 5}})
    out = tmp_path / "run"
    assert main(["pipeline", "--params", str(params), "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text()) == {"01_ok": {"value": 15}}
    summary = json.loads((out / "pipeline.json").read_text())
    entry = summary["notebooks"][0]
    assert entry["status"] == "ok"
    # dataset/demo_preset are not declared by the notebook, so they are not injected
    assert set(entry["parameters"]) == {"run_dir", "seed", "scale"}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["notebook_parameters"] == {"01_ok": {"scale": 5}}
    executed = nbformat.read(str(out / "01_ok.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_failing_notebook_stops_run_names_cell_and_keeps_copy(tmp_path, nb_dir, capsys):
    make_notebook(nb_dir / "02_fail.ipynb", "run_dir = '.'", "x = 1", "raise ValueError('boom in cell two')")
    make_notebook(nb_dir / "03_never.ipynb", "run_dir = '.'", "open('ran', 'w').write('yes')")
    out = tmp_path / "run"
    params = write_params(tmp_path, nb_dir, export_html=True)
    assert main(["pipeline", "--params", str(params), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    # cell 3 of the source notebook (papermill's injected cell is not counted), quoted
    assert "02_fail.ipynb failed at cell 3 (\"raise ValueError('boom in cell two')\")" in err
    assert "ValueError: boom in cell two" in err
    # the failed copy is kept beside (never in place of) a good copy, and named in the message
    assert (out / "02_fail.failed.ipynb").exists() and (out / "02_fail.failed.html").exists()
    assert "02_fail.failed.ipynb" in err and not (out / "02_fail.ipynb").exists()
    assert not (out / "03_never.ipynb").exists() and not (out / "ran").exists()
    statuses = [e["status"] for e in json.loads((out / "pipeline.json").read_text())["notebooks"]]
    assert statuses == ["ok", "failed"]
    assert json.loads((out / "pipeline.json").read_text())["notebooks"][1]["cell"] == 3


def test_unknown_settings_are_clear_errors(tmp_path, nb_dir, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: x\nepochs: 3\n")
    assert main(["pipeline", "--params", str(bad)]) == 2
    assert "unknown setting(s) epochs" in capsys.readouterr().err
    params = write_params(tmp_path, nb_dir, notebook_parameters={"01_ok": {"nope": 1}})
    assert main(["pipeline", "--params", str(params), "--out", str(tmp_path / "r")]) == 2
    assert "nope not declared in its parameters cell" in capsys.readouterr().err


def test_cli_overrides_beat_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("dataset: a\nseed: 2\n")
    cfg = load_config(PipelineConfig, path, {"dataset": "b", "run_name": None})
    assert cfg.dataset == "b" and cfg.seed == 2 and cfg.run_name == "demo"


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    """The real notebooks on the tiny demo preset, as `bash run.sh demo` runs them on `small`."""
    cfg = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    cfg["data_root"] = str(tmp_path / "data")
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "reports" / "tiny"
    assert main(["pipeline", "--params", str(params), "--out", str(out)]) == 0
    assert (out / "01_data_preparation.ipynb").exists() and (out / "01_data_preparation.html").exists()
    for fig in ("01_labels", "01_title_lengths", "01_image_coverage", "01_samples"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    stats = json.loads((out / "metrics.json").read_text())["01_data_preparation"]
    assert stats["n_labels"] > 0 and stats["trn_labels_per_query_mean"] >= 1
    assert 0 < stats["tst_items_with_images_pct"] < 100
    assert stats["offline-minilm/trn_tokens_mean"] > 1
    html = (out / "01_data_preparation.html").read_text()
    assert "image/png" in html  # plots are embedded in the report
    # 02: caches for every split, and the offline encoder keeps colour linearly recoverable
    caching = json.loads((out / "metrics.json").read_text())["02_image_caching"]
    assert set(caching["splits"]) == {"trn", "tst", "lbl"}
    assert all(v["images"] > 0 and v["failed"] == 0 for v in caching["splits"].values())
    colour = caching["probe"]["colour"]
    assert colour["accuracy"] > colour["majority_baseline"] + 0.4
    for fig in ("02_coverage", "02_probe", "02_neighbours"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    features = tmp_path / "data" / "demo-tiny" / "features"
    assert (features / "offline-efficientnet-lite0-64" / "lbl" / "header.json").exists()
    # 03: the rows trained (PRIME, late fusion), same seed twice gave identical metrics, images beat text
    results = json.loads((out / "metrics.json").read_text())["03_training"]
    assert results["determinism_identical_metrics"] is True
    assert results["vixml-prime"]["final"]["P@1"] > results["text-prime"]["final"]["P@1"]
    assert results["vixml-late-prime"]["fusion"] == "late" and results["vixml-prime"]["method"] == "prime"
    for run in ("vixml-prime", "text-prime", "vixml-late-prime"):
        assert (out / "train" / run / "config.yaml").exists() and (out / "train" / run / "embeddings_lbl.npy").exists()
    assert (out / "train" / "vixml-prime" / "prime_clusters.npy").exists()
    assert (out / "figures" / "03_learning_curves.png").exists()
    # the decoder trained with both image placements
    for run in ("smollm2-text_image", "smollm2-image_text"):
        assert results[run]["template"] == run.split("-")[1] and results[run]["final"]["P@1"] >= 0
    # 04: every placement measured; only the image-first one has an image at position 0
    sinks = json.loads((out / "metrics.json").read_text())["04_attention_sink_analysis"]
    first = {row["placement"]: row for row in sinks["summary"]}
    assert set(first) >= {"text_image", "image_text", "image_first", "image_after_prefix", "text_only"}
    assert first["image_first"]["position 0"] == "images" and first["text_image"]["position 0"] != "images"
    for fig in ("04_sink_by_layer", "04_attention_map", "04_sink_share", "04_massive_activations", "04_kv_norms",
                "04_interventions", "04_model_view_text_image"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    assert {row["placement"] for row in sinks["sink_share"]} >= set(first)
    assert sinks["interventions"] and all(r["ΔP@1 95% low"] <= r["ΔP@1"] <= r["ΔP@1 95% high"]
                                          for r in sinks["interventions"])
    # 06: the two runs paired on the same queries, static figures for the report
    inspect = json.loads((out / "metrics.json").read_text())["06_retrieval_inspection"]
    assert inspect["pair"]["n_common"] > 0
    assert inspect["difference"][0]["P@1"].count("[") == 1  # the run-vs-run difference with its interval
    assert results["differences"] and "[" in results["differences"][0]["P@1"]  # 03's pairs too
    for fig in ("06_differences", "06_query_0", "06_embedding_map"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    # the reports: every figure offline (plotly inlined, no script fetched), one index of the run
    html = (out / "06_retrieval_inspection.html").read_text()
    assert "Plotly.newPlot" in html and "<script src" not in html
    assert (out / "index.html").is_file() and "06_retrieval_inspection.html" in (out / "index.html").read_text()
    # 05: the reduced grid, every cell trained
    abl = json.loads((out / "metrics.json").read_text())["05_prompt_template_ablations"]
    assert abl["cells"] == 6 and abl["failed"] == 0
    assert (out / "ablations" / "results.csv").exists() and (out / "figures" / "05_ablations.png").stat().st_size > 1000
