"""Attention sinks: how much attention the first position collects, and what an image there changes.

Decoder LLMs send a large share of every query's attention to the first token of the
sequence (an *attention sink*, with an outsized hidden-state norm). The paper argues that
an image vector placed first disrupts this, which is why ``text_image`` beats
``image_text``. This module measures it on real prompts, assembled by the model's own
:class:`~vixml_lib.prompt.PromptAssembler` (the code path training uses), for several
placements of the image:

==================== =================================================================
``text_image``       ``This product text <title> and its image <img> EOS`` (the paper's)
``image_text``       ``and its image <img> This product text <title> EOS``: the image
                     PREFIX comes first, so position 0 is still a text token
``image_first``      ``<img> This product text <title> EOS``: the image vector itself
                     at position 0
``image_after_prefix`` ``This product text <img> <title> EOS``
``text_only``        ``This product text <title> EOS``
==================== =================================================================

(SmolLM2 and Qwen2.5 prepend no BOS, so position 0 is whatever the template puts first.)

Definitions (used everywhere below; ``a[q, k]`` is the softmax attention of query
position ``q`` on key position ``k`` of one layer and head, rows summing to 1; positions
are those of the right-packed prompt that ``DualEncoder.forward_details`` assembles, so
position 0 is every item's first token):

- **real positions**: ``attention_mask == 1`` (padding never counts, as query or key);
- **counted queries** of a target set ``K`` of key positions: the real positions ``q``
  with ``q >= 1`` and ``q >= min(K)``, i.e. every position that can see the target
  under causal attention, except position 0, whose row is trivially ``[1, 0, ...]``;
- **mass** on ``K`` for one item = the mean over its counted queries of
  ``sum_{k in K} a[q, k]`` (NaN when the item has no counted query, e.g. no image).
  Targets: ``pos0`` (position 0; counted queries = all real positions >= 1),
  ``images`` (every image slot), ``eos`` (the closing token; it is the last position of
  every decoder template, so its only counted query is itself: its self-attention);
- **received share** of key ``k`` = the mean over the real queries ``q >= 1`` of
  ``a[q, k]``: the fraction of all attention paid by positions 1.. that lands on ``k``
  (it sums to 1 over ``k``; for ``k = 0`` it equals the ``pos0`` mass). The **strongest
  receiver** of a layer is the key with the largest head-averaged received share;
- **spread** over the sampled items: standard deviation and the 25 % / 75 % quantiles of
  the per-item values;
- **hidden-state norms**: the L2 norm of ``hidden_states[i]`` at every real position,
  ``i = 0`` the input embeddings, ``i`` the output of layer ``i`` (transformers puts the
  final norm on the last entry).

Usage::

    model = create_analysis_model("smollm2-vixml", vision_dim=384)   # eager attention
    sample = load_items("data/demo-small", model, n_items=32)
    results = measure_placements(model, sample.inputs, model_name="untrained")
    summary_rows(results); plot_sink_by_layer(results)
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .io_utils import read_json
from .prompt import IMAGE_TOKEN_ID, KIND_CODES, PAD_KIND, SEGMENT_KINDS, PromptAssembler, PromptTemplate, get_template

__all__ = [
    "PLACEMENTS",
    "PLACEMENT_NOTES",
    "TARGETS",
    "require_eager",
    "create_analysis_model",
    "placement_template",
    "use_template",
    "counted_queries",
    "attention_mass",
    "received_share",
    "hidden_norms",
    "receiver_categories",
    "SinkMeasurement",
    "measure",
    "measure_placements",
    "ItemSample",
    "load_items",
    "TrainedRun",
    "load_trained_run",
    "read_run_summary",
    "summary_rows",
    "layer_rows",
    "receiver_rows",
    "retrieval_comparison",
    "AttentionMap",
    "attention_map",
    "token_labels",
    "plot_sink_by_layer",
    "plot_head_heatmaps",
    "plot_hidden_norms",
    "plot_attention_map",
    "plotly_attention_map",
]

#: placement label -> arguments of :func:`vixml_lib.prompt.make_template`
PLACEMENTS: dict[str, dict] = {
    "text_image": {"order": "text_image"},
    "image_text": {"order": "image_text"},
    "image_first": {"order": "image_text", "image_prefix": False},
    "image_after_prefix": {"order": "image_after_prefix"},
    "text_only": {"order": "text_only"},
}
PLACEMENT_NOTES = {
    "text_image": "the paper's: text, then image prefix and image",
    "image_text": "image prefix first: position 0 is a TEXT token",
    "image_first": "the image vector itself at position 0",
    "image_after_prefix": "image right after the text prefix",
    "text_only": "no image slot",
}
TARGETS = ("pos0", "images", "eos")
_TEXT_CODES = [KIND_CODES[k] for k in ("bos", "cls", "text_prefix", "title", "image_prefix")]
_IMG, _EOS = KIND_CODES["images"], KIND_CODES["eos"]
_KIND_NAMES = {v: k for k, v in KIND_CODES.items()}


# --------------------------------------------------------------------------- models and templates


def require_eager(model) -> None:
    """Raise ``ValueError`` unless ``model`` computes explicit attention probabilities."""
    hf = model._hf_model() if hasattr(model, "_hf_model") else model
    impl = getattr(getattr(hf, "config", None), "_attn_implementation", None)
    if impl != "eager":
        raise ValueError(
            f"attention maps need attn_implementation='eager', this model uses {impl!r}: build it with "
            "create_model(..., attn_implementation='eager') / load_model(folder, attn_implementation='eager') "
            "or create_analysis_model(...)"
        )


def create_analysis_model(name_or_config: Any, *, vision_dim: int | None = None, device: str | torch.device = "cpu",
                          **overrides):
    """A :class:`~vixml_lib.models.DualEncoder` for attention analysis: eager attention,
    eval mode, on ``device``; the image projection is freshly initialised (untrained)."""
    from .models import create_model

    if vision_dim is not None:
        overrides["vision_dim"] = int(vision_dim)
    overrides["attn_implementation"] = "eager"
    return create_model(name_or_config, **overrides).to(device).eval()


def placement_template(model, spec: str | Mapping | PromptTemplate) -> PromptTemplate:
    """The template of a placement for ``model``: a label of :data:`PLACEMENTS`, a mapping of
    ``make_template`` arguments or a template, with the model's kind and template overrides
    (e.g. its EOS token), as the model itself would build it."""
    if isinstance(spec, str) and spec in PLACEMENTS:
        spec = {**PLACEMENTS[spec], "name": spec}
    if isinstance(spec, Mapping):
        spec = {"kind": getattr(model, "kind", "decoder"), **dict(spec)}
    return get_template(spec, **dict(model.config.template_overrides))


@contextlib.contextmanager
def use_template(model, template: PromptTemplate):
    """Temporarily assemble ``model``'s prompts with ``template`` (weights unchanged)."""
    old = model.template, model.assembler
    model.template, model.assembler = template, PromptAssembler(template, model.tokenizer)
    try:
        yield model
    finally:
        model.template, model.assembler = old


