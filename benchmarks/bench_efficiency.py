"""Training-step time and inference throughput: text-only vs ViXML vs VLM-style image tokens.

The paper's efficiency claim: feeding each product image to the text model as ONE
projected vector keeps the cost close to text-only training, whereas a VLM-style input
(hundreds of visual tokens per image) multiplies the sequence length. On the same
backbone and the same batch (queries and in-batch labels, both products with titles and
up to 3 images), this script times

1. ``text-only``: titles only (``use_images=False``);
2. ``vixml``: one token per image, up to 3 images per item (``max_images=3``);
3. ``vlm-256``: 256 visual tokens per image, emulated with the same model class created
   with ``max_images=3*256``; each image's 256 vectors are switched on or off together.

A TRAINING STEP is: query forward + label forward + ``TripletLoss(k=10,
dynamic_margin=True)`` over the in-batch label matrix + backward + AdamW step. INFERENCE
is one no-grad forward (eval mode) over a batch of items, reported as items/s.

Timing, for ratios that hold from one run to the next: every configuration is built first
(model, inputs, optimizer), then warmed up (``--warmup`` steps each, interleaved), then
timed in ``--steps`` ROUNDS, each round timing one sample of every configuration in a
rotating order, so one-time costs (allocator growth, thread pools, kernel selection) never
land in a timed step and a machine whose load drifts slows every configuration alike. A
sample repeats the step until it lasts ``--min-sample`` seconds (2; the count is sized on
the last warm-up step, like ``timeit``'s autorange), so that a short step is not timed alone.

Run-to-run agreement, three runs of the default (MiniLM-L6, batch 16, one thread; 2-core
AMD EPYC family 25, idle): ratios to text-only of 1.11 / 1.07 / 1.10 (ViXML training step),
44.1 / 45.2 / 46.6 (VLM-256 training step), 0.88 / 0.90 / 0.86 (ViXML inference
throughput): every ratio within 6 %, while the absolute text-only step moved by 11 %
(684 / 638 / 617 ms). The tiny random backbone is a smoke check, not a reference for
ratios: its ~12 ms steps are mostly per-operator overhead, its text-only time moved by 25 %
from one process to the next and its VLM/text ratio by 16 % (74.7 / 85.4 / 73.6), with
0.5 s or 2 s samples alike.
On the CPU the default is ONE torch thread: with two threads on a machine that other jobs
load, every parallel region waits for a descheduled thread (on a shared 2-core EPYC a MiniLM
step took 8.1 s [4.5-9.7] with 2 threads, 2.3 s [2.1-2.4] with 1); ``--threads N`` for more.
Reported: the median per configuration with its spread (min-max and the interquartile
range), and the ratio to text-only as the median of the per-round ratios (each round's
steps ran back to back). Earlier versions ran the configurations one after the other
with 1 warm-up step and 2 timed steps, and measured warm-up: text-only 11.2 s per step,
ViXML 2.1 s.

Inputs are random: title token ids drawn inside the vocabulary (lengths ~``--title-len``
+-25 %), image vectors ~N(0, 1) of the model's ``vision_dim``, and per-item image counts
drawn from ``--image-mix`` (P(0), P(1), P(2), P(3) images). The same titles and image
masks are used for every configuration; inputs are created on the device beforehand, so
no host-to-device copy is timed. On CUDA the model runs as its ``dtype="auto"`` does
(fp32 weights, bf16 autocast) and the peak GPU memory of each configuration is reported;
a configuration that runs out of GPU memory is reported as ``OOM``.

Workaround (inside this script only): BERT-like backbones have an absolute position
table (MiniLM: 512 positions, the tiny random BERT: 128) shorter than a VLM-style
sequence (3 x 256 + title ~ 790 tokens). :func:`extend_positions` enlarges that table
(tiling the existing rows) for the VLM-style model; the weights don't matter for timing.
Rotary decoders (SmolLM2, the tiny Llama) need no change.

Attention dropout: BERT-like encoders train with attention dropout (MiniLM: 0.1). On CPU,
PyTorch's fused (flash) attention kernel has no dropout, so SDPA falls back to the math
path that materialises the [B, heads, T, T] probabilities: at T ~ 790 that costs ~5x time
and ~3.5x memory (a MiniLM VLM-style step at batch 8: 11.8 GB instead of 3.4 GB). By
default the script therefore sets attention dropout to 0 in EVERY configuration (like for
like; decoder LLMs have none anyway); ``--attention-dropout`` keeps the model's value.

CPU cost of the VLM-style training step (attention dropout off, one thread): MiniLM ~0.37 GB
per item; at its CPU default batch of 16 a step takes ~29 s and the whole script ~6 min with
a peak RSS of 7.6 GB (batch 32: 87 s per step, ~12 GB); SmolLM2-135M (no gradient
checkpointing in its preset) ~3.5 GB per item (8.7 GB peak at batch 2), hence its small CPU
default batch. Use ``--configs text-only,vixml`` to skip it.

Usage::

    .venv/bin/python benchmarks/bench_efficiency.py                       # MiniLM-L6, CPU defaults
    .venv/bin/python benchmarks/bench_efficiency.py --backbone tiny       # quick check
    .venv/bin/python benchmarks/bench_efficiency.py --backbone smollm2 --json eff.json
    .venv/bin/python benchmarks/bench_efficiency.py --device cuda --batch-size 256
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vixml_lib.losses import TripletLoss  # noqa: E402
from vixml_lib.models import create_model  # noqa: E402
from vixml_lib.testing import tiny_model_config  # noqa: E402
from vixml_lib.training.optim import param_groups  # noqa: E402

MAX_IMAGES = 3
VLM_TOKENS_PER_IMAGE = 256
CONFIGS = ("text-only", "vixml", "vlm-256")

#: --backbone -> the config that create_model receives (use_images / max_images are overridden)
BACKBONES = {
    "minilm": lambda: "minilm",  # offline all-MiniLM-L6-v2 (BERT encoder)
    "smollm2": lambda: "smollm2",  # offline SmolLM2-135M, LoRA r=16
    "tiny": lambda: tiny_model_config("encoder"),  # random tiny BERT
    "tiny-decoder": lambda: tiny_model_config("decoder"),  # random tiny Llama + LoRA
}
#: (batch size, warm-up steps, timed steps) when not given
CPU_DEFAULTS = {"minilm": (16, 3, 5), "smollm2": (4, 3, 5), "tiny": (32, 5, 11), "tiny-decoder": (32, 5, 11)}
CUDA_DEFAULTS = (256, 5, 21)


# ---------------------------------------------------------------------------------------
# inputs


class Batch:
    """One batch of items (queries or labels): titles, and image vectors for both image modes."""

    def __init__(self, n: int, title_len: int, id_range: tuple[int, int], vision_dim: int,
                 image_mix: list[float], gen: torch.Generator, device: torch.device):
        lo, hi = max(1, round(0.75 * title_len)), max(1, round(1.25 * title_len))
        self.lens = torch.randint(lo, hi + 1, (n,), generator=gen)
        ids = torch.randint(id_range[0], id_range[1], (n, int(self.lens.max())), generator=gen)
        ids[torch.arange(ids.shape[1]) >= self.lens[:, None]] = 0  # right padding
        n_img = torch.multinomial(torch.tensor(image_mix), n, replacement=True, generator=gen)
        self.mask = torch.arange(MAX_IMAGES) < n_img[:, None]  # [n, 3]
        self.vectors = torch.randn(n, MAX_IMAGES, vision_dim, generator=gen)
        self.n, self.vision_dim, self.gen, self.device = n, vision_dim, gen, device
        self.ids, self.lens = ids.to(device), self.lens.to(device)

    def text(self):
        return (self.ids, self.lens, None, None)

    def vixml(self):
        return (self.ids, self.lens, self.vectors.to(self.device), self.mask.to(self.device))

    def vlm(self, per_image: int = VLM_TOKENS_PER_IMAGE):
        """``per_image`` vectors per image; an image's vectors are all on or all off."""
        vec = torch.randn(self.n, MAX_IMAGES * per_image, self.vision_dim, generator=self.gen)
        mask = self.mask.repeat_interleave(per_image, dim=1)
        return (self.ids, self.lens, vec.to(self.device), mask.to(self.device))


