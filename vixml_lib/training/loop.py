"""Training a ViXML dual encoder: the loop, top to bottom.

One run = one :class:`~vixml_lib.training.config.TrainConfig`, saved as ``config.yaml`` in
the run folder beside the checkpoint, the per-epoch metrics (``metrics.json``) and the final
embeddings (file names: :class:`vixml_lib.runs.TrainFolder`).

Reproducibility: every random draw of epoch ``e`` (batch order, positive sampling,
dropout) comes from generators seeded with ``(seed, e)``; a checkpoint is written atomically
after every epoch and, with ``checkpoint_every_steps``, inside epochs too (with the
generators' state, so the epoch goes on with the same batches and draws). A killed run
restarts from its last checkpoint and, on CPU with the same seed, ends with the same metrics
as an uninterrupted run. Several processes (:mod:`~vixml_lib.training.distributed`) train one
run with global in-batch negatives; only rank 0 writes.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import save_config
from ..data import formats
from ..io_utils import write_json
from ..sampling import balanced_clusters
from . import prototypes
from .batches import batch_targets, epoch_batches, loss_positives, sample_positive_labels
from .checkpoints import load_checkpoint, save_checkpoint
from .config import TrainConfig, config_key
from .distributed import barrier, gather, gather_array, shard
from .evaluation import encode, evaluate_model
from .prototypes import init_prime, load_prime, save_prime
from .setup import Setup, setup

log = logging.getLogger(__name__)


def encoder_of(s: Setup, dtype: str = "float32", path: Path | None = None):
    """``encode_split(split, rows)``: a split's rows (all when None) encoded in eval mode, as
    ``dtype``, into a memory-mapped file at ``path`` when given (one process only); with
    several ranks each encodes its share and the shares are gathered."""
    def encode_split(split: str, rows: np.ndarray | None) -> np.ndarray:
        inputs = s.data.splits[split]
        rows = np.arange(len(inputs)) if rows is None else np.asarray(rows)
        mine = encode(s.model, inputs, s.config.encode_batch_size, rows=shard(rows, s.world), desc=f"encode {split}",
                      dtype=np.dtype(dtype), path=None if s.world.distributed else path)
        return gather_array(mine, s.world, len(rows))
    return encode_split


def label_transform(s: Setup):
    """What evaluation searches instead of the label encoder's embeddings (PRIME), or None."""
    return prototypes.label_transform(s.prime) if s.prime is not None else None


def evaluate(s: Setup, final: bool) -> tuple[dict, dict]:
    """The run's evaluation (all evaluated test queries when ``final``, else the seeded subset of
    ``eval_subset_queries`` of them, if set)."""
    positions = None
    n = len(s.data.items_tst)
    if not final and s.config.eval_subset_queries and s.config.eval_subset_queries < n:
        rng = np.random.default_rng([s.config.seed, 7])
        positions = np.sort(rng.choice(n, s.config.eval_subset_queries, replace=False))
    metrics, outputs = evaluate_model(s.model, s.data, s.config, s.device, label_transform(s), encoder_of(s),
                                      positions)
    if positions is not None:
        metrics["eval_queries"] = len(positions)
    return metrics, outputs


