"""Benchmark: `vixml evaluate` on a synthetic case the size of LF-AmazonTitles-131K.

Generates (in a temporary folder, or ``--dir``; files already there are reused):
  tst_X_Y.txt   100,000 queries x 131,072 labels, ~5 labels a row, long-tailed labels
  trn_X_Y.txt   295,000 rows (for the propensity weights)
  filter.txt    ~5,000 (query, label) pairs
  P.npz         exactly 100 predictions per query, some of them true labels
then times the whole command as a subprocess (wall time, best and median of --runs)

  python -m vixml_lib.cli evaluate --true tst_X_Y.txt --pred P.npz --train trn_X_Y.txt
      --filter filter.txt --k 5 --json out.json

against the bound (<= 2 s), and times each stage in-process so that a regression can be
located. Usage: python benchmarks/bench_evaluate.py [--dir DIR] [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vixml_lib import metrics  # noqa: E402
from vixml_lib.data import formats  # noqa: E402

N_LABELS = 131_072
N_TEST = 100_000
N_TRAIN = 295_000
N_FILTER = 5_000
N_PRED = 100
BOUND_S = 2.0


def _label_matrix(rng, n_rows: int, n_labels: int) -> sp.csr_matrix:
    """~5 labels a row (1 + Poisson(4)), labels drawn from a Zipf-like popularity."""
    counts = 1 + rng.poisson(4.0, size=n_rows)
    popularity = 1.0 / np.arange(1, n_labels + 1) ** 0.9
    cdf = np.cumsum(popularity)
    cdf /= cdf[-1]
    perm = rng.permutation(n_labels)  # popular labels spread over the index range
    labels = perm[np.searchsorted(cdf, rng.random(int(counts.sum())))]
    rows = np.repeat(np.arange(n_rows), counts)
    Y = sp.csr_matrix((np.ones(labels.size, dtype=np.float32), (rows, labels)),
                      shape=(n_rows, n_labels))
    Y.sum_duplicates()
    Y.data[:] = 1.0  # a label drawn twice in a row counts once
    return Y


def _predictions(rng, Y: sp.csr_matrix) -> sp.csr_matrix:
    """Exactly N_PRED distinct labels a row; about 60 % of the true labels are among them,
    usually with high scores; distinct random scores (no ties)."""
    n, L = Y.shape
    start = rng.integers(0, L, size=n)
    stride = 2 * rng.integers(0, L // 2, size=n) + 1  # odd: distinct modulo 2^17
    j = np.arange(3 * N_PRED)
    cand = (start[:, None] + j[None, :] * stride[:, None]) % L  # (n, 300) distinct a row
    lab = cand[:, :N_PRED].copy()
    # put some true labels in the first columns
    tr = np.repeat(np.arange(n), np.diff(Y.indptr))
    slot = np.arange(Y.nnz) - np.repeat(Y.indptr[:-1], np.diff(Y.indptr))
    keep = (rng.random(Y.nnz) < 0.6) & (slot < N_PRED // 2)
    lab[tr[keep], slot[keep]] = Y.indices[keep]
    injected = np.zeros(lab.shape, dtype=bool)
    injected[tr[keep], slot[keep]] = True
    # replace duplicates created by the injection with unused candidates
    spare = N_PRED
    while True:
        order = np.argsort(lab, axis=1, kind="stable")
        s = np.take_along_axis(lab, order, axis=1)
        eq = s[:, 1:] == s[:, :-1]
        dup_sorted = np.zeros(lab.shape, dtype=bool)
        dup_sorted[:, 1:] |= eq
        dup_sorted[:, :-1] |= eq
        dup = np.zeros(lab.shape, dtype=bool)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        dup &= ~injected  # keep the injected true labels (distinct); replace the others
        if not dup.any():
            break
        r, c = np.nonzero(dup)
        lab[r, c] = cand[r, spare % cand.shape[1]]
        spare += 1
    scores = rng.random((n, N_PRED), dtype=np.float32)
    scores[injected] += 0.3  # true labels tend to rank high (P@1 of a few tens of %)
    P = sp.csr_matrix((scores.ravel(), lab.ravel(), np.arange(0, n * N_PRED + 1, N_PRED)),
                      shape=(n, L))
    P.sort_indices()
    assert np.all(np.diff(P.indptr) == N_PRED)
    return P


def generate(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (folder / "tst_X_Y.txt").exists():
        Y = _label_matrix(rng, N_TEST, N_LABELS)
        formats.write_xy(folder / "tst_X_Y.txt", Y)
        formats.write_predictions(folder / "P.npz", _predictions(rng, Y))
        rows = rng.integers(0, N_TEST, size=N_FILTER)
        # half the filter pairs hit stored predictions, half are random
        P = formats.read_predictions(folder / "P.npz")
        half = N_FILTER // 2
        hit_labels = P.indices[P.indptr[rows[:half]] + rng.integers(0, N_PRED, half)]
        labels = np.concatenate([hit_labels, rng.integers(0, N_LABELS, N_FILTER - half)])
        pairs = np.unique(np.stack([rows, labels], axis=1), axis=0)
        formats.write_filter(folder / "filter.txt", pairs)
    if not (folder / "trn_X_Y.txt").exists():
        formats.write_xy(folder / "trn_X_Y.txt", _label_matrix(rng, N_TRAIN, N_LABELS))
    print(f"data in {folder} ({time.perf_counter() - t0:.1f} s to generate)")


def stages(folder: Path) -> dict[str, float]:
    """Per-stage in-process timings (seconds) of what evaluate_files does."""
    t = {}
    t0 = time.perf_counter()
    true = formats.read_xy(folder / "tst_X_Y.txt")
    t["read true"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train = formats.read_xy(folder / "trn_X_Y.txt", n_labels=true.shape[1])
    t["read train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inv = metrics.inverse_propensity(train)
    t["propensity"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = formats.read_predictions(folder / "P.npz")
    t["read preds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = formats.read_filter(folder / "filter.txt", shape=true.shape)
    t["read filter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred_f = formats.apply_filter(pred, pairs, copy=False)  # as evaluate_files does
    t["apply filter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics.evaluate(pred_f, true, inv_psp=inv, k=5, recall_k=(100,))
    t["metrics"] = time.perf_counter() - t0
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="data folder (default: a temporary one)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    tmp = None
    if args.dir:
        folder = Path(args.dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_evaluate_")
        folder = Path(tmp.name)
    try:
        generate(folder)
        cmd = [sys.executable, "-m", "vixml_lib.cli", "evaluate",
               "--true", "tst_X_Y.txt", "--pred", "P.npz", "--train", "trn_X_Y.txt",
               "--filter", "filter.txt", "--k", "5", "--json", "out.json"]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy, scipy.sparse"], check=True)
        startup = time.perf_counter() - t0
        walls = []
        has_cli = subprocess.run([sys.executable, "-c", "import vixml_lib.cli"], env=env,
                                 capture_output=True).returncode == 0
        if not has_cli:
            print("vixml_lib.cli is not importable yet: timing evaluate_files in-process "
                  "plus the interpreter start-up instead of the command")
        cpus = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            if has_cli:
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                res = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
                walls.append(time.perf_counter() - t0)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
                if res.returncode != 0:
                    print(res.stdout, res.stderr, sep="\n")
                    raise SystemExit(f"command failed with exit status {res.returncode}")
            else:
                out = metrics.evaluate_files(folder / "tst_X_Y.txt", folder / "P.npz",
                                             folder / "trn_X_Y.txt", folder / "filter.txt")
                (folder / "out.json").write_text(json.dumps(out))
                walls.append(time.perf_counter() - t0 + startup)
        out = json.loads((folder / "out.json").read_text())
        print("metrics:", json.dumps({k: round(v, 2) for k, v in out.items()}))
        per = [stages(folder) for _ in range(args.runs)]
        print(f"in-process stages (best of {args.runs}):")
        for name in per[0]:
            print(f"  {name:<13} {min(p[name] for p in per):7.3f} s")
        print(f"  {'total':<13} {min(sum(p.values()) for p in per):7.3f} s")
        print(f"  (python + numpy + scipy start-up: {startup:.3f} s)")
        best, med = min(walls), statistics.median(walls)
        what = "whole command" if has_cli else "evaluate_files + start-up"
        print(f"{what} ({args.runs} runs): best {best:.3f} s, median {med:.3f} s "
              f"(bound {BOUND_S:.1f} s) -> {'OK' if med <= BOUND_S else 'TOO SLOW'}")
        if cpus:
            print(f"  CPU time of the command (user + sys): best {min(cpus):.3f} s, "
                  f"median {statistics.median(cpus):.3f} s")
        print(f"  load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} CPUs (other jobs inflate wall times)")
        return 0 if med <= BOUND_S else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
