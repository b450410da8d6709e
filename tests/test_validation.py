"""Config validation (vixml_lib.validation, vixml_lib.typecheck): the rules table cannot rot,
types and ranges are checked with messages that name the source, key, value and what is
allowed, numbers written as text are converted, and devices, encodings, model names and
saved model folders are checked at the door."""
from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch
import yaml

from vixml_lib import pretrained
from vixml_lib.config import PipelineConfig, config_from_dict, describe_changes, load_config, read_config_file
from vixml_lib.devices import resolve_device
from vixml_lib.errors import ConfigError, DataFormatError, DeviceError, ModelUnavailable, VixmlError
from vixml_lib.losses import LossConfig
from vixml_lib.models import ModelConfig
from vixml_lib.training.config import TrainConfig
from vixml_lib.validation import CONFIG_CLASSES, RULES, _rule_test, check_notebook_parameter, rule_allows


def _class(name: str):
    return getattr(importlib.import_module(CONFIG_CLASSES[name]), name)


def test_every_rule_names_an_existing_field_and_parses():
    for key, spec in RULES.items():
        cls_name, _, field = key.partition(".")
        assert cls_name in CONFIG_CLASSES, f"{key}: unknown config class"
        cls = _class(cls_name)
        assert field in {f.name for f in dataclasses.fields(cls)}, f"{key}: {cls_name} has no field {field!r}"
        _rule_test(spec)  # raises for a rule it cannot read


def test_the_defaults_pass_their_own_rules():
    for cls_name in CONFIG_CLASSES:
        cls = _class(cls_name)
        default = cls()
        for f in dataclasses.fields(cls):
            value = getattr(default, f.name)
            for item in value if isinstance(value, list) else [value]:
                if item is not None:
                    assert rule_allows(f"{cls_name}.{f.name}", item), f"{cls_name}.{f.name} default {item!r}"


def test_numbers_written_as_text_are_converted():
    values = yaml.safe_load("epochs: '3'\nlr: 5e-4\nbatch_size: 64.0\ngrad_clip: null\nthreads: 'none'\n"
                            "recall_k: ['10', 100]\nsave_embeddings: 'false'\nloss: {margin: '0.2'}")
    assert values["lr"] == "5e-4"  # YAML 1.1 reads this as a string
    c = config_from_dict(TrainConfig, values, source="t.yaml")
    assert (c.epochs, c.lr, c.batch_size, c.grad_clip, c.threads) == (3, 0.0005, 64, None, None)
    assert type(c.epochs) is int and type(c.lr) is float and c.recall_k == [10, 100]
    assert c.save_embeddings is False and c.loss.margin == 0.2 and isinstance(c.loss, LossConfig)


@pytest.mark.parametrize("values, words", [
    ({"epochs": "three"}, ["t.yaml", "epochs = 'three'", "wrong type", "an integer"]),
    ({"epochs": 2.5}, ["epochs = 2.5", "an integer"]),
    ({"epochs": True}, ["epochs = True", "an integer"]),  # a bool is not a number
    ({"epochs": 0}, ["epochs = 0", "out of range", "an integer >= 1"]),
    ({"batch_size": -4}, ["batch_size = -4", ">= 1"]),
    ({"eval_every": 0}, ["eval_every = 0"]),
    ({"max_len": 0}, ["max_len = 0"]),
    ({"lr": "fast"}, ["lr = 'fast'", "a number"]),
    ({"lr": 0}, ["lr = 0", "> 0"]),
    ({"lr": float("nan")}, ["lr = nan", "a number"]),
    ({"recall_k": [100, 0]}, ["recall_k[1] = 0"]),
    ({"recall_k": 100}, ["recall_k = 100", "a list"]),
    ({"device": "gpu"}, ["device = 'gpu'", "auto, cpu, cuda, cuda:N"]),
    ({"retrieval": "faiss"}, ["retrieval = 'faiss'", "exact, faiss-flat, faiss-ivf"]),
    ({"model": "minilm-vixm"}, ["model = 'minilm-vixm'", "did you mean minilm-vixml?"]),
    ({"encoding": "utf-9"}, ["encoding = 'utf-9'", "latin-1"]),
    ({"loss": {"k": 0}}, ["loss.k = 0"]),
    ({"loss": {"kk": 1}}, ["loss: unknown setting(s) kk (did you mean k?)"]),
    ({"loss": [1]}, ["loss = [1]", "a mapping of LossConfig settings"]),
    ({"loss": {"min_margin": 0.5, "max_margin": 0.2}}, ["t.yaml: loss: min_margin (0.5) > max_margin (0.2)"]),
    ({"prime": {"ema": 1.0}}, ["prime.ema = 1.0", "[0, 1)"]),
    ({"model_overrides": ["x"]}, ["model_overrides = ['x']", "a mapping"]),
    ({"template": 3}, ["template = 3", "a string or a mapping or null"]),
    ({"epoch": 3}, ["unknown setting(s) epoch (did you mean epochs?)", "the TrainConfig settings"]),
])
def test_wrong_values_name_source_key_value_and_what_is_allowed(values, words):
    with pytest.raises(ConfigError) as e:
        config_from_dict(TrainConfig, values, source="t.yaml")
    msg = str(e.value)
    assert msg.startswith("t.yaml: ") and "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_model_config_refuses_code_loading_attention_and_bad_ranges():
    with pytest.raises(ConfigError, match="attn_implementation = 'kernels-community/flash'"):
        ModelConfig.from_dict({"attn_implementation": "kernels-community/flash"}, source="m.json")
    with pytest.raises(ConfigError, match="lora_dropout = 1.0"):
        ModelConfig.from_dict({"lora_dropout": 1.0})
    with pytest.raises(ConfigError, match="trust_remote_code = 'yes'"):
        ModelConfig.from_dict({"trust_remote_code": "yes"})
    assert ModelConfig.from_dict({"lora_alpha": 16, "num_layers": "2"}).num_layers == 2


