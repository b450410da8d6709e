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
dynamic_margin=True)`` over the in-batch label matrix + backward + AdamW step; the figure
is the median over ``--steps`` timed steps after ``--warmup`` steps. INFERENCE is one
no-grad forward (eval mode) over a batch of items, reported as items/s (median).

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

CPU memory of the VLM-style training step (attention dropout off): MiniLM ~0.37 GB per
item (~12 GB at batch 32); SmolLM2-135M (no gradient checkpointing in its preset)
~3.5 GB per item (8.7 GB peak at batch 2), hence its small CPU default batch. Use
``--configs text-only,vixml`` to skip it.

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
CPU_DEFAULTS = {"minilm": (32, 1, 2), "smollm2": (4, 1, 2), "tiny": (32, 3, 10), "tiny-decoder": (32, 3, 10)}
CUDA_DEFAULTS = (256, 3, 10)


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


def _median_ms(fn, warmup: int, steps: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measure(model, q_in, l_in, args, device: torch.device) -> dict:
    """Sequence length, training-step time and inference throughput of one configuration."""
    if not args.attention_dropout:
        disable_attention_dropout(model)
    with torch.no_grad():
        asm = model.assemble(*q_in)
    res = {
        "seq_len_mean": float(asm.lengths.float().mean()),
        "seq_len_padded": int(asm.attention_mask.shape[1]),
        "trainable_params": model.trainable_parameters()["trainable"],
    }
    del asm
    b = len(q_in[1])
    target = torch.eye(b, dtype=torch.bool, device=device)
    target |= torch.rand(b, b, device=device) < 2.0 / b  # a few other in-batch positives
    pos = torch.arange(b, device=device)
    loss_fn = TripletLoss(k=10, dynamic_margin=True)
    opt = torch.optim.AdamW(model.param_groups(lr_backbone=1e-5, weight_decay=0.01))

    def train_step():
        q = model(*q_in)
        l = model(*l_in)
        loss = loss_fn(q, l, target, pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.no_grad():
            model(*q_in)

    model.train()
    _reset_peak(device)
    try:
        res["train_ms"] = _median_ms(train_step, args.warmup, args.steps, device)
    except torch.OutOfMemoryError:
        res["train_ms"] = "OOM"
    res["train_peak_gib"] = _peak_gib(device)
    opt.zero_grad(set_to_none=True)
    opt = None  # free the optimizer state before the next configuration
    _free(device)

    model.eval()
    _reset_peak(device)
    try:
        ms = _median_ms(infer_step, args.warmup, args.steps, device)
        res["infer_ms"], res["infer_items_per_s"] = ms, b / (ms / 1000)
    except torch.OutOfMemoryError:
        res["infer_ms"] = res["infer_items_per_s"] = "OOM"
    res["infer_peak_gib"] = _peak_gib(device)
    return res


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# the three configurations


def bench_text_only(base, queries: Batch, labels: Batch, args, device) -> dict:
    model = create_model(base, use_images=False).to(device)
    return measure(model, queries.text(), labels.text(), args, device)


def bench_vixml(base, queries: Batch, labels: Batch, args, device) -> dict:
    model = create_model(base, use_images=True, max_images=MAX_IMAGES).to(device)
    return measure(model, queries.vixml(), labels.vixml(), args, device)


def bench_vlm(base, queries: Batch, labels: Batch, args, device) -> dict:
    model = create_model(base, use_images=True, max_images=MAX_IMAGES * VLM_TOKENS_PER_IMAGE).to(device)
    q_in, l_in = queries.vlm(), labels.vlm()
    with torch.no_grad():  # the longest sequence of the two batches
        longest = max(int(model.assemble(*x).attention_mask.shape[1]) for x in (q_in, l_in))
    res = {"positions_extended_to": longest} if extend_positions(model, longest) else {}
    return {**res, **measure(model, q_in, l_in, args, device)}


BENCHES = {"text-only": bench_text_only, "vixml": bench_vixml, "vlm-256": bench_vlm}


# ---------------------------------------------------------------------------------------
# report


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


def _ratio(x, ref) -> str:
    ok = isinstance(x, (int, float)) and isinstance(ref, (int, float)) and ref
    return f"{x / ref:.2f}x" if ok else "-"


def print_table(results: dict, cuda: bool) -> None:
    ref = results.get("text-only", {})
    head = f"{'configuration':<12} {'seq len':>8} {'padded':>7} {'train ms':>10} {'vs text':>8} " \
           f"{'infer items/s':>14} {'vs text':>8}"
    if cuda:
        head += f" {'peak GiB train/infer':>21}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if r.get("oom"):
            print(f"{name:<12} OOM")
            continue
        line = (f"{name:<12} {r['seq_len_mean']:>8.1f} {r['seq_len_padded']:>7d} "
                f"{_fmt(r['train_ms'], '.1f'):>10} {_ratio(r['train_ms'], ref.get('train_ms')):>8} "
                f"{_fmt(r['infer_items_per_s'], '.1f'):>14} "
                f"{_ratio(r['infer_items_per_s'], ref.get('infer_items_per_s')):>8}")
        if cuda:
            peaks = f"{_fmt(r['train_peak_gib'], '.2f')} / {_fmt(r['infer_peak_gib'], '.2f')}"
            line += f" {peaks:>21}"
        print(line)
    print("(train: ms per step, lower is better, ratio = time / text-only time; "
          "infer: items/s, higher is better, ratio = throughput / text-only throughput)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", choices=sorted(BACKBONES), default="minilm")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="items per batch, queries and labels each (default: 256 on CUDA; "
                         "on CPU 32, 4 for smollm2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: by device and backbone)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    ap.add_argument("--title-len", type=int, default=16, help="mean title length in tokens")
    ap.add_argument("--image-mix", default="0.1,0.2,0.3,0.4",
                    help="probabilities of 0, 1, 2, 3 images per item")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    ap.add_argument("--attention-dropout", action="store_true",
                    help="keep the backbone's attention dropout (default: 0 in every configuration)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (on a busy shared machine 1 gives steadier figures)")
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
          f"median of {args.steps} steps, attention dropout "
          f"{'as the model' if args.attention_dropout else 'off'}; "
          f"torch {torch.__version__}, {platform.machine()}")

    gen = torch.Generator().manual_seed(args.seed)
    queries, labels = (Batch(args.batch_size, args.title_len, id_range, vision_dim, mix, gen, device)
                       for _ in range(2))
    results = {}
    for name in configs:
        t0 = time.perf_counter()
        try:
            results[name] = BENCHES[name](base, queries, labels, args, device)
        except torch.OutOfMemoryError:
            results[name] = {"oom": True}  # outside the timed steps (model to GPU, prompt assembly)
        _free(device)
        print(f"#   {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    print()
    print_table(results, cuda)

    if args.json:
        meta = {k: v for k, v in vars(args).items() if k != "json"}
        meta.update(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                    vision_dim=vision_dim, vlm_tokens_per_image=VLM_TOKENS_PER_IMAGE,
                    gpu=torch.cuda.get_device_name(device) if cuda else None)
        for r in results.values():
            ref = results.get("text-only", {})
            for key in ("train_ms", "infer_items_per_s"):
                ok = isinstance(r.get(key), float) and isinstance(ref.get(key), float)
                r[f"{key}_vs_text"] = r[key] / ref[key] if ok else None
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
