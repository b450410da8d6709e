"""Benchmark the image feature cache: encoding throughput and memory when reading.

(1) Throughput: images/second of the whole caching path (``build_feature_cache`` over a
    demo ``.bin`` source: DataLoader workers decode + preprocess while the model encodes)
    versus the encoder's forward pass alone on already-decoded, preprocessed tensors
    (same batch size). The ratio says how much the input pipeline costs (target >= 0.9).
    ``--encoders`` and ``--threads`` repeat it for several encoders and torch thread
    counts; each gives the time the whole caching path would take for the ``small`` demo
    (42,097 images: what notebook 02 encodes).
(2) Memory: peak resident size (VmHWM) of a fresh process reading random batches of
    items from a synthetic cache of the LF-AmazonTitles-1.3M size (1.3M items x 3
    images x 1152 dims, ~9 GB of float16) written to a temporary folder, deleted at the
    end (target < 2 GB).

Usage::

    .venv/bin/python benchmarks/bench_image_cache.py                 # both parts, full size
    .venv/bin/python benchmarks/bench_image_cache.py --items 100000 --batches 200   # smaller
    .venv/bin/python benchmarks/bench_image_cache.py --skip-rss --preset tiny
    .venv/bin/python benchmarks/bench_image_cache.py --skip-rss --data-dir /tmp/x --n-images 2000 --repeats 2 \
        --encoders offline-efficientnet-lite0-64,offline-efficientnet-lite0-96,offline-random-siglip --threads 1,2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / (1024 * 1024)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (DataLoader workers)."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------------------------------------
# (1) throughput
# ---------------------------------------------------------------------------------------------


class _Prefix:
    """The first ``n`` images of a source, one image per item."""

    def __init__(self, src, n):
        self.src, self.n = src, int(n)
        self.image_map = np.arange(self.n, dtype=np.int64)[:, None]

    def __len__(self):
        return self.n

    def load(self, j):
        return self.src.load(j)

    def fingerprint(self):
        return f"{self.src.fingerprint()}:first{self.n}"


def _forward_only(enc, batches: list, n: int, cpu_ms: list) -> float:
    """Images/s of the encoder's forward pass alone over ``batches`` (preprocessed pixels)."""
    c0, t = _cpu_seconds(), time.perf_counter()
    for b in batches:
        enc.encode(b)
    rate = n / (time.perf_counter() - t)
    cpu_ms.append(1000 * (_cpu_seconds() - c0) / n)
    return rate


def _full_path(src, enc, out: Path, args, n: int, cpu_ms: list) -> float:
    """Images/s of the whole caching path (``build_feature_cache``) into ``out`` (deleted after)."""
    from vixml_lib.images.cache_build import build_feature_cache

    c0, t = _cpu_seconds(), time.perf_counter()
    build_feature_cache(src, enc, out, batch_size=args.batch_size, num_workers=args.num_workers, progress=False)
    rate = n / (time.perf_counter() - t)
    cpu_ms.append(1000 * (_cpu_seconds() - c0) / n)  # workers included once reaped
    shutil.rmtree(out)
    return rate


def _interleaved_rounds(src, enc, work: Path, args, n: int) -> dict:
    """Rounds (forward, full, forward), so that a busy machine affects both alike; each round's
    ratio compares the full path with the forward passes just before and after it."""
    import torch

    # forward pass alone, on already decoded + preprocessed tensors
    px = torch.cat([enc.preprocess([src.load(j) for j in range(s, min(n, s + args.batch_size))])
                    for s in range(0, n, args.batch_size)])
    batches = list(px.split(args.batch_size))
    del px
    enc.encode(batches[0])  # warm-up
    cpu = {"forward": [], "full": []}
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    fwd, full, ratios = [], [], []
    f_prev = _forward_only(enc, batches, n, cpu["forward"])
    fwd.append(f_prev)
    for r in range(args.repeats):
        c = _full_path(src, enc, work / f"cache{r}", args, n, cpu["full"])
        f_next = _forward_only(enc, batches, n, cpu["forward"])
        full.append(c)
        fwd.append(f_next)
        ratios.append(c / ((f_prev + f_next) / 2))
        f_prev = f_next
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"fwd": fwd, "full": full, "ratios": ratios, "cpu": cpu, "load": (load0, load1)}


