"""Encoding a split with a model, and scoring a model: encode labels and test queries,
retrieve the top k (filter pairs excluded), and compute the XMC metrics."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.inputs import SplitInputs, TrainingData, query_subset
from ..io_utils import atomic_path
from ..metrics import evaluate
from ..models import DualEncoder
from ..retrieval import exact_topk, faiss_topk, topk_to_csr

if TYPE_CHECKING:
    from .config import TrainConfig


@torch.inference_mode()
def encode(model: DualEncoder, inputs: SplitInputs, batch_size: int = 256, rows: np.ndarray | None = None,
           desc: str = "encode", *, dtype=np.float32, path: str | Path | None = None) -> np.ndarray:
    """L2-normalised embeddings ``[n, D]`` of the given rows of a split, in eval mode.

    Rows are encoded in order of title length, so a batch pads to similar lengths; each
    batch is written straight to its rows of ONE preallocated array (in the order of
    ``rows``), so the peak is the output plus one batch. ``dtype``: ``float32`` or
    ``float16`` (half the memory; the model's float32 output is rounded once).
    ``path``: write into a memory-mapped ``.npy`` file instead of RAM (for splits whose
    embeddings do not fit, e.g. 2.2M queries x 2048 dims = 18 GB in float32): it is written
    under a temporary name beside ``path`` and renamed when complete (an interrupted
    encode leaves nothing), and returned opened read-only (``np.load(path, mmap_mode="r")``).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"encode: dtype must be float32 or float16, got {dtype}")
    rows = np.arange(len(inputs)) if rows is None else np.asarray(rows)
    order = np.argsort(inputs.lengths(rows), kind="stable")
    if path is None:
        return _encode_rows(model, inputs, rows, order, batch_size, desc, dtype,
                            lambda dim: np.empty((len(rows), dim), dtype))
    with atomic_path(path) as tmp:
        emb = _encode_rows(model, inputs, rows, order, batch_size, desc, dtype,
                           lambda dim: np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(rows), dim)))
        if isinstance(emb, np.memmap):
            emb.flush()
        else:  # no rows: nothing was mapped
            np.save(tmp, emb)
        del emb
    return np.load(path, mmap_mode="r" if len(rows) else None, allow_pickle=False)


def _encode_rows(model: DualEncoder, inputs: SplitInputs, rows: np.ndarray, order: np.ndarray, batch_size: int,
                 desc: str, dtype: np.dtype, allocate) -> np.ndarray:
    """Encode ``rows`` in the batch order ``order`` into ``allocate(D)`` (called once, at the
    first batch, when the embedding width is known); ``[0, 0]`` when there are no rows."""
    was_training = model.training
    model.eval()
    emb = None
    try:
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False, unit="batch"):
            pos = order[start:start + batch_size]
            vec = model(**inputs.batch(rows[pos])).float().cpu().numpy()  # [b, D]
            if emb is None:
                emb = allocate(vec.shape[1])
            emb[pos] = vec
    finally:
        model.train(was_training)
    return np.zeros((0, 0), dtype) if emb is None else emb


def retrieve(queries: np.ndarray, labels: np.ndarray, k: int, method: str, exclude: np.ndarray | None, device=None):
    """Top-``k`` labels per query ``(scores [n, k], indices [n, k])`` by exact or FAISS search."""
    if method == "exact":
        return exact_topk(queries, labels, k, exclude=exclude, device=device)
    if method in ("faiss-flat", "faiss-ivf"):
        return faiss_topk(queries, labels, k, index=method.split("-")[1], exclude=exclude)
    raise ValueError(f"retrieval must be exact, faiss-flat or faiss-ivf, not {method!r}")


def evaluate_model(model: DualEncoder, data: TrainingData, config: TrainConfig, device=None,
                   label_transform=None, encode_split=None, query_positions: np.ndarray | None = None
                   ) -> tuple[dict, dict]:
    """Encode labels and test queries, retrieve top-k, filter, and score (percent).

    ``label_transform``: maps the label encoder's embeddings ``[L, D]`` to the vectors that are
    searched (PRIME: prototypes for labels seen in training). ``encode_split(split, rows)``:
    how a split is encoded (several processes encode in shards); default :func:`encode`.
    ``query_positions``: evaluate these of the evaluated test queries only (a seeded subset
    for periodic evaluations). Returns ``(metrics, {"tst": query embeddings, "lbl": the label
    embeddings searched, "pred": csr scores})``."""
    if encode_split is None:
        def encode_split(split, rows):
            return encode(model, data.splits[split], config.encode_batch_size, rows=rows, desc=f"encode {split}")
    lbl = encode_split("lbl", None)
    if label_transform is not None:
        lbl = label_transform(lbl)
    tst = encode_split("tst", query_positions)
    Y, filter_pairs = data.Y_tst, data.filter_tst
    if query_positions is not None:
        Y, filter_pairs = query_subset(data, query_positions)
    k = min(max([config.k, *config.recall_k]), data.n_labels)
    # filtered pairs are excluded before top-k, so they never take a slot of the k
    scores, indices = retrieve(tst, lbl, k, config.retrieval, filter_pairs, device=device)
    pred = topk_to_csr(scores, indices, data.n_labels)
    metrics = evaluate(pred, Y, data.inv_psp, k=config.k, recall_k=tuple(config.recall_k), filter_pairs=filter_pairs)
    return metrics, {"tst": tst, "lbl": lbl, "pred": pred}
