"""Paper scale on one machine: every stage of a run on a synthetic dataset with the
LF-AmazonTitles-1.3M layout, at two sizes, with wall time and peak RSS per stage.

The dataset (written to ``--out``; check ``df -h`` first: the full 1.3M size takes ~20 GB,
almost all of it image features) has the layout of the real one: 1,305,265 labels,
2,248,619 training and 970,237 test queries (``--layout 131k``: 131,073 / 294,805 /
134,835), titles of random words, long-tailed label matrices (labels per query drawn from a
log-normal with the dataset's mean, 22.2 for 1.3M; label popularity a power law), one
filter pair for half the test queries, and a float16 image feature cache per split in the
:mod:`vixml_lib.images.cache` format (0-3 images per item, ``--vision-dim`` 1152 as the
authors' SigLIP2 features; the vectors are noise). The model is the tiny RANDOM BERT of
:func:`vixml_lib.testing.tiny_model_config` (hidden 32, 2 layers) with image slots: its
figures measure the pipeline, not a model.

Stages, each timed and with its peak resident set size (VmHWM, reset before the stage
through ``/proc/self/clear_refs``, after ``malloc_trim`` handed back what earlier stages
freed; "+mem" is the stage's peak over its starting RSS):

1. ``write data``: the synthetic dataset (not a user step; the feature cache reuses the
   writer functions of :mod:`vixml_lib.images.cache_write`);
2. ``load labels``: :func:`vixml_lib.data.load_dataset` (texts, ``X_Y`` parse, filters);
3. ``token cache``: :func:`vixml_lib.data.tokens.tokenize_dataset` (int32 memory-mapped);
4. ``feature reads``: ``--feature-batches`` random batches of ``--batch-size`` items from
   the training and label feature caches (fixed work: shows that reads do not grow with
   the file);
5. ``clustering``: :func:`vixml_lib.sampling.balanced_clusters` of every training query
   (random unit vectors of the model's width; clusters of 16) on ``--device``;
6. ``train setup`` and ``train steps``: the library's training pieces
   (:func:`vixml_lib.training.setup.setup`, :func:`vixml_lib.training.loop.train_epoch`),
   one epoch capped at ``--train-steps`` steps;
7. ``encode labels``: :func:`vixml_lib.training.encode` of every label;
8. ``encode test``: a seeded sample of ``--sample-queries`` test queries;
9. ``exact top-100``: :func:`vixml_lib.retrieval.exact_topk`, filter pairs excluded;
10. ``metrics``: :func:`vixml_lib.metrics.evaluate` (P@k, nDCG@k, PSP@k, R@100).

Each size runs in its own process (so one size's memory cannot inflate the other's); the
parent prints, per stage, how time and memory grow between the sizes against the size
ratio (exponent 1 = linear; stages that grow faster are flagged, exact search excepted).

Threads: on the CPU the default is ONE torch and BLAS thread. On a 2-core machine that
other jobs load, two OpenMP threads wait on each other at every parallel region: encoding
labels ran at ~3,500 items/s with 2 threads against ~23,000 with 1 while another process
used one core, which made the stage look super-linear. ``--threads 0`` keeps the defaults.

Usage::

    nice .venv/bin/python benchmarks/bench_scale.py                        # 1/8 and 1/1 of 1.3M
    .venv/bin/python benchmarks/bench_scale.py --scale 0.01 --sizes 0.5,1  # a quick check
    .venv/bin/python benchmarks/bench_scale.py --layout 131k --sizes 1 --keep --json s.json
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYOUTS = {  # the XML-repository statistics of the two datasets
    "1.3m": {"labels": 1_305_265, "trn": 2_248_619, "tst": 970_237, "labels_per_query": 22.20},
    "131k": {"labels": 131_073, "trn": 294_805, "tst": 134_835, "labels_per_query": 2.29},
}
IMAGE_MIX = (0.1, 0.3, 0.4, 0.2)  # P(0, 1, 2, 3 images) per item
ENCODER = "synthetic-noise-f16"  # the feature caches' encoder name
BACKBONE = "random-tiny-bert"


# ------------------------------------------------------------------------------ measuring
def _status(key: str) -> float:
    """A ``/proc/self/status`` field in GiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _trim() -> None:
    """Hand freed heap memory back to the system (glibc), so that a stage's RSS at its start
    counts live data only, not what earlier stages freed."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class Stages:
    """Wall time and peak RSS of named stages, printed as they finish."""

    def __init__(self):
        self.rows: list[dict] = []
        self.can_reset = _reset_peak()

    @contextmanager
    def __call__(self, name: str, **info):
        gc.collect()
        _trim()
        self.can_reset = _reset_peak() and self.can_reset
        start_rss, t0 = _status("VmRSS"), time.perf_counter()
        yield info
        row = {"stage": name, "seconds": time.perf_counter() - t0, "peak_rss_gib": _status("VmHWM"),
               "start_rss_gib": start_rss, "end_rss_gib": _status("VmRSS"), **info}
        row["stage_peak_gib"] = row["peak_rss_gib"] - start_rss  # what the stage itself added at its peak
        self.rows.append(row)
        extra = "  ".join(f"{k}={v}" for k, v in info.items())
        print(f"  {name:<16} {row['seconds']:9.1f} s   peak RSS {row['peak_rss_gib']:6.2f} GiB "
              f"(+{row['stage_peak_gib']:.2f} over its start)  {extra}", flush=True)


# ------------------------------------------------------------------------------ the dataset
def _counts(n: int, mean: float, cap: int, rng) -> np.ndarray:
    """Long-tailed positive counts: a log-normal (sigma 1) with the given mean, in [1, cap]."""
    mu = math.log(mean) - 0.5
    return np.clip(np.rint(np.exp(rng.normal(mu, 1.0, n))), 1, cap).astype(np.int64)


def _pairs_text(labels: np.ndarray, last: np.ndarray) -> bytes:
    """ASCII ``label:1`` tokens, each followed by a space, or a newline where ``last``
    (the last label of its row): digits written with array operations, no Python strings."""
    digits = np.ones(labels.size, dtype=np.int64)
    for p in range(1, 19):
        digits += labels >= 10**p
    width = digits + 3  # digits, ":1", separator
    end = np.cumsum(width)
    start = end - width
    buf = np.empty(int(end[-1]) if end.size else 0, dtype=np.uint8)
    for j in range(int(digits.max()) if digits.size else 0):
        has = digits > j
        place = 10 ** (digits[has] - 1 - j)
        buf[start[has] + j] = 48 + (labels[has] // place) % 10
    buf[start + digits] = ord(":")
    buf[start + digits + 1] = ord("1")
    buf[end - 1] = np.where(last, ord("\n"), ord(" "))
    return buf.tobytes()


def write_xy(path: Path, n_rows: int, n_labels: int, mean: float, cdf: np.ndarray, rng,
             chunk: int = 1 << 16) -> int:
    """An ``X_Y`` file (header, then ``label:1`` pairs per row) with long-tailed rows and a
    power-law label popularity ``cdf``, written in chunks of rows (bounded memory); returns
    the number of pairs. (``vixml_lib.data.formats.write_xy`` holds every pair as a Python
    string, ~3 GB for the 50M pairs of 1.3M, hence this chunked writer.)"""
    pairs = 0
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(f"{n_rows} {n_labels}\n".encode())
        for a in range(0, n_rows, chunk):
            b = min(a + chunk, n_rows)
            k = _counts(b - a, mean, min(n_labels, 1000), rng)
            rows = np.repeat(np.arange(b - a, dtype=np.int64), k)
            labels = np.minimum(np.searchsorted(cdf, rng.random(rows.size)), n_labels - 1)
            keys = np.unique(rows * n_labels + labels)  # sorted by row, then label; duplicates gone
            rows, labels = keys // n_labels, keys % n_labels
            f.write(_pairs_text(labels, np.r_[rows[1:] != rows[:-1], True]))
            pairs += keys.size
    os.replace(tmp, path)
    return pairs


def _titles(n: int, vocab: list[str], rng, chunk: int = 1 << 17):
    """Titles of 3-14 words drawn from ``vocab`` with a power-law word frequency (generator)."""
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))
    cdf /= cdf[-1]
    for a in range(0, n, chunk):
        lens = rng.integers(3, 15, min(chunk, n - a))
        words = np.searchsorted(cdf, rng.random(int(lens.sum()))).tolist()
        ends = np.cumsum(lens).tolist()
        start = 0
        for e in ends:
            yield " ".join(map(vocab.__getitem__, words[start:e]))
            start = e


def write_features(folder: Path, n_items: int, dim: int, rng, block_rows: int = 1 << 13) -> int:
    """A finished feature cache (:mod:`vixml_lib.images.cache` format) for ``n_items`` items
    with 0-3 images each; the vectors are one block of float16 noise written repeatedly.
    Returns the number of images."""
    from vixml_lib.images.cache import FAILURES, MAP, VALID, VECTORS
    from vixml_lib.images.cache_write import cache_key, new_header, write_durable, write_header, write_npy_durable

    folder.mkdir(parents=True, exist_ok=True)
    n_img = rng.choice(len(IMAGE_MIX), size=n_items, p=IMAGE_MIX)
    slots = np.arange(len(IMAGE_MIX) - 1) < n_img[:, None]  # [n_items, 3]
    image_map = np.full(slots.shape, -1, dtype=np.int64)
    count = int(slots.sum())
    image_map[slots] = np.arange(count)
    key = cache_key(ENCODER, f"{ENCODER}:dim{dim}", dim, count, image_map, f"synthetic:{n_items}")
    header = new_header(key, batch_size=0, chunk_size=block_rows, origin="imported")
    write_header(folder, header)
    block = rng.standard_normal((block_rows, dim), dtype=np.float32).astype("<f2").tobytes()
    row_bytes = dim * 2
    with open(folder / VECTORS, "wb") as f:
        for a in range(0, count, block_rows):
            f.write(block[:(min(a + block_rows, count) - a) * row_bytes])
        f.flush()
        os.fsync(f.fileno())
    write_npy_durable(folder / MAP, image_map)
    write_npy_durable(folder / VALID, np.ones(count, dtype=np.bool_))
    write_durable(folder / FAILURES, b"")
    header["finished"] = True
    write_header(folder, header)
    return count


def write_dataset(folder: Path, sizes: dict, mean: float, vision_dim: int, seed: int) -> dict:
    """The synthetic dataset in the prepared layout (``*.raw.txt``, ``*_X_Y.txt``, the test
    filter file, feature caches); returns its pair and image counts."""
    from vixml_lib.data import formats
    from vixml_lib.images.cache import feature_cache_dir

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = sorted({"".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(30_000)})
    for split in ("trn", "tst", "lbl"):
        formats.write_texts(folder / f"{split}.raw.txt", _titles(sizes[split], vocab, rng))
    n_lbl = sizes["lbl"]
    weight = rng.permutation(np.arange(1, n_lbl + 1, dtype=np.float64) ** -0.8)  # popularity, shuffled
    cdf = np.cumsum(weight)
    cdf /= cdf[-1]
    out = {f"{s}_pairs": write_xy(folder / f"{s}_X_Y.txt", sizes[s], n_lbl, mean, cdf, rng) for s in ("trn", "tst")}
    half = np.flatnonzero(rng.random(sizes["tst"]) < 0.5)
    formats.write_filter(folder / "filter_labels_test.txt",
                         np.stack([half, rng.integers(0, n_lbl, half.size)], axis=1))
    for split in ("trn", "tst", "lbl"):
        out[f"{split}_images"] = write_features(feature_cache_dir(folder, ENCODER, split), sizes[split],
                                                vision_dim, rng)
    return out


def disk_usage(folder: Path) -> dict:
    """GiB on disk of the dataset's parts."""
    def du(paths) -> float:
        return sum(p.stat().st_size for q in paths for p in ([q] if q.is_file() else q.rglob("*")) if p.is_file())

    texts = list(folder.glob("*.txt"))
    return {"texts_and_labels_gib": du(texts) / 2**30, "tokens_gib": du([folder / "tokens"]) / 2**30,
            "features_gib": du([folder / "features"]) / 2**30}


