"""Checkpoints: everything a killed run needs to resume exactly, written whole into a
temporary folder and swapped in (never half-written). Its files: :class:`vixml_lib.runs.CheckpointFolder`."""
from __future__ import annotations

import shutil

import numpy as np
import torch

from ..io_utils import write_json
from ..models import DualEncoder
from ..runs import CheckpointFolder


def save_checkpoint(ckpt: CheckpointFolder, model: DualEncoder, optimizer, scheduler, state: dict,
                    clusters: list[np.ndarray] | None, extra=None) -> None:
    """Model (trainable weights), optimizer, scheduler, loop state and the cluster assignment;
    ``extra(tmp)`` writes more into the temporary checkpoint folder (PRIME's head) before the swap."""
    tmp = ckpt.at(ckpt.tmp)
    shutil.rmtree(tmp.path, ignore_errors=True)
    tmp.path.mkdir(parents=True)
    model.save(tmp.model)
    torch.save(optimizer.state_dict(), tmp.optimizer)
    torch.save(scheduler.state_dict(), tmp.scheduler)
    if clusters is not None:
        np.savez(tmp.clusters, offsets=np.cumsum([0] + [len(c) for c in clusters]),
                 rows=np.concatenate(clusters) if clusters else np.zeros(0, np.int64))
    if extra is not None:
        extra(tmp)
    write_json(tmp.state, state)
    shutil.rmtree(ckpt.old, ignore_errors=True)
    if ckpt.path.exists():
        ckpt.path.rename(ckpt.old)
    tmp.path.rename(ckpt.path)
    shutil.rmtree(ckpt.old, ignore_errors=True)


def load_checkpoint(ckpt: CheckpointFolder, model: DualEncoder, optimizer, scheduler):
    """Restore ``model``, ``optimizer`` and ``scheduler`` in place; return ``(state, clusters)``."""
    state = ckpt.read_state()
    trained = DualEncoder.load(ckpt.model, map_location="cpu")
    model.load_state_dict(trained.state_dict())
    optimizer.load_state_dict(torch.load(ckpt.optimizer, weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt.scheduler, weights_only=True))
    clusters = None
    if ckpt.clusters.exists():
        z = np.load(ckpt.clusters, allow_pickle=False)
        clusters = np.split(z["rows"], z["offsets"][1:-1])
    return state, clusters