def _same_template(a: PromptTemplate, b: PromptTemplate) -> bool:
    return dataclasses.replace(a, name="") == dataclasses.replace(b, name="")


# --------------------------------------------------------------------------- the measurements (tensors)


def counted_queries(target: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the query positions that count for the key set ``target`` [B, T] bool:
    real positions ``q >= 1`` with ``q >= `` the first target position (none when the row
    has no target)."""
    B, T = real.shape
    pos = torch.arange(T, device=real.device)
    has = target.any(1)
    first = torch.where(has, target.float().argmax(1), torch.full_like(has, T, dtype=torch.long))
    return real.bool() & (pos >= 1) & (pos >= first[:, None])


def attention_mass(attn: torch.Tensor, target: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-item attention mass on a key set (see the module docstring).

    ``attn`` [B, ..., T, T] (any leading dims after the batch, e.g. layers and heads),
    ``target`` [B, T] bool key positions, ``real`` [B, T] bool (attention mask). Returns
    [B, ...] float: the mean over the counted queries of the summed attention on
    ``target``; NaN for rows with no counted query.
    """
    target = target.bool() & real.bool()
    q = counted_queries(target, real)
    extra = attn.dim() - 3
    shape = (attn.shape[0],) + (1,) * extra
    per_query = (attn.float() * target.reshape(shape + (1, -1))).sum(-1)  # [B, ..., T] by query
    n = q.sum(1).float().reshape(shape)
    total = (per_query * q.reshape(shape + (-1,))).sum(-1)
    return torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("nan")))