# ------------------------------------------------------------------------------ the stages
def train_config(args, data_dir: Path, run_dir: Path):
    from vixml_lib.training import TrainConfig

    return TrainConfig(
        data_dir=str(data_dir), out_dir=str(run_dir), model="minilm-vixml", vision_encoder=ENCODER,
        model_overrides={"backbone": BACKBONE, "kind": "encoder"}, epochs=1, batch_size=args.batch_size,
        max_steps_per_epoch=args.train_steps, warmup_steps=2, eval_at_start=False,
        eval_max_queries=args.sample_queries, encode_batch_size=args.encode_batch_size, save_embeddings=False,
        device=args.device, threads=args.threads, seed=args.seed)


def data_stages(stage: Stages, args, data_dir: Path, sizes: dict) -> None:
    """Stages 1-4: write the dataset, load its labels, build the token cache, read features."""
    from vixml_lib.data.prepare import load_dataset
    from vixml_lib.data.tokens import cache_dir, tokenize_dataset
    from vixml_lib.images.cache import FeatureCache, feature_cache_dir
    from vixml_lib.testing import RANDOM_BACKBONES

    with stage("write data") as info:
        info.update(write_dataset(data_dir, sizes, LAYOUTS[args.layout]["labels_per_query"], args.vision_dim,
                                  args.seed))
    with stage("load labels") as info:
        ds = load_dataset(data_dir, images=False)
        info.update(trn_nnz=int(ds.Y["trn"].nnz), tst_nnz=int(ds.Y["tst"].nnz))
        del ds
    shutil.rmtree(cache_dir(data_dir, BACKBONE, args.max_len), ignore_errors=True)
    with stage("token cache"):
        tokenize_dataset(data_dir, BACKBONE, max_len=args.max_len, tokenizer=RANDOM_BACKBONES[BACKBONE][1]())
    rng = np.random.default_rng(args.seed)
    with stage("feature reads", batches=2 * args.feature_batches, items=args.batch_size):
        for split in ("trn", "lbl"):
            with FeatureCache.open(feature_cache_dir(data_dir, ENCODER, split)) as cache:
                for _ in range(args.feature_batches):
                    cache.read_batch(rng.integers(0, cache.n_items, args.batch_size))


