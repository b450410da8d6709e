"""Several processes, one run: ``torch.distributed`` data parallelism with GLOBAL in-batch negatives.

Every process (rank) builds the same batches from the same seeded generator, so the batch
plan, the sampled positives and the NGAME clusters agree without communication. Each rank
encodes its share of a batch's queries and labels; the embeddings are all-gathered with a
differentiable gather (:func:`torch.distributed.nn.functional.all_gather`), so hard-negative
mining and the multi-positive target see the whole global batch exactly as one process would.
The loss is then the same number on every rank; the gather's backward sums its gradient over
ranks (a factor ``world``) and ``DistributedDataParallel`` averages the parameter gradients
(a factor ``1 / world``), so the update equals the one-process update.

Launch with ``vixml train --config C.yaml --nproc-per-node N`` (one machine) or with
``torchrun --nnodes M --nproc-per-node N ... -m vixml_lib.cli train --config C.yaml`` (several
machines): the standard ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` variables
switch this module on. NCCL on GPUs (one per rank), gloo on CPUs. Only rank 0 writes files.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (``size == 1``: a plain single-process run)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device_name: str) -> tuple[World, torch.device | None]:
    """The :class:`World` from the launcher's environment (``WORLD_SIZE`` > 1 starts the process
    group: NCCL for CUDA, gloo for CPU) and the device of this rank (None: as configured)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), None
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available() or device_name.startswith("cuda:")
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=size)
    return World(rank, size, local), device


def shard(rows: np.ndarray, world: World) -> np.ndarray:
    """This rank's contiguous share of ``rows``: ``ceil(n / size)`` rows, the last rank padded by
    repeating the last row (its copies are dropped after the gather, see :func:`gather`)."""
    if not world.distributed:
        return rows
    per = -(-len(rows) // world.size)
    padded = np.concatenate([rows, np.repeat(rows[-1:], per * world.size - len(rows))]) if len(rows) else rows
    return padded[world.rank * per:(world.rank + 1) * per]


def gather(x: torch.Tensor, world: World, n: int) -> torch.Tensor:
    """The ranks' shares concatenated in rank order, padding dropped: ``[n, ...]``.
    Differentiable: gradients flow back to each rank's own share."""
    if not world.distributed:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the documented autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        parts = all_gather(x)
    return torch.cat(parts, dim=0)[:n]


def gather_array(x: np.ndarray, world: World, n: int) -> np.ndarray:
    """:func:`gather` for numpy arrays without gradients (encoding in shards)."""
    if not world.distributed:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x))
    parts = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(parts, t)
    return torch.cat(parts, dim=0)[:n].numpy()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def launch(argv: list[str], nproc: int) -> int:
    """Run ``vixml <argv>`` in ``nproc`` processes on this machine with torch's own launcher
    (``torch.distributed.run``, i.e. ``torchrun``); returns its exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "vixml_lib.cli", *argv])
    except SystemExit as e:  # torchrun exits with the workers' status
        return int(e.code or 0)
    except ChildFailedError as e:  # a worker failed: its own message is above; one line here
        failures = getattr(e, "failures", {}) or {}
        print(f"vixml {argv[0]}: {len(failures) or 'a'} of {nproc} processes failed", file=sys.stderr)
        return 1
    return 0