def _throughput_report(n: int, rounds: dict) -> dict:
    """Summarise and print the rounds of :func:`_interleaved_rounds`."""
    fwd, full, ratios, cpu = rounds["fwd"], rounds["full"], rounds["ratios"], rounds["cpu"]
    load0, load1 = rounds["load"]
    f_best, c_best = max(fwd), max(full)
    res = {"images": n, "forward_only_img_s": round(f_best, 1), "full_path_img_s": round(c_best, 1),
           "ratio_of_bests": round(c_best / f_best, 3), "median_round_ratio": round(float(np.median(ratios)), 3),
           "forward_runs": [round(x, 1) for x in fwd], "full_runs": [round(x, 1) for x in full],
           "round_ratios": [round(x, 3) for x in ratios], "load_average": [round(load0, 2), round(load1, 2)],
           "cpu_ms_per_image_forward": round(float(np.median(cpu["forward"])), 3),
           "cpu_ms_per_image_full": round(float(np.median(cpu["full"])), 3)}
    print(f"[throughput] forward pass alone: best {f_best:.1f} images/s (runs: {res['forward_runs']})")
    print(f"[throughput] whole caching path: best {c_best:.1f} images/s (runs: {res['full_runs']})")
    print(f"[throughput] ratio full / forward: {res['ratio_of_bests']:.3f} (bests), "
          f"{res['median_round_ratio']:.3f} (median of rounds {res['round_ratios']}); target >= 0.9; "
          f"load average {load0:.2f} -> {load1:.2f} on {os.cpu_count()} CPUs", flush=True)
    print(f"[throughput] CPU time per image (median, all processes): forward alone "
          f"{res['cpu_ms_per_image_forward']:.2f} ms, whole path {res['cpu_ms_per_image_full']:.2f} ms "
          f"(CPU-time ratio {res['cpu_ms_per_image_forward'] / res['cpu_ms_per_image_full']:.3f})", flush=True)
    return res


SMALL_DEMO_IMAGES = 27509 + 9090 + 5498  # trn + tst + lbl images of the `small` demo (notebook 02 encodes all)