def model_stages(stage: Stages, args, data_dir: Path, run_dir: Path, n_trn: int) -> dict:
    """Stages 5-10: clustering, a capped epoch, encoding, exact search, metrics."""
    import torch

    from vixml_lib.metrics import evaluate
    from vixml_lib.retrieval import exact_topk, topk_to_csr
    from vixml_lib.sampling import balanced_clusters
    from vixml_lib.training import encode
    from vixml_lib.training.loop import train_epoch
    from vixml_lib.training.setup import setup

    emb = np.random.default_rng(args.seed).standard_normal((n_trn, args.emb_dim), dtype=np.float32)
    device = None if args.device == "auto" else args.device
    with stage("clustering", points=n_trn, dim=args.emb_dim):
        clusters = balanced_clusters(emb, 16, seed=args.seed, device=device or ("cuda" if torch.cuda.is_available()
                                                                                   else "cpu"))
    del emb, clusters
    config = train_config(args, data_dir, run_dir)
    with stage("train setup"):
        s = setup(config)
    with stage("train steps", steps=args.train_steps, batch=args.batch_size):
        entry = train_epoch(s, 0, {"epoch": 0, "step": 0, "history": []}, None, progress=False)
    dtype = np.float16 if args.emb_dtype == "float16" else np.float32
    with stage("encode labels", labels=len(s.data.splits["lbl"])):
        lbl = encode(s.model, s.data.splits["lbl"], args.encode_batch_size, desc="encode labels", dtype=dtype)
    with stage("encode test", queries=len(s.data.splits["tst"])):
        tst = encode(s.model, s.data.splits["tst"], args.encode_batch_size, desc="encode test", dtype=dtype)
    with stage("exact top-100"):
        scores, idx = exact_topk(tst, lbl, 100, exclude=s.data.filter_tst, device=s.device)
    with stage("metrics"):
        metrics = evaluate(topk_to_csr(scores, idx, s.data.n_labels), s.data.Y_tst, s.data.inv_psp, k=5,
                           recall_k=(100,), filter_pairs=s.data.filter_tst)
    return {"loss": entry["loss"], "P@1": metrics["P@1"], "R@100": metrics["R@100"]}


