"""`vixml train --nproc-per-node` (torchrun underneath, gloo on CPU) and `vixml cache-images`."""
import json
import subprocess
import sys

import yaml
from train_data import TINY

from vixml_lib.images.cache import FeatureCache, feature_cache_dir


def vixml(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "vixml_lib.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cache_images_builds_every_split_and_reuses_them(tiny_data):
    first = vixml("cache-images", "--data", str(tiny_data), "--encoder", "offline-random-siglip-tiny", "--workers", "0")
    assert first.returncode == 0, first.stderr
    for split in ("trn", "tst", "lbl"):
        cache = FeatureCache.open(feature_cache_dir(tiny_data, "offline-random-siglip-tiny", split))
        assert cache.count > 0 and cache.n_failures == 0
    header = feature_cache_dir(tiny_data, "offline-random-siglip-tiny", "lbl") / "header.json"
    mtime = header.stat().st_mtime_ns
    again = vixml("cache-images", "--data", str(tiny_data), "--encoder", "offline-random-siglip-tiny", "--workers", "0")
    assert again.returncode == 0 and header.stat().st_mtime_ns == mtime  # a finished cache is reused
    bad = vixml("cache-images", "--data", str(tiny_data / "nope"), "--encoder", "offline-random-siglip-tiny")
    assert bad.returncode == 2 and "dataset folder not found" in bad.stderr and "Traceback" not in bad.stderr


def test_train_with_two_processes_from_the_command_line(tiny_data, tmp_path):
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tiny_data), "model": "minilm", "use_images": False,
                                      "model_overrides": TINY, "epochs": 1, "max_steps_per_epoch": 2,
                                      "batch_size": 32, "eval_at_start": False, "threads": 1}))
    out = tmp_path / "run"
    done = vixml("train", "--config", str(config), "--out", str(out), "--device", "cpu", "--nproc-per-node", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2 and summary["history"][-1]["step"] == 2 and summary["final"]["P@1"] >= 0
