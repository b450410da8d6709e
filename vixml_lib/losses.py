"""Training losses: the NGAME triplet loss with online hard-negative mining.

The loss is the one ViXML trains with (inherited from NGAME and PRIME): for each query,
one sampled positive label and the ``k`` hardest in-batch negative labels, a hinge on the
score difference, summed over the negatives and averaged over the queries. See
:class:`TripletLoss` for the exact formula and every choice made.

References
----------
* K. Dahiya et al., "NGAME: Negative Mining-aware Mini-batching for Extreme
  Classification", WSDM 2023 (triplet loss with online hard-negative mining, dynamic
  margin, clustered mini-batches).
* K. Dahiya et al., "Prototypical Extreme Multi-label Classification with a Dynamic
  Margin Loss" (PRIME), NAACL 2025 (settings ViXML reuses: k = 10 negatives, dynamic
  margin clamped to [0.1, 0.3], softmax weighting of violators with temperature 0.1).
* ViXML (Ortego et al., AAAI 2026), section "Loss" of ``/work/shared/METHOD.md``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["LossConfig", "TripletLoss", "mine_hard_negatives", "triplet_loss_from_scores", "hinge_fn",
           "prototype_regulariser", "prime_loss"]


@dataclass
class LossConfig:
    """The settings of the triplet loss, one object from the run config to the formula
    (see :class:`TripletLoss` for what each does). Defaults are the method's (METHOD.md)."""

    k: int = 10  # hard negatives per query
    margin: float = 0.3  # fixed margin (when not dynamic)
    dynamic_margin: bool = True  # per-pair margin clamp(|s_p - s_n|, min_margin, max_margin)
    min_margin: float = 0.1
    max_margin: float = 0.3
    aggressive: bool = False  # softmax(s_n / tau) weighting of the violators
    tau: float = 0.1
    detach_weights: bool = False
    # gradient of the hinge where its argument is exactly 0 (every pair inside the dynamic
    # margin's [min, max] band): "half" as the authors' torch.max(0, x), or "zero" (relu)
    tie_gradient: str = "half"
    # PRIME (method: prime): L = w_xu T(x,u) + w_xz T(x,z) + w_ux T(u,x) + w_reg R
    w_xu: float = 1.0
    w_xz: float = 1.0
    w_ux: float = 1.0
    w_reg: float = 0.1
    reg_margin: float = 0.1

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.min_margin > self.max_margin:
            raise ValueError(f"min_margin ({self.min_margin}) > max_margin ({self.max_margin})")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.tie_gradient not in ("half", "zero"):
            raise ValueError(f"tie_gradient must be 'half' or 'zero', got {self.tie_gradient!r}")

    @classmethod
    def of(cls, config: LossConfig | None = None, **settings) -> LossConfig:
        """``config`` (or the defaults) with ``settings`` replacing fields."""
        return dataclasses.replace(config or cls(), **settings)


def _positive_mask(target: Tensor) -> Tensor:
    if target.dim() != 2:
        raise ValueError(f"target must be a [B, N] matrix, got shape {tuple(target.shape)}")
    return target if target.dtype == torch.bool else target > 0