def one_size(args) -> dict:
    """Every stage at one size (run in a child process); returns its figures."""
    import torch

    if args.threads is None and not (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())):
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads, user_api="blas")
        except ImportError:
            pass
    lay = LAYOUTS[args.layout]
    frac = args.scale * args.one_size
    sizes = {"lbl": max(100, round(lay["labels"] * frac)), "trn": max(100, round(lay["trn"] * frac)),
             "tst": max(100, round(lay["tst"] * frac))}
    data_dir = Path(args.out) / f"{args.layout}-x{frac:g}"
    run_dir = Path(args.out) / f"run-{args.layout}-x{frac:g}"
    print(f"# size {args.one_size:g} of {args.layout} x {args.scale:g}: {sizes['lbl']:,} labels, "
          f"{sizes['trn']:,} train and {sizes['tst']:,} test queries -> {data_dir}", flush=True)
    stage = Stages()
    t0 = time.perf_counter()
    try:
        data_stages(stage, args, data_dir, sizes)
        quality = model_stages(stage, args, data_dir, run_dir, sizes["trn"])
        disk = disk_usage(data_dir)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    total = {"seconds": time.perf_counter() - t0, "peak_rss_gib": max(r["peak_rss_gib"] for r in stage.rows)}
    print(f"  {'whole run':<16} {total['seconds']:9.1f} s   peak RSS {total['peak_rss_gib']:6.2f} GiB   "
          f"disk: " + ", ".join(f"{k[:-4]} {v:.2f} GiB" for k, v in disk.items()) +
          f"   (random model: loss {quality['loss']:.3f}, P@1 {quality['P@1']:.2f})", flush=True)
    return {"size": args.one_size, "fraction": frac, "counts": sizes, "stages": stage.rows, "total": total,
            "disk": disk, "quality": quality, "peak_reset": stage.can_reset}


