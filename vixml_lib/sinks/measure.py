"""Running the model: the sink measurements of one model under one placement
(:func:`measure`) or several (:func:`measure_placements`), for a sample of items, kept in a
:class:`SinkMeasurement` with its per-layer / per-head summaries.

The measures themselves (pure tensor functions and their definitions) are in
:mod:`vixml_lib.sinks.metrics` (attention mass, receivers, norms) and
:mod:`vixml_lib.sinks.scores` (the literature's: sink scores, massive activations, key and
value norms); the placements and the eager-attention model in
:mod:`vixml_lib.sinks.placements`; the key / value hooks in :mod:`vixml_lib.sinks.capture`.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..prompt import PAD_KIND, PromptTemplate
from .capture import capture_projections, kv_heads, projection_modules
from .metrics import (
    KIND_NAMES,
    TARGETS,
    attention_mass,
    hidden_norms,
    received_share,
    receiver_categories,
    target_positions,
)
from .placements import (
    PLACEMENTS,
    evaluating,
    forward_with_attentions,
    placement_template,
    require_eager,
    same_template,
)
from .scores import (
    SINK_TARGETS,
    massive_activations,
    norms_by_kind,
    position0_ratio,
    projection_norms,
    sink_positions,
    sink_scores,
    sink_share,
)

log = logging.getLogger(__name__)


@dataclass
class SinkMeasurement:
    """The measurements of one model under one placement, for a sample of ``N`` items.

    ``mass[target]`` [N, layers, heads] (targets :data:`~vixml_lib.sinks.metrics.TARGETS`);
    ``received`` [N, layers, T] head-averaged received share; ``norms`` [N, layers + 1, T]
    hidden-state norms (NaN at padding); ``kinds`` / ``token_ids`` [N, T] (``PAD_KIND`` /
    ``-2`` at padding); ``lengths`` [N]. Positions are right-packed (item ``i`` occupies
    ``0 .. lengths[i]-1``).

    The literature's measures (:mod:`vixml_lib.sinks.scores`): ``scores[target]`` [N,
    layers, heads] sink scores of the keys :data:`~vixml_lib.sinks.scores.SINK_TARGETS`
    (NaN where an item has none), computed over ``meta["queries"]`` (``later`` for
    decoders, ``all`` for encoders); ``massive`` ``top`` / ``position`` / ``channel`` [N,
    layers + 1, 3] and ``median`` [N, layers + 1] of the hidden states; ``key_norms`` /
    ``value_norms`` [N, layers, T] (NaN at padding; ``None`` for a backbone whose
    projections :func:`~vixml_lib.sinks.capture.projection_modules` does not know).
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
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    massive: dict[str, np.ndarray] = field(default_factory=dict)
    key_norms: np.ndarray | None = None
    value_norms: np.ndarray | None = None

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
        received share (see :func:`~vixml_lib.sinks.metrics.receiver_categories`)."""
        pos = np.nanargmax(np.nan_to_num(self.received, nan=-1.0), axis=-1)
        return pos, receiver_categories(pos, self.kinds)

    def position0_kind(self) -> str:
        """The segment kind at position 0 (``images``, ``text_prefix`` ...) of the items; the
        most frequent one with its count (``images 30/32``) when they differ."""
        codes, counts = np.unique(self.kinds[:, 0], return_counts=True)
        name = KIND_NAMES.get(int(codes[counts.argmax()]), "pad")
        return name if len(codes) == 1 else f"{name} {counts.max()}/{self.n_items}"

    def norms_by_kind(self, which: str = "hidden") -> dict[str, np.ndarray]:
        """Mean norm per layer of ``position 0`` and of the other positions by segment kind
        (``title``, ``images``, ``eos`` ...): ``which`` = ``hidden`` ([layers + 1]),
        ``key`` or ``value`` ([layers])."""
        return norms_by_kind(self._norms(which), self.kinds)

    def position0_norm_ratio(self, which: str = "hidden") -> np.ndarray:
        """Per layer: per item, norm at position 0 / mean norm of the other real positions,
        averaged over items (a sink carries an outsized hidden norm: ratio >> 1)."""
        return position0_ratio(self._norms(which))

    def _norms(self, which: str) -> np.ndarray:
        norms = {"hidden": self.norms, "key": self.key_norms, "value": self.value_norms}.get(which, "?")
        if isinstance(norms, str):
            raise ValueError(f"which must be hidden, key or value, not {which!r}")
        if norms is None:
            raise ValueError(f"{self.model_name}: no {which} norms were captured for this backbone")
        return norms

    def sink_share(self, target: str = "pos0", epsilon: float = 0.3) -> float:
        """Gu et al.'s share of (layer, head) pairs whose mean sink score on ``target``
        (:data:`~vixml_lib.sinks.scores.SINK_TARGETS`) exceeds ``epsilon``."""
        return sink_share(self.scores[target], epsilon)


# --------------------------------------------------------------------------- one forward pass


def _batch_measurements(out, queries: str, projections=None, n_kv: int = 1) -> dict[str, torch.Tensor]:
    """Every measurement of one forward pass (an ``EncoderOutput`` with attentions and
    hidden states, and the key / value ``projections`` captured), per item."""
    b = out.batch
    real = b.attention_mask.bool()
    attn = torch.stack([a.float() for a in out.attentions], 1)  # [B, layers, heads, T, T]
    targets = target_positions(b.kinds, b.eos_positions)
    found = {name: attention_mass(attn, k, real) for name, k in targets.items()}
    found["received"] = received_share(attn, real).mean(2)  # head-averaged
    found["norms"] = hidden_norms(out.hidden_states, real)
    for name, key in sink_positions(b.kinds).items():
        found[f"score:{name}"] = sink_scores(attn, key, real, queries)
    hidden = torch.stack([h.float() for h in out.hidden_states], 1)  # [B, layers + 1, T, D]
    for name, v in massive_activations(hidden, real).items():
        found[f"massive:{name}"] = v
    if projections is not None:
        found["key_norms"] = torch.stack([projection_norms(k, n_kv, real) for k in projections.keys], 1)
        found["value_norms"] = torch.stack([projection_norms(v, n_kv, real) for v in projections.values], 1)
    found["kinds"] = b.kinds
    found["ids"] = torch.where(real, b.token_ids, torch.full_like(b.token_ids, -2))
    found["lengths"] = b.lengths
    return found


def _to_numpy_padded(chunks: list[torch.Tensor], T: int, fill) -> np.ndarray:
    """Concatenate [b, ..., t] tensors along the batch after padding the last dim to ``T``."""
    out = []
    for c in chunks:
        pad = T - c.shape[-1]
        if pad:
            c = torch.cat([c, torch.full(c.shape[:-1] + (pad,), fill, dtype=c.dtype, device=c.device)], -1)
        out.append(c.cpu().numpy())
    return np.concatenate(out, 0)


# --------------------------------------------------------------------------- many items


def _length_order(inputs: Mapping[str, Any]) -> np.ndarray:
    """Items ordered by title length + image count, so that batches hold similar lengths
    (less padding to compute)."""
    key = np.asarray(inputs["title_lens"]).astype(np.int64)
    if inputs.get("image_mask") is not None:
        key = key + np.asarray(inputs["image_mask"]).reshape(len(key), -1).sum(1)
    return np.argsort(key, kind="stable")


def _knows_projections(model) -> bool:
    try:
        projection_modules(model)
    except ValueError as e:
        log.warning("%s: key / value norms not measured", e)
        return False
    return True


def _measure_batches(model, inputs: Mapping[str, Any], order: np.ndarray, batch_size: int) -> dict[str, list]:
    """The per-item measurements of the items ``order`` by batches: name -> list of CPU tensors."""
    chunks: dict[str, list] = {}
    queries = "all" if getattr(model, "kind", "decoder") == "encoder" else "later"
    capture = capture_projections(model) if _knows_projections(model) else contextlib.nullcontext()
    with capture as projections:
        for s in range(0, len(order), batch_size):
            rows = torch.from_numpy(order[s:s + batch_size])
            part = {k: (torch.as_tensor(v)[rows] if v is not None else None) for k, v in inputs.items()}
            out = forward_with_attentions(model, part, hidden_states=True)
            for k, v in _batch_measurements(out, queries, projections, kv_heads(model)).items():
                chunks.setdefault(k, []).append(v.cpu())
    chunks["queries"] = queries
    return chunks


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
    with evaluating(model, tmpl):
        chunks = _measure_batches(model, inputs, order, batch_size)
    back = np.argsort(order)  # to the order of `inputs`
    T = max(c.shape[-1] for c in chunks["kinds"])
    padded = {k: _to_numpy_padded(chunks[k], T, fill)[back]
              for k, fill in (("received", 0.0), ("norms", float("nan")), ("kinds", PAD_KIND), ("ids", -2),
                              ("key_norms", float("nan")), ("value_norms", float("nan"))) if k in chunks}
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
        meta={"segments": list(tmpl.segments), "queries": chunks["queries"]},
        scores={t: torch.cat(chunks[f"score:{t}"]).numpy()[back] for t in SINK_TARGETS},
        massive={k: torch.cat(chunks[f"massive:{k}"]).numpy()[back] for k in ("top", "position", "channel", "median")},
        key_norms=padded.get("key_norms"),
        value_norms=padded.get("value_norms"),
    )


def measure_placements(model, inputs: Mapping[str, Any],
                       placements: Mapping[str, Any] | Sequence[str] = tuple(PLACEMENTS), *,
                       model_name: str = "model", include_own: bool = True,
                       batch_size: int = 16) -> list[SinkMeasurement]:
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
        m.meta["own"] = same_template(tmpl, model.template)
        own_found |= m.meta["own"]
        results.append(m)
    if include_own and not own_found:
        label = next((p for p in PLACEMENTS if same_template(placement_template(model, p), model.template)),
                     "as trained")
        m = measure(model, inputs, None, model_name=model_name, placement=label, batch_size=batch_size)
        m.meta["own"] = True
        results.append(m)
    return results