def received_share(attn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B, ..., T]: the mean over real queries ``q >= 1`` of ``attn[q, k]`` for every key ``k``
    (sums to 1 over ``k``; 0 at padding keys)."""
    T = real.shape[1]
    q = real.bool() & (torch.arange(T, device=real.device) >= 1)
    shape = (attn.shape[0],) + (1,) * (attn.dim() - 3)
    total = (attn.float() * q.reshape(shape + (-1, 1))).sum(-2)
    return total / q.sum(1).float().clamp_min(1).reshape(shape + (1,))


def hidden_norms(hidden_states: Sequence[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """[B, n_states, T]: L2 norm of every hidden state at every position, NaN at padding."""
    h = torch.stack([s.float() for s in hidden_states], 1)  # [B, S, T, D]
    norms = h.norm(dim=-1)
    return torch.where(real.bool()[:, None, :], norms, torch.full_like(norms, float("nan")))


def receiver_categories(positions: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Name the segment of key positions: ``positions`` [N, ...] int, ``kinds`` [N, T] kind
    codes. Categories: ``image at 0``, ``text at 0``, ``first text token`` (the first text
    position when position 0 is not text, e.g. right after a leading image), ``image``
    (an image elsewhere), ``EOS``, ``other text``."""
    positions = np.asarray(positions)
    kinds = np.asarray(kinds)
    flat = positions.reshape(len(positions), -1)
    kind_at = np.take_along_axis(kinds, flat, axis=1).reshape(positions.shape)
    is_text = np.isin(kinds, _TEXT_CODES)
    first_text = np.where(is_text.any(1), is_text.argmax(1), -1).reshape((-1,) + (1,) * (positions.ndim - 1))
    at0 = positions == 0
    return np.select(
        [at0 & (kind_at == _IMG), at0 & np.isin(kind_at, _TEXT_CODES), positions == first_text,
         kind_at == _IMG, kind_at == _EOS],
        ["image at 0", "text at 0", "first text token", "image", "EOS"],
        default="other text",
    )


# --------------------------------------------------------------------------- one placement, many items


@dataclass
class SinkMeasurement:
    """The measurements of one model under one placement, for a sample of ``N`` items.

    ``mass[target]`` [N, layers, heads] (targets :data:`TARGETS`); ``received`` [N, layers,
    T] head-averaged received share; ``norms`` [N, layers + 1, T] hidden-state norms (NaN
    at padding); ``kinds`` / ``token_ids`` [N, T] (``PAD_KIND`` / ``-2`` at padding);
    ``lengths`` [N]. Positions are right-packed (item ``i`` occupies ``0 .. lengths[i]-1``).
    """

    model_name: str
    placement: str
    template: str
    mass: dict[str, np.ndarray]
    received: np.ndarray
    norms: np.ndarray
    kinds: np.ndarray
    token_ids: np.ndarray
    lengths: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.lengths)

    @property
    def n_layers(self) -> int:
        return self.received.shape[1]

    def layer_mass(self, target: str = "pos0") -> np.ndarray:
        """[N, layers]: per item, the mass averaged over heads."""
        return self.mass[target].mean(-1)

    def layer_summary(self, target: str = "pos0") -> dict[str, np.ndarray]:
        """Per layer over the items that have the target: ``mean``, ``std``, ``q25``, ``q75``
        (arrays [layers]) and ``n_items`` (int)."""
        m = self.layer_mass(target)
        ok = ~np.isnan(m).any(1)
        m = m[ok]
        if not len(m):
            nan = np.full(self.n_layers, np.nan)
            return {"mean": nan, "std": nan, "q25": nan, "q75": nan, "n_items": 0}
        q25, q75 = np.quantile(m, [0.25, 0.75], axis=0)
        return {"mean": m.mean(0), "std": m.std(0), "q25": q25, "q75": q75, "n_items": int(ok.sum())}

    def head_mean(self, target: str = "pos0") -> np.ndarray:
        """[layers, heads]: mass averaged over the items that have the target (NaN if none)."""
        m = self.mass[target]
        ok = ~np.isnan(m).any((1, 2))
        return m[ok].mean(0) if ok.any() else np.full(m.shape[1:], np.nan)

    def strongest_receivers(self) -> tuple[np.ndarray, np.ndarray]:
        """``(positions [N, layers], categories [N, layers])`` of the key with the largest
        received share (see :func:`receiver_categories`)."""
        pos = np.nanargmax(np.nan_to_num(self.received, nan=-1.0), axis=-1)
        return pos, receiver_categories(pos, self.kinds)

    def position0_kind(self) -> str:
        """The segment kind at position 0 (``images``, ``text_prefix`` ...) of the items; the
        most frequent one with its count (``images 30/32``) when they differ."""
        codes, counts = np.unique(self.kinds[:, 0], return_counts=True)
        name = _KIND_NAMES.get(int(codes[counts.argmax()]), "pad")
        return name if len(codes) == 1 else f"{name} {counts.max()}/{self.n_items}"

    def norms_by_kind(self) -> dict[str, np.ndarray]:
        """Mean hidden-state norm per layer ([layers + 1]) of ``position 0`` and of the other
        positions by segment kind (``title``, ``images``, ``eos`` ...)."""
        out = {"position 0": np.nanmean(self.norms[:, :, 0], 0)}
        rest = self.kinds.copy()
        rest[:, 0] = PAD_KIND
        for code in np.unique(rest):
            if code == PAD_KIND:
                continue
            sel = rest == code  # [N, T]
            vals = np.where(sel[:, None, :], self.norms, np.nan)
            out[_KIND_NAMES[int(code)]] = np.nanmean(vals, axis=(0, 2))
        return out

    def position0_norm_ratio(self) -> np.ndarray:
        """[layers + 1]: per item, norm at position 0 / mean norm of the other real
        positions, averaged over items (a sink carries an outsized norm: ratio >> 1)."""
        others = np.nanmean(self.norms[:, :, 1:], axis=-1)
        return np.nanmean(self.norms[:, :, 0] / others, axis=0)