def test_pipeline_config_and_config_files(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: '2'\nnotebook_timeout: 60\n")
    cfg = load_config(PipelineConfig, path, {"dataset": "b", "run_name": None})
    assert (cfg.seed, cfg.notebook_timeout, cfg.dataset, cfg.run_name) == (2, 60.0, "b", "demo")
    for text, words in [("- a\n- b\n", "expected a mapping of settings (key: value lines), found a list"),
                        ("seed: [1\n", "not valid YAML (line 2"), ("run_name: a/b\n", "run_name = 'a/b'"),
                        ("demo_preset: huge\n", "demo_preset = 'huge'")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=None) as e:
            load_config(PipelineConfig, path)
        assert str(e.value).startswith(str(path)) and words in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        read_config_file(tmp_path)


def test_describe_changes_names_dotted_keys():
    old = {"seed": 0, "notebook_parameters": {"03": {"epochs": 2}}, "kernel": "a"}
    new = {"seed": 0, "notebook_parameters": {"03": {"epochs": 3, "lr": 1}}, "kernel": "b"}
    assert describe_changes(old, new, ignore=("kernel",)) == ["notebook_parameters.03.epochs: 2 -> 3",
                                                              "notebook_parameters.03.lr: '(unset)' -> 1"]


@pytest.mark.parametrize("default, value, expected", [
    ("3", "4", 4), ("5e-4", 1, 1.0), ("5e-4", "1e-3", 0.001), ('"auto"', "cpu", "cpu"), ("True", "false", False),
    ("[1, 2]", [3], [3]), ("{}", {"a": 1}, {"a": 1}), ("None", [1], [1]), ("40", None, None),
    ("compute()", "anything", "anything"),
])
def test_notebook_parameters_follow_the_type_of_their_default(default, value, expected):
    assert check_notebook_parameter(value, default, "p.yaml", "parameters.x") == expected


@pytest.mark.parametrize("default, value", [("3", "three"), ("3", 2.5), ('"auto"', 3), ("True", 1), ("[1]", "a"),
                                            ("{}", [1]), ("0.5", True)])
def test_notebook_parameters_of_the_wrong_type_are_refused(default, value):
    with pytest.raises(ConfigError, match=r"p.yaml: notebook_parameters.03.x = "):
        check_notebook_parameter(value, default, "p.yaml", "notebook_parameters.03.x")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "CPU", "", 3):
        with pytest.raises(DeviceError, match="auto, cpu, cuda, cuda:N"):
            resolve_device(bad, source="t.yaml")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceError, match=f"cuda:{n + 3}"):
        resolve_device(f"cuda:{n + 3}", source="t.yaml")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="t.yaml: device = 'cuda': asks for CUDA but"):
            resolve_device("cuda", source="t.yaml")


def test_unknown_model_names_list_the_offline_ones(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pretrained.hub_reachable.cache_clear()
    try:
        with pytest.raises(ModelUnavailable) as e:
            pretrained.load_tokenizer("nobody/no-such-model")
        msg = str(e.value)
        assert "'nobody/no-such-model' is not available offline" in msg and "\n" not in msg
        assert "offline-minilm" in msg and "offline-smollm2" in msg and "offline-random-siglip" in msg
        with pytest.raises(ModelUnavailable, match="did you mean offline-smollm2"):
            pretrained.resolve("offline-smollm")
        with pytest.raises(ModelUnavailable, match="no such folder"):
            pretrained.resolve("./models/none")
    finally:
        pretrained.hub_reachable.cache_clear()


def test_a_saved_model_folder_cannot_switch_on_remote_code(tmp_path):
    from vixml_lib.models import create_model, load_model
    from vixml_lib.testing import tiny_model_config

    folder = create_model(tiny_model_config("encoder")).save(tmp_path / "model")
    meta_path = folder / "model_config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["trust_remote_code"] = True  # an untrusted run folder asks for remote code
    meta_path.write_text(json.dumps(meta))
    assert pretrained.read_saved_config(meta_path)["trust_remote_code"] is False
    assert load_model(folder).config.trust_remote_code is False
    assert create_model(str(folder)).config.trust_remote_code is False
    assert load_model(folder, trust_remote_code=True).config.trust_remote_code is True  # the caller may
    meta["config"]["attn_implementation"] = "kernels-community/flash-attn"  # code from the hub: refused
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="model_config.json: attn_implementation"):
        load_model(folder)
    meta_path.write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="not a saved vixml dual encoder"):
        load_model(folder)
    (folder / "trainable.safetensors").write_bytes(b"junk")
    meta_path.write_text(json.dumps({**meta, "config": {**meta["config"], "attn_implementation": "sdpa"}}))
    with pytest.raises(DataFormatError, match="trainable.safetensors: not readable saved weights"):
        load_model(folder)


def test_project_errors_are_value_errors():
    for cls in (ConfigError, DataFormatError, DeviceError, ModelUnavailable):
        assert issubclass(cls, VixmlError) and issubclass(cls, ValueError)
