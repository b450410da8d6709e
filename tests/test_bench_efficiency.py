"""benchmarks/bench_efficiency.py's timing loop on a fake clock: warm-up, rotating rounds,
samples sized like timeit's autorange, OOM configurations dropped, ratios per round."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self):
        self.now, self.calls = 0.0, []

    def __call__(self):
        return self.now


class FakeConfig:
    """A configuration whose train step takes ``seconds`` on the fake clock (the first step
    ``first`` seconds: a warm-up cost) and that may run out of memory at its ``oom_at``-th step."""

    def __init__(self, name, seconds, clock, first=None, oom_at=None):
        self.name, self.seconds, self.clock, self.first, self.oom_at = name, seconds, clock, first, oom_at
        self.n = 0
        self.model = torch.nn.Linear(1, 1)

    def train_step(self):
        self.n += 1
        if self.oom_at is not None and self.n >= self.oom_at:
            raise torch.OutOfMemoryError("fake")
        self.clock.calls.append(self.name)
        self.clock.now += self.first if (self.n == 1 and self.first is not None) else self.seconds


def test_samples_repeat_short_steps_until_min_sample(bench, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    short, long = FakeConfig("text-only", 0.012, clock, first=0.5), FakeConfig("vlm-256", 1.0, clock)
    times, reps = bench.interleaved([short, long], "train", warmup=2, steps=3, device=torch.device("cpu"),
                                    min_sample=0.5)
    # sized on the LAST warm-up step (0.012 s, not the 0.5 s first step): ceil(0.5 / 0.012) = 42
    assert reps == {"text-only": math.ceil(0.5 / 0.012), "vlm-256": 1}
    assert times["text-only"] == pytest.approx([0.012] * 3) and times["vlm-256"] == pytest.approx([1.0] * 3)
    # 2 warm-up steps each, then rounds in rotating order, a sample's steps back to back
    timed = clock.calls[4:]
    assert clock.calls[:4] == ["text-only", "vlm-256"] * 2
    assert timed == ["text-only"] * 42 + ["vlm-256"] + ["vlm-256"] + ["text-only"] * 42 + ["text-only"] * 42 + [
        "vlm-256"]


def test_min_sample_zero_or_no_warmup_times_single_steps(bench, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    c = FakeConfig("text-only", 0.01, clock)
    _, reps = bench.interleaved([c], "train", warmup=2, steps=2, device=torch.device("cpu"), min_sample=0.0)
    assert reps == {"text-only": 1} and c.n == 4
    c = FakeConfig("text-only", 0.01, clock)
    times, reps = bench.interleaved([c], "train", warmup=0, steps=2, device=torch.device("cpu"), min_sample=0.5)
    assert reps == {"text-only": 1} and times["text-only"] == pytest.approx([0.01, 0.01])


def test_out_of_memory_drops_the_configuration(bench, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    ok, oom = FakeConfig("text-only", 0.1, clock), FakeConfig("vlm-256", 1.0, clock, oom_at=3)
    times, _ = bench.interleaved([ok, oom], "train", warmup=1, steps=4, device=torch.device("cpu"))
    assert times["vlm-256"] == "OOM" and len(times["text-only"]) == 4 and oom.n == 3
    rows = bench.summary(times)
    assert rows["vlm-256"] == {"value": "OOM"} and rows["text-only"]["ratio"] == pytest.approx(1.0)


def test_summary_ratio_is_the_median_of_per_round_ratios(bench):
    times = {"text-only": [0.010, 0.020, 0.010], "vlm-256": [1.0, 1.0, 0.5]}
    row = bench.summary(times)["vlm-256"]
    # per round 100, 50, 50 -> median 50 (the ratio of medians would be 100)
    assert row["ratio"] == pytest.approx(50) and row["ratio_min"] == pytest.approx(50)
    assert row["ratio_max"] == pytest.approx(100) and row["value"] == pytest.approx(1000)
    infer = bench.summary({"text-only": [0.5, 0.25], "vixml": [1.0, 1.0]}, per_item=100)["vixml"]
    assert infer["value"] == pytest.approx(100) and infer["ratio"] == pytest.approx((0.5 + 0.25) / 2)