# ------------------------------------------------------------------------------ two sizes
def growth(small: dict, large: dict) -> list[dict]:
    """Per stage: time and memory ratios between two sizes, and their exponents against the
    size ratio (``ratio = size_ratio ** exponent``; 1 = linear)."""
    r = large["fraction"] / small["fraction"]
    rows = []
    by_name = {row["stage"]: row for row in small["stages"]}
    for row in large["stages"]:
        a = by_name.get(row["stage"])
        if a is None:
            continue
        t = row["seconds"] / max(a["seconds"], 1e-9)
        m_a, m_b = a["stage_peak_gib"], row["stage_peak_gib"]
        m = m_b / m_a if m_a > 0.02 and m_b > 0.02 else None  # tiny additions are noise
        exp_t = math.log(t) / math.log(r) if t > 0 else float("nan")
        exp_m = math.log(m) / math.log(r) if m else None
        flagged = row["stage"] != "exact top-100" and row["seconds"] > 5 and (
            exp_t > 1.2 or (exp_m is not None and exp_m > 1.2 and m_b > 0.25))
        rows.append({"stage": row["stage"], "size_ratio": r, "time_ratio": t, "time_exponent": exp_t,
                     "memory_ratio": m, "memory_exponent": exp_m, "super_linear": flagged})
    return rows