def _to_numpy_padded(chunks: list[torch.Tensor], T: int, fill) -> np.ndarray:
    """Concatenate [b, ..., t] tensors along the batch after padding the last dim to ``T``."""
    out = []
    for c in chunks:
        pad = T - c.shape[-1]
        if pad:
            c = torch.cat([c, torch.full(c.shape[:-1] + (pad,), fill, dtype=c.dtype, device=c.device)], -1)
        out.append(c.cpu().numpy())
    return np.concatenate(out, 0)


def _batch_measurements(out) -> dict[str, torch.Tensor]:
    """Every measurement of one forward pass (an ``EncoderOutput`` with attentions and
    hidden states), per item."""
    b = out.batch
    real = b.attention_mask.bool()
    attn = torch.stack([a.float() for a in out.attentions], 1)  # [B, layers, heads, T, T]
    pos = torch.arange(real.shape[1], device=real.device)
    targets = {
        "pos0": (pos == 0).expand_as(real),
        "images": b.kinds == _IMG,
        "eos": pos[None, :] == b.eos_positions[:, None],
    }
    found = {name: attention_mass(attn, k, real) for name, k in targets.items()}
    found["received"] = received_share(attn, real).mean(2)  # head-averaged
    found["norms"] = hidden_norms(out.hidden_states, real)
    found["kinds"] = b.kinds
    found["ids"] = torch.where(real, b.token_ids, torch.full_like(b.token_ids, -2))
    found["lengths"] = b.lengths
    return found


def _length_order(inputs: Mapping[str, Any]) -> np.ndarray:
    """Items ordered by title length + image count, so that batches hold similar lengths
    (less padding to compute)."""
    key = np.asarray(inputs["title_lens"]).astype(np.int64)
    if inputs.get("image_mask") is not None:
        key = key + np.asarray(inputs["image_mask"]).reshape(len(key), -1).sum(1)
    return np.argsort(key, kind="stable")


@torch.inference_mode()
def measure(model, inputs: Mapping[str, Any], template: PromptTemplate | str | Mapping | None = None, *,
            model_name: str = "model", placement: str | None = None, batch_size: int = 16) -> SinkMeasurement:
    """Run ``model`` (eager attention, eval mode) on ``inputs`` (``title_ids``, ``title_lens``,
    optional ``image_vectors`` / ``image_mask``: what ``SplitInputs.batch`` gives) assembled
    with ``template`` (a placement label, ``make_template`` arguments, a template; ``None``:
    the model's own) and collect every measurement of :class:`SinkMeasurement`, in the
    order of ``inputs``. Items go through the model by batches of similar length."""
    require_eager(model)
    tmpl = model.template if template is None else placement_template(model, template)
    label = placement or (template if isinstance(template, str) else tmpl.name)
    order = _length_order(inputs)
    chunks: dict[str, list] = {}
    was_training = model.training
    model.eval()
    try:
        with use_template(model, tmpl):
            for s in range(0, len(order), batch_size):
                rows = torch.from_numpy(order[s:s + batch_size])
                part = {k: (torch.as_tensor(v)[rows] if v is not None else None) for k, v in inputs.items()}
                out = model.forward_details(**part, output_attentions=True, output_hidden_states=True)
                if not out.attentions:
                    raise ValueError("the backbone returned no attention maps; use attn_implementation='eager'")
                for k, v in _batch_measurements(out).items():
                    chunks.setdefault(k, []).append(v.cpu())
    finally:
        model.train(was_training)
    back = np.argsort(order)  # to the order of `inputs`
    T = max(c.shape[-1] for c in chunks["kinds"])
    padded = {k: _to_numpy_padded(chunks[k], T, fill)[back]
              for k, fill in (("received", 0.0), ("norms", float("nan")), ("kinds", PAD_KIND), ("ids", -2))}
    return SinkMeasurement(
        model_name=model_name,
        placement=label,
        template=tmpl.describe(),
        mass={t: torch.cat(chunks[t]).numpy()[back] for t in TARGETS},
        received=padded["received"],
        norms=padded["norms"],
        kinds=padded["kinds"],
        token_ids=padded["ids"],
        lengths=torch.cat(chunks["lengths"]).numpy()[back],
        meta={"segments": list(tmpl.segments)},
    )


