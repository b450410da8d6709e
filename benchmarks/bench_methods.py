"""What PRIME costs over NGAME, and late fusion over early fusion, on the same batch.

Per training step (forward of queries and labels, loss, backward, AdamW step):
  - NGAME: the triplet loss on the label encoder's embeddings;
  - PRIME: + the combiner over [u, v, c], T(x,z) + T(u,x) + R;
  - early vs late fusion (ViXML vs MUFIN-style), both with the NGAME loss.
Per epoch end, PRIME's centroid pass: ``Y^T E`` over the training queries (stale: from the
bank; the authors' exact pass at the last epoch re-encodes every training query -- its cost
is one ``encode`` of the training split, printed beside it).

The configurations are interleaved (A, B, A, B, ...) after a warm-up of each, and each
figure is the median over ``--repeats`` with its min and max, so load on the machine shifts
both sides alike. Example::

    python benchmarks/bench_methods.py                      # MiniLM (offline), CPU
    python benchmarks/bench_methods.py --backbone tiny      # random tiny BERT (seconds)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from vixml_lib.losses import LossConfig, TripletLoss, prime_loss  # noqa: E402
from vixml_lib.models import create_model  # noqa: E402
from vixml_lib.prime import PrimeConfig, PrimeHead, label_centroids  # noqa: E402
from vixml_lib.testing import tiny_model_config  # noqa: E402
from vixml_lib.training.optim import param_groups  # noqa: E402

BACKBONES = {"minilm": lambda **kw: {"backbone": "offline-minilm", "kind": "encoder", **kw},
             "tiny": lambda **kw: tiny_model_config("encoder", **kw).to_dict()}


def make_batch(b: int, length: int, vision_dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 1000, (b, length), generator=g)  # inside every vocabulary
    lens = torch.randint(length // 2, length + 1, (b,), generator=g)
    vec = torch.randn(b, 3, vision_dim, generator=g)
    mask = torch.rand(b, 3, generator=g) < 0.7
    return ids, lens, vec, mask


def step_fn(model, prime: PrimeHead | None, batch_q, batch_l, target, loss_cfg: LossConfig):
    opt = torch.optim.AdamW(param_groups(model, 1e-5, 1e-4, 0.01, prime, 5e-4), fused=True)
    triplet = TripletLoss(loss_cfg)
    pos = torch.arange(target.shape[0])
    labels = torch.arange(target.shape[0])

    def step():
        q, u = model(*batch_q), model(*batch_l)
        if prime is None:
            loss = triplet(q, u, target, pos)
        else:
            z = prime(u, labels)
            loss, _ = prime_loss(q, u, z, target, {"xu": pos, "xz": pos, "ux": pos, "reg": pos}, loss_cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed(fns: dict, repeats: int, warmup: int) -> dict[str, tuple[float, float, float]]:
    """Median, min and max seconds of each function, interleaved."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in times.items()}


def show(results: dict, base: str) -> None:
    b = results[base][0]
    for name, (med, lo, hi) in results.items():
        print(f"  {name:<28} {1000 * med:9.1f} ms  [{1000 * lo:.1f}, {1000 * hi:.1f}]  x{med / b:5.2f} vs {base}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="minilm")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--length", type=int, default=24)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--queries", type=int, default=15_000, help="training queries of the centroid pass")
    p.add_argument("--labels", type=int, default=3_000)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vision_dim = 16
    cfg = {k: v for k, v in BACKBONES[args.backbone](use_images=True, vision_dim=vision_dim).items()}
    cfg["attention_dropout"] = 0.0
    early = create_model({**cfg, "fusion": "early"}).train()
    late = create_model({**cfg, "fusion": "late"}).train()
    d = early.embedding_dim
    b = args.batch_size
    bq, bl = make_batch(b, args.length, vision_dim, 0), make_batch(b, args.length, vision_dim, 1)
    target = torch.eye(b, dtype=torch.bool) | (torch.rand(b, b) < 2.0 / b)
    loss_cfg = LossConfig(aggressive=True)
    head = PrimeHead(args.labels, d, PrimeConfig(free_vectors=1024), seed=0).train()
    head.set_clusters(np.array_split(np.arange(args.labels), 1024))
    print(f"backbone {args.backbone} (hidden {d}), batch {b}, title length {args.length}, "
          f"threads {torch.get_num_threads()}, {args.repeats} interleaved repeats after {args.warmup} warm-up")

    print("training step (queries + labels forward, loss, backward, AdamW):")
    show(timed({"NGAME (early fusion)": step_fn(early, None, bq, bl, target, loss_cfg),
                "PRIME (early fusion)": step_fn(early, head, bq, bl, target, loss_cfg)},
               args.repeats, args.warmup), "NGAME (early fusion)")
    print("fusion, NGAME loss:")
    show(timed({"early (ViXML)": step_fn(early, None, bq, bl, target, loss_cfg),
                "late (MUFIN-style)": step_fn(late, None, bq, bl, target, loss_cfg)},
               args.repeats, args.warmup), "early (ViXML)")

    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(args.queries), 2)
    Y = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, rng.integers(0, args.labels, rows.size))),
                      shape=(args.queries, args.labels))
    E = rng.normal(size=(args.queries, d)).astype(np.float32)
    enc_batch = make_batch(256, args.length, vision_dim, 2)

    def encode_all():  # the exact pass: every training query through the encoder, in eval mode
        early.eval()
        with torch.inference_mode():
            for _ in range(-(-args.queries // 256)):
                early(*enc_batch)
        early.train()

    print(f"PRIME epoch end ({args.queries} training queries, {args.labels} labels):")
    res = timed({"centroids from the bank": lambda: label_centroids(Y, E)}, 3, 1)
    res.update(timed({"exact pass (encode + centroids)": lambda: (encode_all(), label_centroids(Y, E))}, 1, 0))
    show(res, "centroids from the bank")


if __name__ == "__main__":
    main()