def start_or_resume(s: Setup) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """``(state, clusters)``: from the run's checkpoint when there is one of this configuration,
    else a fresh state (with the epoch-0, zero-shot evaluation when ``eval_at_start``). The
    config is saved only once the checkpoint, if any, has been found to match it."""
    config, ckpt = s.config, s.run.checkpoint
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "config": config_key(config),
                             "world_size": s.world.size}
    if not config.resume and s.world.main and (ckpt.exists() or s.run.is_finished()):
        clear_run_folder(s)  # resume=False: the earlier run is replaced, never mixed with this one
    barrier(s.world)
    if config.resume and ckpt.exists():
        saved = ckpt.read_state()
        if saved.get("config") != state["config"]:
            raise ValueError(f"{ckpt.path}: checkpoint of a different configuration; "
                             "use another out_dir or resume=False")
        if saved.get("world_size", 1) != s.world.size:
            raise ValueError(f"{ckpt.path}: written by {saved.get('world_size', 1)} processes; "
                             f"resume it with the same number, not {s.world.size}")
        state, clusters = load_checkpoint(ckpt, s.model, s.optimizer, s.scheduler)
        s.model.to(s.device)
        if s.prime is not None:
            load_prime(s.prime, ckpt)
        if state.get("epoch_step") and ckpt.rng.exists():
            torch.set_rng_state(torch.load(ckpt.rng, weights_only=True))
        log.info("resumed %s at epoch %d, step %d", s.run.path, state["epoch"], state["step"])
        return state, clusters
    if s.world.main:
        save_config(config, s.run.config)
    if config.eval_at_start:  # the backbone before fine-tuning: label encoder embeddings (no prototypes yet)
        t0 = time.perf_counter()
        metrics, _ = evaluate(s, final=False)
        state["history"].append({"epoch": 0, "step": 0, "loss": None, "train_seconds": 0.0,
                                 "eval_seconds": round(time.perf_counter() - t0, 2), **metrics})
        log.info("epoch 0 (no fine-tuning): P@1 %.2f", metrics["P@1"])
    if s.prime is not None:
        init_prime(s.prime, encoder_of(s), s.data.Y_trn, config.seed)
    return state, None