def disable_attention_dropout(model) -> int:
    """Set the dropout of every attention module to 0; returns how many were changed."""
    n = 0
    for mod in model.modules():
        drop = getattr(mod, "dropout", None)
        if "attention" in type(mod).__name__.lower() and isinstance(drop, nn.Dropout) and drop.p > 0:
            drop.p, n = 0.0, n + 1
        if "attention" in type(mod).__name__.lower() and getattr(mod, "attention_dropout", 0.0):
            mod.attention_dropout, n = 0.0, n + 1  # Llama-like modules
    return n


def token_id_range(model) -> tuple[int, int]:
    """Ids to draw titles from: inside both the tokenizer and the embedding table, above
    the low ids where special / unused tokens usually live."""
    n = model.token_embedding().num_embeddings
    vocab = getattr(model.tokenizer, "vocab_size", None) or n
    hi = min(n, int(vocab))
    return min(1000, hi // 4), hi


def extend_positions(model, length: int) -> bool:
    """Enlarge an absolute position-embedding table (BERT-like) to ``length`` rows by
    tiling its rows; returns whether it did. For timing only (see module docstring)."""
    emb = getattr(model.base_model, "embeddings", None)
    table = getattr(emb, "position_embeddings", None)
    if not isinstance(table, nn.Embedding) or table.num_embeddings >= length:
        return False
    old = table.weight.detach()
    new = nn.Embedding(length, old.shape[1]).to(device=old.device, dtype=old.dtype)
    with torch.no_grad():
        new.weight.copy_(old.repeat(math.ceil(length / old.shape[0]), 1)[:length])
    new.weight.requires_grad_(table.weight.requires_grad)
    emb.position_embeddings = new
    emb.position_ids = torch.arange(length, device=old.device).expand(1, -1)
    if hasattr(emb, "token_type_ids"):
        emb.token_type_ids = torch.zeros(1, length, dtype=torch.long, device=old.device)
    model.base_model.config.max_position_embeddings = length
    return True


# ---------------------------------------------------------------------------------------
# timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Config:
    """One configuration ready to step: its model, inputs, loss and optimizer."""

    def __init__(self, name: str, model, q_in, l_in, args, device: torch.device, extra: dict | None = None):
        if not args.attention_dropout:
            disable_attention_dropout(model)
        with torch.no_grad():
            asm = model.assemble(*q_in)
        self.name, self.model, self.q_in, self.l_in, self.device = name, model, q_in, l_in, device
        self.info = {**(extra or {}), "seq_len_mean": float(asm.lengths.float().mean()),
                     "seq_len_padded": int(asm.attention_mask.shape[1]),
                     "trainable_params": model.trainable_parameters()["trainable"]}
        del asm
        b = len(q_in[1])
        gen = torch.Generator().manual_seed(args.seed)
        target = torch.eye(b, dtype=torch.bool) | (torch.rand(b, b, generator=gen) < 2.0 / b)  # a few other positives
        self.target, self.pos = target.to(device), torch.arange(b, device=device)
        self.loss_fn = TripletLoss(k=10, dynamic_margin=True)
        self.opt = torch.optim.AdamW(param_groups(model, 1e-5, weight_decay=0.01))

    def train_step(self) -> None:
        self.model.train()
        loss = self.loss_fn(self.model(*self.q_in), self.model(*self.l_in), self.target, self.pos)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer_step(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(*self.q_in)

    def drop_optimizer(self) -> None:
        """Free the gradients and the optimizer state (before the inference rounds)."""
        self.model.zero_grad(set_to_none=True)
        self.opt = None


def interleaved(configs: list[Config], phase: str, warmup: int, steps: int, device,
                min_sample: float = 0.0) -> tuple[dict[str, list | str], dict[str, int]]:
    """Seconds per step of every configuration, and the repetitions per timed sample.

    ``warmup`` untimed steps each, then ``steps`` rounds of one timed SAMPLE each, the order
    rotating every round. A sample runs the step ``reps`` times back to back, ``reps``
    chosen from the last warm-up step so that a sample lasts at least ``min_sample`` seconds
    (as ``timeit``'s autorange does): a 10 ms step timed alone is mostly noise (the timer,
    caches refilled after a neighbour's 1 s step). A configuration that runs out of GPU
    memory is dropped and reported as ``"OOM"``."""
    times: dict[str, list | str] = {c.name: [] for c in configs}
    reps = {c.name: 1 for c in configs}
    dropped: set[str] = set()

    def run(c: Config, n: int) -> float | None:
        if c.name in dropped:
            return None
        t0 = time.perf_counter()
        try:
            for _ in range(n):
                getattr(c, f"{phase}_step")()
            _sync(device)
        except torch.OutOfMemoryError:
            times[c.name] = "OOM"
            dropped.add(c.name)
            c.model.zero_grad(set_to_none=True)
            _free(device)
            return None
        return (time.perf_counter() - t0) / n

    for w in range(warmup):
        for c in configs:
            t = run(c, 1)
            if t is not None and w == warmup - 1 and min_sample > 0:
                reps[c.name] = max(1, math.ceil(min_sample / max(t, 1e-6)))
    for r in range(steps):
        for j in range(len(configs)):
            c = configs[(r + j) % len(configs)]
            t = run(c, reps[c.name])
            if t is not None:
                times[c.name].append(t)
    return times, reps


def summary(times: dict[str, list | str], ref: str = "text-only", per_item: int | None = None) -> dict[str, dict]:
    """Per configuration: median, min, max and quartiles (ms per step, or items/s when
    ``per_item`` items are processed per step), and the median / min / max of the
    per-round ratios to ``ref`` (time / ref time, or throughput / ref throughput)."""
    out = {}
    base = times.get(ref)
    for name, ts in times.items():
        if isinstance(ts, str) or not ts:
            out[name] = {"value": ts or "-"}
            continue
        vals = [per_item / t for t in ts] if per_item else [1000 * t for t in ts]
        q1, _, q3 = statistics.quantiles(vals, n=4) if len(vals) > 1 else (vals[0],) * 3
        row = {"value": statistics.median(vals), "min": min(vals), "max": max(vals), "q1": q1, "q3": q3,
               "n": len(vals)}
        if isinstance(base, list) and len(base) == len(ts):
            ratios = [(b / t) if per_item else (t / b) for t, b in zip(ts, base)]
            row.update(ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
        out[name] = row
    return out


# ---------------------------------------------------------------------------------------
# the three configurations


def bench_text_only(base, queries: Batch, labels: Batch, args, device) -> Config:
    model = create_model(base, use_images=False).to(device)
    return Config("text-only", model, queries.text(), labels.text(), args, device)


def bench_vixml(base, queries: Batch, labels: Batch, args, device) -> Config:
    model = create_model(base, use_images=True, max_images=MAX_IMAGES).to(device)
    return Config("vixml", model, queries.vixml(), labels.vixml(), args, device)


def bench_vlm(base, queries: Batch, labels: Batch, args, device) -> Config:
    model = create_model(base, use_images=True, max_images=MAX_IMAGES * VLM_TOKENS_PER_IMAGE).to(device)
    q_in, l_in = queries.vlm(), labels.vlm()
    with torch.no_grad():  # the longest sequence of the two batches
        longest = max(int(model.assemble(*x).attention_mask.shape[1]) for x in (q_in, l_in))
    extra = {"positions_extended_to": longest} if extend_positions(model, longest) else {}
    return Config("vlm-256", model, q_in, l_in, args, device, extra)


BENCHES = {"text-only": bench_text_only, "vixml": bench_vixml, "vlm-256": bench_vlm}


# ---------------------------------------------------------------------------------------
# report


def _cell(row: dict, spec: str, key: str = "value") -> str:
    v = row.get(key)
    if not isinstance(v, (int, float)):
        return str(v if v is not None else "-")
    lo, hi = ("ratio_min", "ratio_max") if key == "ratio" else ("min", "max")
    return f"{format(v, spec)} [{format(row[lo], spec)}-{format(row[hi], spec)}]"


def print_table(results: dict, cuda: bool) -> None:
    head = (f"{'configuration':<12} {'seq len':>8} {'padded':>7} {'train ms [min-max]':>24} "
            f"{'vs text [min-max]':>20} {'infer items/s [min-max]':>26} {'vs text [min-max]':>20}")
    if cuda:
        head += f" {'peak GiB train/infer':>21}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if r.get("oom"):
            print(f"{name:<12} OOM")
            continue
        tr, inf = r["train"], r["infer"]
        line = (f"{name:<12} {r['seq_len_mean']:>8.1f} {r['seq_len_padded']:>7d} {_cell(tr, '.1f'):>24} "
                f"{_cell(tr, '.2f', 'ratio'):>20} {_cell(inf, '.1f'):>26} {_cell(inf, '.2f', 'ratio'):>20}")
        if cuda:
            line += f" {r['train_peak_gib']:>10.2f} / {r['infer_peak_gib']:>8.2f}"
        print(line)
    n = next((r["train"].get("n") for r in results.values() if "train" in r), "?")
    print(f"(medians of {n} interleaved rounds, [min-max] over the rounds; train: ms per step, ratio = time / "
          f"text-only time; infer: items/s, ratio = throughput / text-only throughput; each ratio is the median "
          f"of the per-round ratios)")


def _phase(configs: list[Config], phase: str, args, device) -> tuple[dict, dict, dict]:
    """``(times, reps, peaks)`` of one phase: interleaved rounds, the steps per timed sample,
    and each configuration's peak GPU memory over one extra step (every model resident; on
    CUDA only, where it is measured)."""
    peaks: dict[str, float | None] = {c.name: None for c in configs}
    for c in configs if device.type == "cuda" else ():
        _reset_peak(device)
        try:
            getattr(c, f"{phase}_step")()
            _sync(device)
        except torch.OutOfMemoryError:
            pass
        peaks[c.name] = _peak_gib(device)
    times, reps = interleaved(configs, phase, args.warmup, args.steps, device, args.min_sample)
    return times, reps, peaks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", choices=sorted(BACKBONES), default="minilm")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="items per batch, queries and labels each (default: 256 on CUDA; "
                         "on CPU 16 for minilm, 4 for smollm2, 32 for the tiny models)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed rounds, one sample of every configuration each (default: by device and backbone)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps of every configuration first")
    ap.add_argument("--min-sample", type=float, default=2.0, metavar="SECONDS",
                    help="a timed sample repeats a step until it lasts at least this long (default 2; 0 = one "
                         "step per sample); needs --warmup >= 1 to size it")
    ap.add_argument("--title-len", type=int, default=16, help="mean title length in tokens")
    ap.add_argument("--image-mix", default="0.1,0.2,0.3,0.4",
                    help="probabilities of 0, 1, 2, 3 images per item")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--attention-dropout", action="store_true",
                    help="keep the backbone's attention dropout (default: 0 in every configuration)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default on CPU: 1, see the module docstring; 0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    batch, warmup, steps = CUDA_DEFAULTS if cuda else CPU_DEFAULTS[args.backbone]
    args.batch_size = args.batch_size or batch
    args.warmup = warmup if args.warmup is None else args.warmup
    args.steps = args.steps or steps
    mix = [float(p) for p in args.image_mix.split(",")]
    if len(mix) != MAX_IMAGES + 1 or min(mix) < 0 or sum(mix) <= 0:
        ap.error("--image-mix needs 4 non-negative probabilities (0, 1, 2, 3 images)")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := sorted(set(configs) - set(CONFIGS)):
        ap.error(f"unknown configuration(s) {unknown}; valid: {', '.join(CONFIGS)}")
    if args.threads is None and not cuda:
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    transformers.logging.disable_progress_bar()

    base = BACKBONES[args.backbone]()
    probe = create_model(base, use_images=True)  # for the vocabulary and vision_dim
    id_range, vision_dim = token_id_range(probe), probe.config.vision_dim
    print(f"# backbone {args.backbone} ({probe.config.backbone}, {probe.kind}, template "
          f"{probe.template.name}), device {device}"
          + (f" ({torch.cuda.get_device_name(device)}, bf16 autocast)" if cuda
             else f" ({torch.get_num_threads()} threads)"))
    del probe
    print(f"# batch {args.batch_size} queries + {args.batch_size} labels, title ~{args.title_len} "
          f"tokens, image mix P(0..3)={mix}, vision_dim {vision_dim}, warm-up {args.warmup}, "
          f"{args.steps} interleaved rounds of samples >= {args.min_sample} s, attention dropout "
          f"{'as the model' if args.attention_dropout else 'off'}; "
          f"torch {torch.__version__}, {platform.machine()}")

    gen = torch.Generator().manual_seed(args.seed)
    queries, labels = (Batch(args.batch_size, args.title_len, id_range, vision_dim, mix, gen, device)
                       for _ in range(2))
    built, results = [], {}
    for name in configs:
        t0 = time.perf_counter()
        try:
            built.append(BENCHES[name](base, queries, labels, args, device))
        except torch.OutOfMemoryError:
            results[name] = {"oom": True}  # building it (model to GPU, prompt assembly)
        _free(device)
        print(f"#   {name}: built in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    train_times, train_reps, train_peaks = _phase(built, "train", args, device)
    print(f"#   training steps: {time.perf_counter() - t0:.0f} s", flush=True)
    for c in built:
        c.drop_optimizer()
    _free(device)
    t0 = time.perf_counter()
    infer_times, infer_reps, infer_peaks = _phase(built, "infer", args, device)
    print(f"#   inference steps: {time.perf_counter() - t0:.0f} s", flush=True)
    train, infer = summary(train_times), summary(infer_times, per_item=args.batch_size)
    for c in built:
        results[c.name] = {**c.info, "train": train[c.name], "infer": infer[c.name],
                           "train_peak_gib": train_peaks[c.name], "infer_peak_gib": infer_peaks[c.name],
                           "train_steps_per_sample": train_reps[c.name], "infer_steps_per_sample": infer_reps[c.name],
                           "train_seconds": train_times[c.name], "infer_seconds": infer_times[c.name]}
    results = {name: results[name] for name in configs}
    print()
    print_table(results, cuda)

    if args.json:
        meta = {k: v for k, v in vars(args).items() if k != "json"}
        meta.update(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                    vision_dim=vision_dim, vlm_tokens_per_image=VLM_TOKENS_PER_IMAGE,
                    gpu=torch.cuda.get_device_name(device) if cuda else None)
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
