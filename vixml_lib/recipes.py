"""The authors' training recipes, as named presets of :class:`~vixml_lib.training.TrainConfig`.

Every value names its source: the ViXML release (github.com/DiegoOrtego/vixml, commit a03c33c),
its run scripts ``run_vixml_miniLML3_amzTitles131K.sh`` (the encoder, "enc.sh" below) and
``run_vixml_qwen25_3B_amzTitles131K.sh`` (the decoder, "dec.sh"), its ``main.py`` defaults,
``utils.py`` and ``loss.py``. A config names a recipe with ``recipe: paper-decoder``; its own
values then override the recipe's (nested settings -- ``loss``, ``prime``,
``model_overrides`` -- key by key), see :func:`apply_recipe`.

How the authors' cluster schedule maps onto ours: their script re-clusters at the END of
0-based epoch ``e`` when ``e >= cl_start`` and ``(e - cl_start) % cl_update == 0``, doubling
the cluster size first when ``e`` is in ``curr_steps``; the new batches are used from epoch
``e + 1``. Our :class:`~vixml_lib.sampling.ClusterSchedule` counts the epoch that USES the
clusters, so ``cluster_warmup_epochs = cl_start + 1`` and ``cluster_double_at = curr_steps + 1``.
Their clustering reads the embeddings the epoch's forward passes left in a bank (train mode);
ours re-encodes the training queries in eval mode when it re-clusters.

What the recipes cannot reproduce here, and says so: the title tokenisation (theirs: 32
tokens with the tokenizer's special tokens, padded in the middle of decoder prompts; ours: 32
title tokens, prompts packed) and the hub models themselves (offline runs use the offline
backbones of :mod:`vixml_lib.pretrained`).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["RECIPES", "apply_recipe", "merge_settings"]

_COMMON: dict[str, Any] = {
    "method": "prime",                      # --prime (both scripts)
    "batch_size": 2048,                     # -b 2048
    "warmup_steps": 100,                    # --num_warmup_steps 100
    "max_len": 32,                          # --max-length 32
    "lr_image_proj": 5e-4,                  # -multimodal_xmc_img_proj_lr 5e-4
    "weight_decay": 0.01,                   # utils.prepare_optimizer_and_scheduler: 0.01, 0 for bias / LayerNorm
    "adam_eps": 1e-6,                       # utils.prepare_optimizer_and_scheduler: AdamW(eps=1e-06)
    "positive_sampling": "propensity",      # --pos_freq_sampling (inverse propensity, A / B below)
    "fixed_positive": False,                # --no-fixed_pos: the loss's positive drawn over all in-batch positives
    "A": 0.6,                               # -A 0.6
    "B": 2.6,                               # -B 2.6
    "k": 5,                                 # --ks 1,2,3,4,5
    "recall_k": [100],                      # --k 100
    "cluster_size": 16,                     # --cl-size 16
    "loss": {
        "k": 10,                            # --num-negatives 10
        "dynamic_margin": True,             # --loss-type ohnm with margin_min < margin_max (loss.py)
        "min_margin": 0.1,                  # --margin_min 0.1
        "max_margin": 0.3,                  # --margin_max 0.3
        "aggressive": True,                 # --agressive-loss
        "tau": 0.1,                         # loss.ATripletMarginLossOHNMDM tau=0.1
        "detach_weights": False,            # loss.py: softmax of sim_n keeps its gradient
        "tie_gradient": "half",             # loss.py: torch.max(zeros, x), half a gradient at x = 0
        "w_xu": 1.0, "w_xz": 1.0, "w_ux": 1.0,  # utils.train: loss_u + loss_uv + loss_i
        "w_reg": 0.1,                       # --mi_reg_weight 0.1
        "reg_margin": 0.1,                  # loss.RegLoss margin=0.1
    },
    "prime": {
        "free_vectors": 65536,              # --n-clusters 65536
        "heads": 8,                         # --combiner_heads 8
        "feedforward": 1024,                # --combiner_dim 1024
        "dropout": 0.1,                     # utils.SiameseNetwork: SingleLayerTransformerEncoder(dropout=0.1)
        "lr": 5e-4,                         # -lr_combiner 5e-4 (combiner and free vectors)
        "centroids": "stale",               # --use_exact_centroids --use_exact_centroids_stale
        "ema": 0.95,                        # --ema_w_centroids 0.95 (unused with exact centroids)
    },
}

RECIPES: dict[str, dict[str, Any]] = {
    # ViXML + PRIME, MiniLM-L3 encoder on LF-AmazonTitles-131K (enc.sh)
    "paper-encoder": {
        **_COMMON,
        "model": "minilm-l3-vixml",         # --encoder-name sentence-transformers/paraphrase-MiniLM-L3-v2
        "epochs": 150,                      # -e 150
        "lr": 5e-4,                         # -lr 5e-4
        "grad_clip": None,                  # utils.train clips only with --decoder_model (enc.sh: --no-decoder_model)
        "cluster_warmup_epochs": 11,        # --cl-start 10 (clusters used from 0-based epoch 11)
        "cluster_refresh_every": 5,         # --cl-update 5
        "cluster_double_at": [21, 41, 61, 81, 101, 121],  # --curr-steps 20,40,60,80,100,120
        "eval_every": 25,                   # --eval-interval 25
        "seed": 0,                          # main.py default --seed 0 (enc.sh sets none)
        "prime": {**_COMMON["prime"], "free_vector_init": "xavier"},  # enc.sh: no --init_fv_w_embeddings
    },
    # ViXML + PRIME, Qwen2.5-3B-Instruct decoder with LoRA on LF-AmazonTitles-131K (dec.sh)
    "paper-decoder": {
        **_COMMON,
        "model": "qwen2.5-3b-vixml",        # --encoder-name Qwen/Qwen2.5-3B-Instruct, LoRA r=alpha=256 (preset)
        "model_overrides": {
            "dtype": "bfloat16",            # --bfloat16
            "gradient_checkpointing": True,  # --use_gradient_checkpointing
            "pooling": "mean",              # --decoder_model_pooling mean
            # utils.HFTransformerInputLayer keeps "and its image" for items without images
            "template_overrides": {"image_prefix_needs_images": False, "eos_token": "<|endoftext|>"},
        },
        "template": "text_image",           # --multimodal_concat_order text_image
        "epochs": 30,                       # -e 30
        "lr": 5e-5,                         # -lr 5e-5 (LoRA adapters)
        "grad_clip": 1.0,                   # utils.train: clip_grad_norm_(max_norm=1.0) with --decoder_model
        "cluster_warmup_epochs": 5,         # --cl-start 4 (clusters used from 0-based epoch 5)
        "cluster_refresh_every": 2,         # --cl-update 2
        "cluster_double_at": [9, 13, 17, 21, 25],  # --curr-steps 8,12,16,20,24
        "eval_every": 5,                    # --eval-interval 5
        "seed": 42,                         # --seed 42
        "prime": {**_COMMON["prime"], "free_vector_init": "cluster_mean"},  # --init_fv_w_embeddings
    },
}

_NESTED = ("loss", "prime", "model_overrides")


def merge_settings(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig settings ``overrides`` on top of ``base``; the nested settings (``loss``,
    ``prime``, ``model_overrides``) are merged key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if key in _NESTED and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_recipe(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` on top of the recipe they name (``values["recipe"]``); unchanged without one."""
    name = values.get("recipe")
    if name is None:
        return dict(values)
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(sorted(RECIPES))}")
    return merge_settings(RECIPES[name], values)