@torch.no_grad()
def mine_hard_negatives(scores: Tensor, target: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` highest-scoring non-positive columns of each row of ``scores``.

    Args:
        scores: ``[B, N]`` scores.
        target: ``[B, N]`` bool / float positive mask; positive entries are never picked.
        k: number of negatives wanted; ``min(k, N)`` columns are returned.

    Returns:
        ``(indices [B, min(k, N)] int64, valid [B, min(k, N)] bool)``, sorted by
        decreasing score. ``valid`` is False in the trailing slots of rows that have
        fewer than ``k`` negatives (those slots point at positives and must be ignored).
    """
    pos_mask = _positive_mask(target).to(scores.device)
    k_eff = min(int(k), scores.shape[1])
    cand = scores.detach().float().masked_fill(pos_mask, float("-inf"))
    vals, idx = torch.topk(cand, k_eff, dim=1, largest=True, sorted=True)
    return idx, torch.isfinite(vals)


def triplet_loss_from_scores(
    scores: Tensor,
    target: Tensor,
    pos: Tensor,
    config: LossConfig | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    **settings,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Triplet loss on a precomputed score matrix; see :class:`TripletLoss`.

    ``scores`` is ``[B, N]`` (query ``i`` vs in-batch label ``j``), ``target`` the
    ``[B, N]`` positive mask, ``pos`` the ``[B]`` sampled positive per query. Also usable
    for the reverse (label -> query) direction by passing transposed matrices. ``config``
    (a :class:`LossConfig`, defaults when None) with ``settings`` replacing its fields
    (e.g. ``k=2, dynamic_margin=False``).

    Returns the reduced loss and a dict of detached statistics (0-d tensors, so logging
    does not force a GPU sync until it calls ``float()``):
    ``active_frac`` (fraction of mined triplets with a positive hinge), ``violators``
    (mean number of active triplets per query), ``s_p`` (mean positive score),
    ``s_n`` (mean score of the mined negatives), ``n_neg`` (mean number of mined
    negatives per query; below ``k`` when a row has fewer in-batch negatives).
    """
    cfg = LossConfig.of(config, **settings)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    scores = scores.float()
    pos = _checked_positives(scores, target, pos)
    b = scores.shape[0]
    # Never use a positive (diagonal or off-diagonal, and the sampled one in any case) as a negative.
    pos_mask = _positive_mask(target).to(scores.device).clone()
    pos_mask[torch.arange(b, device=scores.device), pos] = True

    s_p = scores.gather(1, pos.view(-1, 1))  # [B, 1]
    neg_idx, valid = mine_hard_negatives(scores, pos_mask, cfg.k)
    s_n = scores.gather(1, neg_idx)  # [B, k_eff], carries gradients
    hinge = _hinges(s_p, s_n, valid, cfg)  # [B, k_eff], 0 where not valid
    active = (hinge > 0) & valid
    if cfg.aggressive:
        hinge = hinge * _violator_weights(s_n, active, cfg)

    per_query = hinge.sum(dim=1)  # sum over negatives
    if reduction == "mean":
        loss = per_query.mean() if b else per_query.sum()
    else:
        loss = per_query.sum() if reduction == "sum" else per_query
    return loss, _statistics(s_p, s_n, valid, active)


def _checked_positives(scores: Tensor, target: Tensor, pos: Tensor) -> Tensor:
    """``pos`` as a ``[B]`` long tensor on the scores' device, after the shape checks."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    if target.shape != scores.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match scores {tuple(scores.shape)}")
    b, n = scores.shape
    pos = torch.as_tensor(pos, device=scores.device).long().view(-1)
    if pos.numel() != b:
        raise ValueError(f"pos must have one entry per query ({b}), got {pos.numel()}")
    if b and (int(pos.min()) < 0 or int(pos.max()) >= n):
        raise ValueError(f"pos entries must lie in [0, {n}), got range [{int(pos.min())}, {int(pos.max())}]")
    return pos


def _hinges(s_p: Tensor, s_n: Tensor, valid: Tensor, cfg: LossConfig) -> Tensor:
    """``[s_n - s_p + m]_+`` per mined pair ``[B, k]``, zero where the slot is not a negative.
    The dynamic margin is computed from the current scores but treated as a constant
    (detached), as in the NGAME / PRIME implementation."""
    if cfg.dynamic_margin:
        m = torch.clamp((s_p - s_n).abs().detach(), min=cfg.min_margin, max=cfg.max_margin)
    else:
        m = cfg.margin
    hinge = hinge_fn(s_n - s_p + m, cfg.tie_gradient)
    return torch.where(valid, hinge, torch.zeros_like(hinge))


def hinge_fn(x: Tensor, tie_gradient: str = "half") -> Tensor:
    """``[x]_+``. Where ``x == 0`` exactly its gradient is 1/2 with ``"half"`` (``torch.maximum``'s
    rule, the authors' ``torch.max(torch.zeros_like(x), x)``) and 0 with ``"zero"`` (relu)."""
    return torch.maximum(torch.zeros_like(x), x) if tie_gradient == "half" else torch.relu(x)


def _violator_weights(s_n: Tensor, active: Tensor, cfg: LossConfig) -> Tensor:
    """softmax(s_n / tau) over each query's violating negatives only ``[B, k]``; non-violators
    get weight 0. Rows without a violator get a dummy uniform row (their hinge is all zero)
    so that no NaN appears in the forward or backward pass."""
    logits = (s_n.detach() if cfg.detach_weights else s_n) / cfg.tau
    logits = logits.masked_fill(~active, float("-inf"))
    any_active = active.any(dim=1, keepdim=True)
    logits = torch.where(any_active, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=1)


@torch.no_grad()
def _statistics(s_p: Tensor, s_n: Tensor, valid: Tensor, active: Tensor) -> dict[str, Tensor]:
    b = s_p.shape[0]
    zero = s_p.new_zeros(())
    n_valid = valid.sum().clamp_min(1).float()
    return {
        "active_frac": active.sum().float() / n_valid,
        "violators": active.sum(dim=1).float().mean() if b else zero,
        "s_p": s_p.detach().mean() if b else zero,
        "s_n": torch.where(valid, s_n.detach(), torch.zeros_like(s_n)).sum() / n_valid,
        "n_neg": valid.sum(dim=1).float().mean() if b else zero,
    }


class TripletLoss(nn.Module):
    r"""NGAME triplet loss with online hard-negative mining over the in-batch labels.

    Given query embeddings ``Q`` ``[B, D]``, the batch's label embeddings ``L`` ``[N, D]``
    (both expected L2-normalised, so scores are cosine similarities; set
    ``normalize=True`` to normalise here), a target matrix ``T`` ``[B, N]`` marking
    **every** in-batch label relevant to each query (not only the diagonal), and one
    sampled positive ``pos_i`` per query, it computes

    .. math::

        S = Q L^\top,\quad s_p^{(i)} = S_{i,\,pos_i},\quad
        \mathcal{N}_i = \operatorname{top-}k\{\, S_{ij} : T_{ij} = 0,\ j \ne pos_i \,\}

        \ell_i = \sum_{j \in \mathcal{N}_i} w_{ij}\,[\, S_{ij} - s_p^{(i)} + m_{ij} \,]_+,
        \qquad \mathcal{L} = \frac{1}{B} \sum_i \ell_i

    * **Hard negatives**: the ``k`` (default 10) highest-scoring in-batch labels that are
      not positive for the query. Positives anywhere in the row are masked out. When a
      row has fewer than ``k`` negatives, only those exist are used (no padding terms).
      The selection is done without gradient; the selected scores carry gradients.
    * **Margin** ``m_ij``: the constant ``margin`` (default 0.3), or with
      ``dynamic_margin=True`` the per-pair ``clamp(|s_p - s_n|, min_margin, max_margin)``
      (0.1, 0.3), **detached** (treated as a constant, as NGAME / PRIME do). Its effect:
      a satisfied pair is penalised only while ``s_p - s_n < min_margin`` (for
      ``min_margin <= s_p - s_n <= max_margin`` the hinge is exactly 0), and a violating
      pair (``s_n > s_p``) gets a hinge of ``d + clamp(d, min, max)`` with
      ``d = s_n - s_p``, i.e. about twice its violation. Gradients equal those of a
      fixed-margin hinge on the active pairs.
    * **Weights** ``w_ij``: 1, or with ``aggressive=True`` ``softmax(S_ij / tau)``
      (``tau`` = 0.1) taken over the query's *violators* only (negatives with a positive
      hinge); other negatives get weight 0, so each query's weights sum to 1 over its
      violators. As in the PRIME implementation the weights are differentiable; set
      ``detach_weights=True`` to use them as constants.
    * **Ties**: with the dynamic margin, a pair inside the band has a hinge argument of
      exactly 0 (``d + |d| = 0``). ``tie_gradient="half"`` (default, the authors'
      ``torch.max(0, x)``) passes half a gradient there; ``"zero"`` (relu) passes none, so
      pairs in the band do not train.
    * **Reduction**: sum over the negatives, mean over the queries (``"mean"``);
      ``"sum"`` sums over queries too and ``"none"`` returns the ``[B]`` per-query terms.
    * **Positive**: ``pos``, one sampled positive per query, is drawn by the caller
      (training draws it uniformly or by inverse propensity over the query's labels,
      :func:`vixml_lib.training.batches.sample_positive_labels`).

    Scores are computed in float32 even under bf16 / fp16 autocast.

    Args:
        config: a :class:`LossConfig` (``k``, ``margin``, ``dynamic_margin``, ``min_margin``,
            ``max_margin``, ``aggressive``, ``tau``, ``detach_weights``); ``settings``
            replace its fields.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        normalize: L2-normalise ``Q`` and ``L`` before scoring.
        return_stats: make ``forward`` return ``(loss, stats)`` by default.

    Example::

        loss_fn = TripletLoss(LossConfig(k=10, aggressive=True))
        loss, stats = loss_fn(q, l, target, pos, return_stats=True)
    """

    def __init__(
        self,
        config: LossConfig | None = None,
        reduction: Literal["mean", "sum", "none"] = "mean",
        normalize: bool = False,
        return_stats: bool = False,
        **settings,
    ):
        super().__init__()
        self.config = LossConfig.of(config, **settings)
        self.reduction = reduction
        self.normalize = bool(normalize)
        self.return_stats = bool(return_stats)

    def extra_repr(self) -> str:
        c = self.config
        margin = f"dynamic_margin=[{c.min_margin}, {c.max_margin}]" if c.dynamic_margin else f"margin={c.margin}"
        return f"k={c.k}, {margin}, aggressive={c.aggressive}, tau={c.tau}, reduction={self.reduction!r}"

    def scores(self, query_emb: Tensor, label_emb: Tensor) -> Tensor:
        """``[B, N]`` float32 score matrix ``Q L^T`` (normalising first if configured)."""
        q = query_emb.float()
        l = label_emb.float()
        if self.normalize:
            q = nn.functional.normalize(q, dim=-1)
            l = nn.functional.normalize(l, dim=-1)
        with torch.autocast(device_type=q.device.type, enabled=False):
            return q @ l.T

    def forward(self, query_emb: Tensor, label_emb: Tensor, target: Tensor, pos: Tensor,
                return_stats: bool | None = None):
        """Compute the loss (see the class docstring).

        Args:
            query_emb: ``[B, D]`` query embeddings.
            label_emb: ``[N, D]`` in-batch label embeddings.
            target: ``[B, N]`` bool / 0-1 float: every in-batch positive of each query.
            pos: ``[B]`` index of the sampled positive per query.
            return_stats: override the module's ``return_stats``.

        Returns:
            the loss, or ``(loss, stats)`` (see :func:`triplet_loss_from_scores`).
        """
        if query_emb.dim() != 2 or label_emb.dim() != 2:
            raise ValueError("query_emb must be [B, D] and label_emb [N, D]")
        if query_emb.shape[1] != label_emb.shape[1]:
            raise ValueError(f"embedding sizes differ: queries {query_emb.shape[1]}, labels {label_emb.shape[1]}")
        s = self.scores(query_emb, label_emb)
        loss, stats = triplet_loss_from_scores(s, target.to(query_emb.device), pos, self.config, self.reduction)
        want = self.return_stats if return_stats is None else return_stats
        return (loss, stats) if want else loss


# --------------------------------------------------------------------------- PRIME


def prototype_regulariser(s_u: Tensor, s_z: Tensor, target: Tensor, pos: Tensor, k: int = 10, margin: float = 0.1,
                          tie_gradient: str = "half") -> Tensor:
    r"""PRIME's regulariser between prototype scores and label-encoder scores.

    ``s_u`` ``[B, N]`` = queries . label embeddings ``u``; ``s_z`` ``[B, N]`` = queries .
    prototypes ``z``; ``target`` ``[B, N]`` the in-batch positives; ``pos`` ``[B]`` one sampled
    positive per query. With :math:`\mathcal{N}_i` the ``k`` non-positive columns of row ``i``
    with the highest prototype score :math:`s_z`:

    .. math::

        R_p = \operatorname{mean}_{+}\ [\, s_u(i, p_i) - s_z(i, p_i) + m \,]_+ ,\qquad
        R_n = \operatorname{mean}_{+}\ [\, s_z(i, j) - s_u(i, j) + m \,]_+ \ (j \in \mathcal{N}_i),
        \qquad R = (R_p + R_n) / 2

    so the prototype scores a query's positive above the label encoder does, and its hard
    negatives below; :math:`\operatorname{mean}_{+}` divides the sum by the number of terms that
    are > 0 (0 when none), as the authors' ``RegLoss`` (DiegoOrtego/vixml ``loss.py``, after
    PRIME, Dahiya et al., NAACL 2025). ``m`` = ``margin`` (0.1).
    """
    s_u, s_z = s_u.float(), s_z.float()
    pos = _checked_positives(s_z, target, pos)
    pos_mask = _positive_mask(target).to(s_z.device).clone()
    pos_mask[torch.arange(s_z.shape[0], device=s_z.device), pos] = True
    col = pos.view(-1, 1)
    loss_p = hinge_fn(s_u.gather(1, col) - s_z.gather(1, col) + margin, tie_gradient)  # [B, 1]
    neg_idx, valid = mine_hard_negatives(s_z, pos_mask, k)
    loss_n = hinge_fn(s_z.gather(1, neg_idx) - s_u.gather(1, neg_idx) + margin, tie_gradient)  # [B, k]
    loss_n = torch.where(valid, loss_n, torch.zeros_like(loss_n))

    def mean_active(x: Tensor) -> Tensor:
        return x.sum() / (x > 0).sum().clamp_min(1)

    return (mean_active(loss_p) + mean_active(loss_n)) / 2


def prime_loss(q: Tensor, u: Tensor, z: Tensor, target: Tensor, positives: dict[str, Tensor],
               config: LossConfig | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The PRIME objective ViXML trains its main results with:

    .. math::

        \mathcal{L} = w_{xu}\, T(x, u) + w_{xz}\, T(x, z) + w_{ux}\, T(u, x) + w_{reg}\, R

    ``q`` ``[B, D]`` query embeddings, ``u`` ``[N, D]`` the in-batch labels' encoder embeddings,
    ``z`` ``[N, D]`` their prototypes (:class:`vixml_lib.prime.PrimeHead`), ``target`` ``[B, N]``.
    ``T`` is the triplet loss of :func:`triplet_loss_from_scores` (``T(u, x)`` runs label ->
    query over the in-batch query matrix, i.e. on the transposed scores and target) and ``R``
    :func:`prototype_regulariser`. ``positives``: the sampled positive of each row for each
    term, keys ``xu``, ``xz`` (``[B]``), ``ux`` (``[N]``, a query per label) and ``reg`` (``[B]``).
    Weights and the regulariser's margin come from ``config`` (``w_xu``, ``w_xz``, ``w_ux``,
    ``w_reg`` = 1, 1, 1, 0.1; ``reg_margin`` = 0.1, the authors' ``--mi_reg_weight 0.1``).
    Returns the loss and its detached parts.
    """
    cfg = config or LossConfig()
    with torch.autocast(device_type=q.device.type, enabled=False):
        s_u = q.float() @ u.float().T  # [B, N]
        s_z = q.float() @ z.float().T  # [B, N]
    t_xu, _ = triplet_loss_from_scores(s_u, target, positives["xu"], cfg)
    t_xz, _ = triplet_loss_from_scores(s_z, target, positives["xz"], cfg)
    t_ux, _ = triplet_loss_from_scores(s_u.T, target.T, positives["ux"], cfg)
    reg = prototype_regulariser(s_u, s_z, target, positives["reg"], cfg.k, cfg.reg_margin, cfg.tie_gradient)
    loss = cfg.w_xu * t_xu + cfg.w_xz * t_xz + cfg.w_ux * t_ux + cfg.w_reg * reg
    parts = {"T(x,u)": t_xu.detach(), "T(x,z)": t_xz.detach(), "T(u,x)": t_ux.detach(), "R": reg.detach()}
    return loss, parts