def bench_throughput(args) -> dict:
    """Throughput per (encoder, torch thread count); returns ``{"<encoder>@<threads>t": report}``."""
    import torch

    from vixml_lib.data.demo import make_demo_dataset
    from vixml_lib.images.encoders import create_vision_encoder
    from vixml_lib.images.sources import bin_source_for_split

    work = Path(tempfile.mkdtemp(prefix="vixml-bench-cache-", dir=args.tmp))
    out = {}
    try:
        data_dir = Path(args.data_dir) if args.data_dir else make_demo_dataset(work / "demo", args.preset)
        src = bin_source_for_split(data_dir, args.split)
        n = len(src) if args.n_images is None else min(args.n_images, len(src))
        src = _Prefix(src, n)
        for name in args.encoders.split(","):
            enc = create_vision_encoder(name)
            for threads in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(threads)
                print(f"[throughput] {name} (dim {enc.dim}, {enc.image_size} px) on {n} images of "
                      f"{data_dir.name}/{args.split}; batch {args.batch_size}, {args.num_workers} workers, "
                      f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs", flush=True)
                res = _throughput_report(n, _interleaved_rounds(src, enc, work, args, n))
                res["small_demo_seconds"] = round(SMALL_DEMO_IMAGES / res["full_path_img_s"], 1)
                print(f"[throughput] -> caching the small demo ({SMALL_DEMO_IMAGES} images) would take "
                      f"{res['small_demo_seconds']:.0f} s at the best whole-path rate", flush=True)
                out[f"{name}@{threads}t"] = res
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# (2) peak RSS while reading a 1.3M-item cache
# ---------------------------------------------------------------------------------------------


def write_synthetic_cache(folder: Path, n_items: int, max_images: int, dim: int, seed: int = 0,
                          sparse: bool = False) -> None:
    """A finished cache in the feature-cache format with random vectors (written in 64 MiB chunks)."""
    from vixml_lib.images.cache import FAILURES, HEADER, MAP, VALID, VECTORS
    from vixml_lib.images.cache_write import cache_key, json_bytes, new_header

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    count = n_items * max_images
    m = np.arange(count, dtype=np.int64).reshape(n_items, max_images)
    k = rng.choice(max_images + 1, size=n_items, p=[0.07, 0.33, 0.30, 0.30] if max_images == 3 else None)
    m[np.arange(max_images)[None, :] >= k[:, None]] = -1  # 0..3 images an item, left-packed
    row_bytes = dim * 2
    rows_per_chunk = max(1, (64 << 20) // row_bytes)
    block = rng.standard_normal((rows_per_chunk, dim), dtype=np.float32).astype("<f2")
    t = time.perf_counter()
    with open(folder / VECTORS, "wb") as f:
        f.truncate(count * row_bytes)
        if not sparse:
            for s in range(0, count, rows_per_chunk):
                e = min(count, s + rows_per_chunk)
                b = block[: e - s]
                b[0, 0] = np.float16(s % 1000)  # make chunks differ a little
                f.write(b.tobytes())
    np.save(folder / MAP, m, allow_pickle=False)
    np.save(folder / VALID, np.ones(count, dtype=np.bool_), allow_pickle=False)
    (folder / FAILURES).write_bytes(b"")
    header = new_header(cache_key("synthetic", "synthetic", dim, count, m, "synthetic"), batch_size=0, chunk_size=0,
                        origin="synthetic")
    header["finished"] = True
    (folder / HEADER).write_bytes(json_bytes(header))
    print(f"[rss] wrote {count * row_bytes / 2**30:.2f} GiB synthetic cache ({n_items} items x {max_images} x {dim}) "
          f"in {time.perf_counter() - t:.1f} s{' (sparse)' if sparse else ''}", flush=True)


def read_phase(folder: str, batches: int, batch_items: int, seed: int, method: str) -> dict:
    """Runs in a fresh process so that VmHWM measures only the reading.

    ``method``: "read_batch" (FeatureCache.read_batch: positioned reads) or "memmap"
    (the naive alternative: fancy indexing of the memory-mapped matrix), for comparison.
    """
    from vixml_lib.images.cache import FeatureCache

    base = _peak_rss_mb()
    cache = FeatureCache.open(folder)
    after_open = _rss_mb()
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    n_vec = 0
    for _ in range(batches):
        items = rng.integers(0, cache.n_items, size=batch_items)
        if method == "memmap":
            rows = cache.image_map[items]
            mask = rows >= 0
            vec = np.zeros(rows.shape + (cache.dim,), dtype=np.float32)
            vec[mask] = cache.vectors[rows[mask]]
        else:
            vec, mask = cache.read_batch(items)
        n_vec += int(mask.sum())
    dt = time.perf_counter() - t
    return {"method": method, "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_before_mb": round(base, 1),
            "rss_after_open_mb": round(after_open, 1), "rss_end_mb": round(_rss_mb(), 1),
            "seconds": round(dt, 2), "ms_per_batch": round(1000 * dt / batches, 2),
            "vectors_read": n_vec, "vectors_per_s": round(n_vec / dt, 1)}


def bench_rss(args) -> dict:
    count = args.items * args.max_images
    need = count * args.dim * 2
    tmp_root = Path(args.tmp or tempfile.gettempdir())
    free = shutil.disk_usage(tmp_root).free
    margin = 2 << 30
    items = args.items
    if need + margin > free:
        items = max(1000, int((free - margin) // (args.max_images * args.dim * 2)))
        print(f"[rss] only {free / 2**30:.1f} GiB free under {tmp_root}; the full cache needs {need / 2**30:.1f} GiB "
              f"+ 2 GiB margin, so it is SHRUNK to {items} items ({items * args.max_images * args.dim * 2 / 2**30:.1f} "
              f"GiB). Use --tmp to point at a bigger disk.", flush=True)
    work = Path(tempfile.mkdtemp(prefix="vixml-bench-rss-", dir=tmp_root))
    try:
        write_synthetic_cache(work / "cache", items, args.max_images, args.dim, sparse=args.sparse)
        results = {}
        methods = ["read_batch"] + (["memmap"] if args.compare_memmap else [])
        for method in methods:
            cmd = [sys.executable, __file__, "--_read-phase", str(work / "cache"), "--batches", str(args.batches),
                   "--batch-items", str(args.batch_items), "--_method", method]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            r["items"] = items
            results[method] = r
            print(f"[rss] {method}: {args.batches} batches x {args.batch_items} random items from {items} items "
                  f"({items * args.max_images * args.dim * 2 / 2**30:.2f} GiB): peak RSS {r['peak_rss_mb']:.0f} MiB "
                  f"(target < 2048), {r['ms_per_batch']:.1f} ms/batch, {r['vectors_per_s']:.0f} vectors/s", flush=True)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("throughput")
    g.add_argument("--encoders", default="offline-efficientnet-lite0-96",
                   help="comma-separated vision encoder names, measured one after the other")
    g.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (torch.set_num_threads)")
    g.add_argument("--preset", default="small", help="demo preset generated for the source (tiny: 32 px, small: 64 px)")
    g.add_argument("--data-dir", default=None, help="use this dataset folder instead of generating a demo")
    g.add_argument("--split", default="lbl")
    g.add_argument("--n-images", type=int, default=None, help="encode only the first N images")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--num-workers", type=int, default=2)
    g.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    g.add_argument("--skip-throughput", action="store_true")
    g = ap.add_argument_group("memory")
    g.add_argument("--items", type=int, default=1_300_000)
    g.add_argument("--max-images", type=int, default=3)
    g.add_argument("--dim", type=int, default=1152)
    g.add_argument("--batches", type=int, default=2000)
    g.add_argument("--batch-items", type=int, default=2048)
    g.add_argument("--compare-memmap", action="store_true",
                   help="also measure the naive alternative: fancy indexing of the memory-mapped matrix")
    g.add_argument("--sparse", action="store_true", help="do not write the vectors (a sparse file of zeros)")
    g.add_argument("--tmp", default=None, help="folder for temporary files (default: the system temp dir)")
    g.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--_read-phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_method", default="read_batch", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._read_phase:
        print(json.dumps(read_phase(args._read_phase, args.batches, args.batch_items, 0, args._method)))
        return
    report = {}
    if not args.skip_throughput:
        report["throughput"] = bench_throughput(args)
    if not args.skip_rss:
        report["rss"] = bench_rss(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