def clear_run_folder(s: Setup) -> None:
    """Move the earlier run's folder aside, start an empty one, then delete the old one."""
    old = s.run.path.with_name(s.run.path.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    s.run.path.rename(old)
    s.run.path.mkdir(parents=True)
    shutil.rmtree(old, ignore_errors=True)
    log.info("resume=False: replaced the earlier run in %s", s.run.path)


def checkpoint(s: Setup, state: dict, clusters) -> None:
    """Rank 0 writes the checkpoint (model, optimizer, schedule, loop state, clusters, PRIME
    head, and inside an epoch torch's RNG state); every rank waits for it."""
    if s.world.main:
        def extra(tmp):
            if s.prime is not None:
                save_prime(s.prime, tmp)
            if state.get("epoch_step"):
                torch.save(torch.get_rng_state(), tmp.rng)
        save_checkpoint(s.run.checkpoint, s.model, s.optimizer, s.scheduler, state, clusters, extra=extra)
    barrier(s.world)


def refresh_clusters(s: Setup, epoch: int) -> list[np.ndarray]:
    """NGAME: cluster the training queries' current embeddings into balanced clusters (on the
    training device; every rank computes the same clusters from the same gathered embeddings)."""
    c = s.config
    on_disk = s.run.cluster_embeddings if c.cluster_encode_to_disk else None
    emb = encoder_of(s, c.cluster_encode_dtype, on_disk)("trn", s.train_rows)  # read in blocks by the clustering
    groups = balanced_clusters(emb, s.schedule.cluster_size_at(epoch), seed=c.seed + epoch, device=s.device)
    return [s.train_rows[g] for g in groups]


def train_step(s: Setup, rows: np.ndarray, rng: np.random.Generator) -> float:
    """One optimiser step on the global batch of training queries ``rows``; returns the loss."""
    b = len(rows)
    labels = sample_positive_labels(s.data.Y_trn, rows, rng, s.sample_weights)  # the same on every rank
    target = batch_targets(s.data.Y_trn, rows, labels).to(s.device)  # [B, B]
    mine = shard(np.arange(b), s.world)  # this rank's share of the batch
    label_ids = torch.from_numpy(labels[mine]).to(s.device) if s.prime is not None else None
    q, u, z = s.step_module(s.data.splits["trn"].batch(rows[mine]), s.data.splits["lbl"].batch(labels[mine]),
                            label_ids)
    q, u = gather(q, s.world, b), gather(u, s.world, b)  # [B, D] each: the global batch
    if s.prime is not None:
        loss, _ = prototypes.batch_loss(s.prime, q, u, gather(z, s.world, b), rows, labels, target, s.config.loss,
                                        s.config.fixed_positive, rng)
    else:
        loss = s.loss_fn(q, u, target, pos=loss_positives(target, s.config.fixed_positive, rng))
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if s.config.grad_clip:
        params = [p for group in s.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, s.config.grad_clip)
    s.optimizer.step()
    s.scheduler.step()
    return float(loss.detach())


def train_epoch(s: Setup, epoch: int, state: dict, clusters, progress: bool) -> dict[str, Any]:
    """Train one epoch (or the rest of one, after a checkpoint inside it); return its history entry."""
    config = s.config
    rng = np.random.default_rng([config.seed, epoch])
    batches = epoch_batches(config.batch_size, config.max_steps_per_epoch, s.schedule, epoch, s.train_rows,
                            clusters, rng)
    done = state.pop("epoch_step", 0)
    losses: list[float] = state.pop("epoch_losses", [])
    seconds = state.pop("epoch_seconds", 0.0)
    if done:  # inside the epoch: the generator as it was after `done` steps
        rng.bit_generator.state = state.pop("rng")
    else:
        torch.manual_seed(config.seed * 100_003 + epoch)
    t0, seen = time.perf_counter(), 0
    bar = tqdm(batches[done:], desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", disable=not progress,
               leave=False, initial=done, total=len(batches))
    for i, rows in enumerate(bar, start=done + 1):
        losses.append(train_step(s, rows, rng))
        state["step"] += 1
        seen += len(rows)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", q_per_s=f"{seen / (time.perf_counter() - t0):.0f}")
        every = config.checkpoint_every_steps
        if every and state["step"] % every == 0 and i < len(batches):
            checkpoint(s, {**state, "epoch_step": i, "epoch_losses": losses, "rng": rng.bit_generator.state,
                           "epoch_seconds": seconds + time.perf_counter() - t0}, clusters)
    bar.close()
    return {"epoch": epoch + 1, "step": state["step"], "loss": float(np.mean(losses)) if losses else None,
            "train_seconds": round(seconds + time.perf_counter() - t0, 2)}


def train(config: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) one run; return its summary (also in the run's ``metrics.json``)."""
    s = setup(config)
    state, clusters = start_or_resume(s)
    s.model.train()
    final_outputs = None  # embeddings and predictions of the final evaluation
    for epoch in range(state["epoch"], config.epochs):
        if s.schedule.needs_refresh(epoch) and not state.get("epoch_step"):
            clusters = refresh_clusters(s, epoch)
        entry = train_epoch(s, epoch, state, clusters, progress)
        last = epoch + 1 == config.epochs
        if s.prime is not None:
            prototypes.end_of_epoch(s.prime, encoder_of(s), s.data.Y_trn, last=last)
        if (epoch + 1) % config.eval_every == 0 or last:
            t1 = time.perf_counter()
            metrics, outputs = evaluate(s, final=last)
            final_outputs = outputs if last else None
            entry.update(eval_seconds=round(time.perf_counter() - t1, 2), **metrics)
            log.info("epoch %d: loss %.4f P@1 %.2f", epoch + 1, entry["loss"] or 0, metrics["P@1"])
        state["history"].append(entry)
        state["epoch"] = epoch + 1
        checkpoint(s, state, clusters)
    return finish(s, state, final_outputs)


def finish(s: Setup, state: dict, final_outputs: dict | None) -> dict:
    """Write the embeddings, predictions and item rows (when asked) and the summary (rank 0)."""
    final = next((h for h in reversed(state["history"]) if "P@1" in h), {})
    summary = {"run": s.run.name, "model": s.config.model, "use_images": s.model.config.use_images,
               "template": s.model.template.name, "method": s.config.method, "fusion": s.model.config.fusion,
               "history": state["history"], "final": {k: v for k, v in final.items() if "@" in k}}
    if s.config.save_embeddings:
        # the last epoch's evaluation already encoded everything; a run resumed after its
        # final epoch has not, so it encodes once here
        emb = final_outputs if final_outputs is not None else evaluate(s, final=True)[1]
        if s.world.main:
            for split in ("tst", "lbl"):
                s.run.save_array(s.run.embeddings(split), emb[split])
            formats.write_predictions(s.run.predictions, emb["pred"])
            for split, items in (("tst", s.data.items_tst), ("lbl", s.data.items_lbl)):  # dataset rows
                s.run.save_array(s.run.items(split), items.astype(np.int64))
            if s.prime is not None:
                s.run.save_array(s.run.prime_clusters, s.prime.head.cluster_of.cpu().numpy())
    if s.world.main:
        s.run.cluster_embeddings.unlink(missing_ok=True)  # scratch of cluster_encode_to_disk
        write_json(s.run.metrics, summary)
    barrier(s.world)
    return summary
