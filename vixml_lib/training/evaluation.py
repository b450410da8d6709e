"""Encoding a split with a model, and scoring a model: encode labels and test queries,
retrieve the top k (filter pairs excluded), and compute the XMC metrics."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.inputs import SplitInputs, TrainingData
from ..metrics import evaluate
from ..models import DualEncoder
from ..retrieval import exact_topk, faiss_topk, topk_to_csr

if TYPE_CHECKING:
    from .config import TrainConfig


@torch.inference_mode()
def encode(model: DualEncoder, inputs: SplitInputs, batch_size: int = 256, rows: np.ndarray | None = None,
           desc: str = "encode") -> np.ndarray:
    """L2-normalised embeddings ``[n, D]`` (float32) of the given rows of a split, in eval mode.

    Rows are encoded in order of title length, so a batch pads to similar lengths (the
    embeddings come back in the order of ``rows``)."""
    was_training = model.training
    model.eval()
    rows = np.arange(len(inputs)) if rows is None else np.asarray(rows)
    order = np.argsort(inputs.lengths(rows), kind="stable")
    out = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False, unit="batch"):
        out.append(model(**inputs.batch(rows[order[start:start + batch_size]])).float().cpu().numpy())
    model.train(was_training)
    if not out:
        return np.zeros((0, 0), np.float32)
    emb = np.empty((len(rows), out[0].shape[1]), np.float32)
    emb[order] = np.concatenate(out)
    return emb


def retrieve(queries: np.ndarray, labels: np.ndarray, k: int, method: str, exclude: np.ndarray | None, device=None):
    """Top-``k`` labels per query ``(scores [n, k], indices [n, k])`` by exact or FAISS search."""
    if method == "exact":
        return exact_topk(queries, labels, k, exclude=exclude, device=device)
    if method in ("faiss-flat", "faiss-ivf"):
        return faiss_topk(queries, labels, k, index=method.split("-")[1], exclude=exclude)
    raise ValueError(f"retrieval must be exact, faiss-flat or faiss-ivf, not {method!r}")


def evaluate_model(model: DualEncoder, data: TrainingData, config: TrainConfig, device=None) -> tuple[dict, dict]:
    """Encode labels and test queries, retrieve top-k, filter, and score (percent).

    Returns ``(metrics, {"tst": query embeddings, "lbl": label embeddings, "pred": csr scores})``."""
    lbl = encode(model, data.splits["lbl"], config.encode_batch_size, desc="encode labels")
    tst = encode(model, data.splits["tst"], config.encode_batch_size, desc="encode test")
    k = min(max([config.k, *config.recall_k]), data.n_labels)
    # filtered pairs are excluded before top-k, so they never take a slot of the k
    scores, indices = retrieve(tst, lbl, k, config.retrieval, data.filter_tst, device=device)
    pred = topk_to_csr(scores, indices, data.n_labels)
    metrics = evaluate(pred, data.Y_tst, data.inv_psp, k=config.k, recall_k=tuple(config.recall_k),
                       filter_pairs=data.filter_tst)
    return metrics, {"tst": tst, "lbl": lbl, "pred": pred}