def print_growth(rows: list[dict], small: dict, large: dict) -> None:
    print(f"\n# growth from size {small['size']:g} to {large['size']:g} (x{rows[0]['size_ratio']:.2f}); "
          "exponent 1 = linear, memory = what the stage added over its start")
    print(f"{'stage':<16} {'time':>10} {'time':>10} {'x time':>7} {'exp':>5} {'+mem':>8} {'+mem':>8} "
          f"{'x mem':>6} {'exp':>5}")
    small_rows = {r["stage"]: r for r in small["stages"]}
    large_rows = {r["stage"]: r for r in large["stages"]}
    for g in rows:
        a, b = small_rows[g["stage"]], large_rows[g["stage"]]
        mem = (f"{g['memory_ratio']:6.2f} {g['memory_exponent']:5.2f}" if g["memory_ratio"]
               else f"{'-':>6} {'-':>5}")
        flag = "  SUPER-LINEAR" if g["super_linear"] else ""
        print(f"{g['stage']:<16} {a['seconds']:9.1f}s {b['seconds']:9.1f}s {g['time_ratio']:7.2f} "
              f"{g['time_exponent']:5.2f} {a['stage_peak_gib']:7.2f}G {b['stage_peak_gib']:7.2f}G {mem}{flag}")
    for res in (small, large):
        print(f"whole run, size {res['size']:g}: {res['total']['seconds']:.0f} s, peak RSS "
              f"{res['total']['peak_rss_gib']:.2f} GiB")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="1.3m")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every size (e.g. 0.01 for a quick check)")
    ap.add_argument("--sizes", default="0.125,1", help="fractions of the layout, run one after the other")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "vixml-bench-scale"),
                    help="folder for the synthetic data (deleted afterwards unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic data")
    ap.add_argument("--vision-dim", type=int, default=1152, help="image feature width (SigLIP2 so400m: 1152)")
    ap.add_argument("--emb-dim", type=int, default=32, help="width of the vectors clustered (the tiny model's)")
    ap.add_argument("--emb-dtype", choices=("float32", "float16"), default="float32")
    ap.add_argument("--max-len", type=int, default=32, help="title tokens")
    ap.add_argument("--batch-size", type=int, default=256, help="training batch (queries) and feature-read batch")
    ap.add_argument("--train-steps", type=int, default=20, help="steps of the capped epoch")
    ap.add_argument("--feature-batches", type=int, default=100, help="random feature batches read per split")
    ap.add_argument("--sample-queries", type=int, default=10_000, help="test queries searched and scored")
    ap.add_argument("--encode-batch-size", type=int, default=1024)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and BLAS CPU threads (default on CPU: 1, see the module docstring; 0 = all)")
    ap.add_argument("--progress", action="store_true", help="show the library's progress bars")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", default=None, help="also write every figure as JSON")
    ap.add_argument("--one-size", type=float, default=None, help=argparse.SUPPRESS)  # internal: the child
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_size is not None:
        Path(args.result).write_text(json.dumps(one_size(args)))
        return 0

    sizes = sorted(float(x) for x in args.sizes.split(","))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    print(f"# bench_scale: layout {args.layout} x {args.scale:g}, sizes {sizes}; {_cpu_name()}, "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}; free disk at {args.out}: "
          f"{shutil.disk_usage(args.out).free / 2**30:.0f} GiB")
    results = []
    for size in sizes:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            result = f.name
        try:
            env = dict(os.environ) if args.progress else {**os.environ, "TQDM_DISABLE": "1"}
            subprocess.run([sys.executable, __file__, *argv, "--one-size", str(size), "--result", result],
                           check=True, env=env)
            results.append(json.loads(Path(result).read_text()))
        finally:
            os.unlink(result)
    rows = growth(results[0], results[-1]) if len(results) > 1 else []
    if rows:
        print_growth(rows, results[0], results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "cpu": _cpu_name(), "results": results,
                                               "growth": rows}, indent=2))
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