def measure_placements(model, inputs: Mapping[str, Any], placements: Mapping[str, Any] | Sequence[str] = tuple(PLACEMENTS),
                       *, model_name: str = "model", include_own: bool = True, batch_size: int = 16) -> list[SinkMeasurement]:
    """:func:`measure` under each placement (labels of :data:`PLACEMENTS` or label -> template
    spec); the measurement under the model's own template gets ``meta["own"] = True``.
    ``include_own``: also measure the model's own template when it is none of them, labelled
    with its :data:`PLACEMENTS` name when it has one, else ``as trained`` (so
    ``placements=()`` measures a trained model under its own template only)."""
    specs = {p: p for p in placements} if not isinstance(placements, Mapping) else dict(placements)
    results = []
    own_found = False
    for label, spec in specs.items():
        tmpl = placement_template(model, spec)
        m = measure(model, inputs, tmpl, model_name=model_name, placement=label, batch_size=batch_size)
        m.meta["own"] = _same_template(tmpl, model.template)
        own_found |= m.meta["own"]
        results.append(m)
    if include_own and not own_found:
        label = next((p for p in PLACEMENTS if _same_template(placement_template(model, p), model.template)), "as trained")
        m = measure(model, inputs, None, model_name=model_name, placement=label, batch_size=batch_size)
        m.meta["own"] = True
        results.append(m)
    return results


# --------------------------------------------------------------------------- data and runs


@dataclass
class ItemSample:
    """A seeded sample of items of one split: their indices, raw titles and model inputs."""

    split: str
    items: np.ndarray
    titles: list[str]
    inputs: dict[str, Any]

    def __len__(self) -> int:
        return len(self.items)


def load_items(data_dir: str | Path, model, *, split: str = "lbl", n_items: int = 32, seed: int = 0,
               vision_encoder: str = "offline-random-siglip", max_len: int = 32, require_image: bool = True,
               encoding: str = "utf-8") -> ItemSample:
    """Sample ``n_items`` items of ``split`` (seeded; only items with at least one image when
    ``require_image`` and the model uses images) and read their title tokens (the token
    cache of the model's backbone, built if missing) and image features (the feature cache
    of ``vision_encoder``, notebook 02)."""
    from .data import formats
    from .data.tokens import load_tokens, tokenize_dataset
    from .training import SplitInputs, open_image_features

    data_dir = Path(data_dir)
    if not (data_dir / f"{split}.raw.txt").exists():
        raise FileNotFoundError(f"{data_dir / f'{split}.raw.txt'}: no prepared split {split!r}; run notebook 01 first")
    backbone = model.config.backbone
    tokenize_dataset(data_dir, backbone, max_len=max_len, splits=(split,), encoding=encoding, tokenizer=model.tokenizer)
    tok = load_tokens(data_dir, backbone, max_len, split)
    feats = open_image_features(data_dir, vision_encoder, split) if model.config.use_images else None
    candidates = np.arange(len(tok))
    if feats is not None and require_image:
        candidates = np.flatnonzero(feats.mask.any(1))
    if not len(candidates):
        raise ValueError(f"{data_dir}: no item of {split!r} has an image")
    rng = np.random.default_rng(seed)
    items = np.sort(rng.choice(candidates, min(n_items, len(candidates)), replace=False))
    inputs = SplitInputs(tok.ids, tok.lengths, feats).batch(items)  # the tensors training reads
    texts = formats.read_texts(data_dir / f"{split}.raw.txt", encoding=encoding)
    return ItemSample(split, items, [texts[i] for i in items], inputs)


@dataclass
class TrainedRun:
    """A finished training run of notebook 03: its folder, summary, config and model."""

    name: str
    folder: Path
    model: Any
    summary: dict | None
    config: Any = None


def read_run_summary(run_dir: str | Path, name: str) -> dict:
    """``<run_dir>/train/<name>/metrics.json`` (``FileNotFoundError`` naming the path)."""
    path = Path(run_dir) / "train" / name / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no finished training run {name!r} (notebook 03 writes it)")
    return read_json(path)


def load_trained_run(run_dir: str | Path, name: str, device: str | torch.device = "cpu") -> TrainedRun:
    """Load ``<run_dir>/train/<name>/checkpoint/model`` with eager attention (its own saved
    model config, ``num_layers`` included), with the run's summary and ``TrainConfig``."""
    from .models import load_model
    from .training import load_train_config

    folder = Path(run_dir) / "train" / name
    model_dir = folder / "checkpoint" / "model"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no training run {name!r} in this run folder (notebook 03 writes train/<name>/)")
    if not (model_dir / "model_config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: the run {name!r} has no saved model (unfinished?)")
    model = load_model(model_dir, map_location=device, attn_implementation="eager").eval()
    summary = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
    config = load_train_config(folder / "config.yaml") if (folder / "config.yaml").is_file() else None
    return TrainedRun(name, folder, model, summary, config)


# --------------------------------------------------------------------------- tables


def _later(values: np.ndarray) -> np.ndarray:
    return values[..., values.shape[-1] // 2:]


def summary_rows(measurements: Sequence[SinkMeasurement]) -> list[dict]:
    """One row per (model, placement): mass on position 0 / images / EOS averaged over all
    layers and over the later half of the layers (mean over items, heads, layers), what
    sits at position 0, the largest norm ratio of position 0 over the layer outputs
    (:meth:`SinkMeasurement.position0_norm_ratio`), and the most frequent strongest
    receiver over (item, layer) pairs."""
    rows = []
    for m in measurements:
        row = {"model": m.model_name, "placement": m.placement, "position 0": m.position0_kind()}
        for t in TARGETS:
            lm = m.layer_mass(t)
            ok = ~np.isnan(lm).any(1)
            row[f"{t} mass"] = float(lm[ok].mean()) if ok.any() else None
            row[f"{t} mass (later layers)"] = float(_later(lm[ok]).mean()) if ok.any() else None
        row["pos0 norm ratio (peak)"] = float(np.nanmax(m.position0_norm_ratio()[1:]))
        _, cats = m.strongest_receivers()
        names, counts = np.unique(cats, return_counts=True)
        row["strongest receiver"] = str(names[counts.argmax()])
        row["n_items"] = m.n_items
        rows.append(row)
    return rows


def layer_rows(measurements: Sequence[SinkMeasurement], targets: Sequence[str] = TARGETS) -> list[dict]:
    """Tidy rows (model, placement, target, layer, mean, std, q25, q75, n_items) of the
    per-layer mass, for tables and exports."""
    rows = []
    for m in measurements:
        for t in targets:
            s = m.layer_summary(t)
            for layer in range(m.n_layers):
                rows.append({"model": m.model_name, "placement": m.placement, "target": t, "layer": layer + 1,
                             **{k: (None if np.isnan(s[k][layer]) else float(s[k][layer])) for k in ("mean", "std", "q25", "q75")},
                             "n_items": s["n_items"]})
    return rows


def receiver_rows(measurements: Sequence[SinkMeasurement], later_only: bool = False) -> list[dict]:
    """Per (model, placement): the percentage of (item, layer) pairs whose strongest
    receiver falls in each category (:func:`receiver_categories`)."""
    cats = ["image at 0", "text at 0", "first text token", "image", "EOS", "other text"]
    rows = []
    for m in measurements:
        _, c = m.strongest_receivers()
        if later_only:
            c = _later(c)
        row = {"model": m.model_name, "placement": m.placement}
        row.update({k: round(100.0 * float(np.mean(c == k)), 1) for k in cats})
        rows.append(row)
    return rows


def retrieval_comparison(run_dir: str | Path, trained_runs: Mapping[str, str],
                         measurements: Sequence[SinkMeasurement] = ()) -> list[dict]:
    """The ``text_image`` vs ``image_text`` retrieval results of the training runs
    (``trained_runs``: placement -> run name) beside the sink measurements of the trained
    model under its own template (``model_name`` = run name, ``meta["own"]``) and of the
    untrained model under the same placement (only when both have as many layers: a run
    trained with ``num_layers`` is compared with an untrained model cut alike). A missing
    run gives a ``missing`` row."""
    rows = []
    for placement, name in trained_runs.items():
        row: dict[str, Any] = {"placement": placement, "run": name}
        try:
            summary = read_run_summary(run_dir, name)
        except FileNotFoundError:
            row["status"] = f"missing ({Path(run_dir) / 'train' / name})"
            rows.append(row)
            continue
        final = summary.get("final", {})
        row.update({"status": "ok", "template": summary.get("template"), "P@1": final.get("P@1"), "P@5": final.get("P@5")})
        trained = next((m for m in measurements if m.model_name == name and m.meta.get("own")), None)
        untrained = next((m for m in measurements if m.model_name == "untrained" and m.placement == placement), None)
        if trained is not None and untrained is not None and trained.n_layers != untrained.n_layers:
            row["note"] = f"untrained model has {untrained.n_layers} layers, the run {trained.n_layers}: not set beside"
            untrained = None
        for tag, m in (("trained", trained), ("untrained", untrained)):
            if m is None:
                continue
            s = summary_rows([m])[0]
            row[f"pos0 mass later ({tag})"] = s["pos0 mass (later layers)"]
            row[f"image mass ({tag})"] = s["images mass"]
        if trained is not None:
            row["position 0"] = trained.position0_kind()
            row["strongest receiver"] = summary_rows([trained])[0]["strongest receiver"]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- one item's attention map


@dataclass
class AttentionMap:
    """The attention of one item (real positions only): ``weights`` [n, n] (query rows,
    key columns; mean over heads unless ``head``), token ``labels``, ``kinds`` codes."""

    weights: np.ndarray
    labels: list[str]
    kinds: np.ndarray
    layer: int
    head: int | None
    placement: str
    model_name: str


def token_labels(tokenizer, token_ids: Sequence[int], kinds: Sequence[int] | None = None) -> list[str]:
    """Readable, unique axis labels ``"<pos> <token>"``: tokens decoded one by one, image
    slots as ``<img1>``, ``<img2>`` ..."""
    out, n_img = [], 0
    for p, tid in enumerate(int(t) for t in token_ids):
        if tid == IMAGE_TOKEN_ID or (kinds is not None and int(kinds[p]) == _IMG):
            n_img += 1
            tok = f"<img{n_img}>"
        else:
            try:
                tok = tokenizer.decode([tid])
            except Exception:  # tokenizers without decode (random test stand-in)
                tok = f"#{tid}"
            tok = tok.replace("\n", "\\n")
            tok = tok if tok.strip() else repr(tok)
        out.append(f"{p} {tok.strip() if tok.strip() else tok}")
    return out


@torch.inference_mode()
def attention_map(model, inputs: Mapping[str, Any], item: int = 0, placement: str | Mapping | PromptTemplate | None = "text_image",
                  layer: int = -1, head: int | None = None, model_name: str = "model") -> AttentionMap:
    """The attention map of item ``item`` of ``inputs`` under ``placement`` at ``layer``
    (1-based; negative counts from the end), one ``head`` or the mean over heads."""
    require_eager(model)
    tmpl = model.template if placement is None else placement_template(model, placement)
    part = {k: (v[item:item + 1] if v is not None else None) for k, v in inputs.items()}
    was_training = model.training
    model.eval()
    try:
        with use_template(model, tmpl):
            out = model.forward_details(**part, output_attentions=True)
    finally:
        model.train(was_training)
    if not out.attentions:
        raise ValueError("the backbone returned no attention maps; use attn_implementation='eager'")
    n_layers = len(out.attentions)
    index = layer - 1 if layer > 0 else n_layers + layer
    if not 0 <= index < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers (1-based, or negative)")
    n = int(out.batch.lengths[0])
    a = out.attentions[index][0].float()  # [H, T, T]
    w = a.mean(0) if head is None else a[head]
    ids = out.batch.token_ids[0, :n].tolist()
    kinds = out.batch.kinds[0, :n].cpu().numpy()
    label = placement if isinstance(placement, str) else tmpl.name
    return AttentionMap(w[:n, :n].cpu().numpy(), token_labels(model.tokenizer, ids, kinds), kinds, index + 1, head,
                        label, model_name)


# --------------------------------------------------------------------------- plots


_TARGET_TITLES = {"pos0": "attention mass on position 0", "images": "attention mass on the image(s)",
                  "eos": "EOS self-attention"}


def _placement_colours(labels: Sequence[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    order = list(PLACEMENTS) + [lab for lab in dict.fromkeys(labels) if lab not in PLACEMENTS]
    return {lab: cmap(i % 10) for i, lab in enumerate(order)}


def _figure_legend(fig, axes) -> None:
    """One legend for the figure, with every label of its panels once, to the right."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def plot_sink_by_layer(measurements: Sequence[SinkMeasurement], target: str = "pos0", band: str = "iqr"):
    """ONE figure: per-layer mass on ``target`` for every placement (mean over items, band
    = 25-75 % quantiles (``iqr``) or mean ± std (``std``)), one panel per model."""
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(m.model_name for m in measurements))
    colours = _placement_colours([m.placement for m in measurements])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], models):
        for m in (m for m in measurements if m.model_name == name):
            s = m.layer_summary(target)
            if s["n_items"] == 0:
                continue
            x = np.arange(1, m.n_layers + 1)
            lo, hi = (s["q25"], s["q75"]) if band == "iqr" else (s["mean"] - s["std"], s["mean"] + s["std"])
            ax.plot(x, s["mean"], color=colours[m.placement], lw=1.6, label=f"{m.placement} (pos 0: {m.position0_kind()})")
            ax.fill_between(x, lo, hi, color=colours[m.placement], alpha=0.15)
        ax.set(title=name, xlabel="layer", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(_TARGET_TITLES.get(target, target))
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{_TARGET_TITLES.get(target, target)} by layer (mean over items; band: "
                 f"{'25-75 % quantiles' if band == 'iqr' else '± std'})")
    fig.tight_layout()
    return fig


def plot_head_heatmaps(measurements: Sequence[SinkMeasurement], target: str = "pos0", model_name: str | None = None):
    """Layer x head heatmaps of the mass on ``target`` (mean over items), one per placement
    of one model (the first one by default)."""
    import matplotlib.pyplot as plt

    model_name = model_name or measurements[0].model_name
    ms = [m for m in measurements if m.model_name == model_name and not np.isnan(m.head_mean(target)).all()]
    if not ms:
        raise ValueError(f"no measurement of {target!r} for model {model_name!r}")
    fig, axes = plt.subplots(1, len(ms), figsize=(2.1 * len(ms) + 1.5, 0.13 * ms[0].n_layers + 2.2), squeeze=False)
    for ax, m in zip(axes[0], ms):
        im = ax.imshow(m.head_mean(target), vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower",
                       extent=(-0.5, m.mass[target].shape[2] - 0.5, 0.5, m.n_layers + 0.5))
        ax.set(title=f"{m.placement}\n(pos 0: {m.position0_kind()})", xlabel="head")
        ax.title.set_fontsize(9)
    axes[0][0].set_ylabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=_TARGET_TITLES.get(target, target))
    fig.suptitle(f"{model_name}: {_TARGET_TITLES.get(target, target)}, per layer and head", y=1.0)
    return fig


def plot_hidden_norms(measurements: Sequence[SinkMeasurement], model_name: str | None = None):
    """Mean hidden-state L2 norm per layer of position 0 and of the other positions by
    segment kind, one panel per placement of one model (log scale)."""
    import matplotlib.pyplot as plt

    model_name = model_name or measurements[0].model_name
    ms = [m for m in measurements if m.model_name == model_name]
    cmap = plt.get_cmap("tab10")
    colour = {name: cmap(i) for i, name in enumerate(["position 0", *SEGMENT_KINDS])}
    fig, axes = plt.subplots(1, len(ms), figsize=(3.2 * len(ms), 3.3), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], ms):
        for name, values in m.norms_by_kind().items():
            ax.plot(np.arange(len(values)), values, color=colour[name], lw=2.4 if name == "position 0" else 1.2,
                    label="position 0" if name == "position 0" else f"other {name}")
        ax.set(title=f"{m.placement}\n(pos 0: {m.position0_kind()})", xlabel="hidden state (0 = embeddings)", yscale="log")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("L2 norm")
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{model_name}: hidden-state norms by segment (mean over items)")
    fig.tight_layout()
    return fig


def plot_attention_map(amap: AttentionMap, ax=None):
    """A static (matplotlib) annotated attention map: query rows, key columns, tokens on the axes."""
    import matplotlib.pyplot as plt

    n = len(amap.labels)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.28 * n + 3, 0.28 * n + 2))
    im = ax.imshow(amap.weights, cmap="magma", vmin=0, vmax=max(1e-6, float(amap.weights.max())))
    ax.set_xticks(range(n), amap.labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), amap.labels, fontsize=7)
    ax.set(xlabel="key", ylabel="query")
    who = "mean over heads" if amap.head is None else f"head {amap.head}"
    ax.set_title(f"{amap.model_name} · {amap.placement} · layer {amap.layer} ({who})", fontsize=9)
    ax.figure.colorbar(im, ax=ax, shrink=0.7, label="attention")
    return ax


def plotly_attention_map(amap: AttentionMap):
    """An interactive (plotly: zoom, hover) version of :func:`plot_attention_map`."""
    import plotly.graph_objects as go

    hover = "query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>"
    fig = go.Figure(go.Heatmap(z=amap.weights, x=amap.labels, y=amap.labels, colorscale="Magma",
                               zmin=0, hovertemplate=hover, colorbar={"title": "attention"}))
    who = "mean over heads" if amap.head is None else f"head {amap.head}"
    fig.update_layout(title=f"{amap.model_name} · {amap.placement} · layer {amap.layer} ({who})",
                      xaxis={"title": "key", "tickangle": -90, "type": "category"},
                      yaxis={"title": "query", "autorange": "reversed", "type": "category"},
                      width=720, height=680)
    return fig
