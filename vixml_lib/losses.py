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

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["TripletLoss", "mine_hard_negatives", "sample_positives", "triplet_loss_from_scores"]


def _positive_mask(target: Tensor) -> Tensor:
    if target.dim() != 2:
        raise ValueError(f"target must be a [B, N] matrix, got shape {tuple(target.shape)}")
    return target if target.dtype == torch.bool else target > 0


def sample_positives(
    target: Tensor,
    propensity: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one positive label (a column of ``target``) per query (a row).

    Args:
        target: ``[B, N]`` bool or float matrix; entry ``(i, j)`` is true / > 0 when
            in-batch label ``j`` is relevant to query ``i``. Every row needs at least one
            positive (in an XMC batch each query brings its own labels, so it always has).
        propensity: optional label propensities ``p_j`` in (0, 1], shape ``[N]`` (one per
            in-batch label) or ``[B, N]``. When given, positive ``j`` of query ``i`` is
            drawn with probability proportional to ``1 / p_j`` (inverse propensity, so
            tail labels are picked more often); when ``None`` the draw is uniform over the
            query's positives. Pass *propensities*, not inverse propensities (e.g. the
            ``p_l`` of Jain et al. 2016, whose inverse the metrics module calls
            ``inv_psp``).
        generator: optional ``torch.Generator`` for reproducible draws. It may live on a
            different device than ``target``; the draw is then done on its device.

    Returns:
        ``[B]`` int64 tensor on ``target``'s device.
    """
    pos_mask = _positive_mask(target)
    weights = pos_mask.to(torch.float32)
    if propensity is not None:
        prop = torch.as_tensor(propensity, device=weights.device, dtype=torch.float32)
        if prop.dim() == 1:
            prop = prop.unsqueeze(0)
        if prop.shape[-1] != weights.shape[1] or prop.shape[0] not in (1, weights.shape[0]):
            raise ValueError(
                f"propensity must have shape [N] or [B, N] with N={weights.shape[1]}, "
                f"got {tuple(prop.shape)}"
            )
        if bool(((prop <= 0) & pos_mask).any()):
            raise ValueError("propensities of positive labels must be > 0")
        inv = torch.where(prop > 0, 1.0 / prop.clamp_min(1e-12), torch.zeros_like(prop))
        weights = weights * inv
    row_has = weights.sum(dim=1) > 0
    if not bool(row_has.all()):
        bad = torch.nonzero(~row_has).flatten()[:5].tolist()
        raise ValueError(
            f"every query needs at least one positive in-batch label with a positive "
            f"weight; rows {bad} have none"
        )
    device = target.device
    if generator is not None and generator.device != weights.device:
        weights = weights.to(generator.device)
    picked = torch.multinomial(weights, 1, replacement=False, generator=generator).squeeze(1)
    return picked.to(device)


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
    *,
    k: int = 10,
    margin: float = 0.3,
    dynamic_margin: bool = False,
    min_margin: float = 0.1,
    max_margin: float = 0.3,
    aggressive: bool = False,
    tau: float = 0.1,
    detach_weights: bool = False,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Triplet loss on a precomputed score matrix; see :class:`TripletLoss`.

    ``scores`` is ``[B, N]`` (query ``i`` vs in-batch label ``j``), ``target`` the
    ``[B, N]`` positive mask, ``pos`` the ``[B]`` sampled positive per query. Also usable
    for the reverse (label -> query) direction by passing transposed matrices.

    Returns the reduced loss and a dict of detached statistics (0-d tensors, so logging
    does not force a GPU sync until it calls ``float()``):
    ``active_frac`` (fraction of mined triplets with a positive hinge), ``violators``
    (mean number of active triplets per query), ``s_p`` (mean positive score),
    ``s_n`` (mean score of the mined negatives), ``n_neg`` (mean number of mined
    negatives per query; below ``k`` when a row has fewer in-batch negatives).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    if target.shape != scores.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match scores {tuple(scores.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    b, n = scores.shape
    scores = scores.float()
    pos = torch.as_tensor(pos, device=scores.device).long().view(-1)
    if pos.numel() != b:
        raise ValueError(f"pos must have one entry per query ({b}), got {pos.numel()}")
    if b and (int(pos.min()) < 0 or int(pos.max()) >= n):
        raise ValueError(f"pos entries must lie in [0, {n}), got range "
                         f"[{int(pos.min())}, {int(pos.max())}]")
    rows = torch.arange(b, device=scores.device)
    # Never use a positive (diagonal or off-diagonal, and the sampled one in any case)
    # as a negative.
    pos_mask = _positive_mask(target).to(scores.device).clone()
    pos_mask[rows, pos] = True

    s_p = scores.gather(1, pos.view(-1, 1))  # [B, 1]

    neg_idx, valid = mine_hard_negatives(scores, pos_mask, k)
    s_n = scores.gather(1, neg_idx)  # [B, k_eff], carries gradients

    if dynamic_margin:
        # Per-pair margin, computed from the current scores but treated as a constant
        # (detached), as in the NGAME / PRIME implementation.
        m = torch.clamp((s_p - s_n).abs().detach(), min=min_margin, max=max_margin)
    else:
        m = margin
    hinge = torch.relu(s_n - s_p + m)
    hinge = torch.where(valid, hinge, torch.zeros_like(hinge))
    active = (hinge > 0) & valid

    if aggressive:
        # softmax(s_n / tau) over the query's violating negatives only; non-violators
        # get weight 0. Rows without a violator get a dummy uniform row (their hinge is
        # all zero) so that no NaN appears in the forward or backward pass.
        logits = (s_n.detach() if detach_weights else s_n) / tau
        logits = logits.masked_fill(~active, float("-inf"))
        any_active = active.any(dim=1, keepdim=True)
        logits = torch.where(any_active, logits, torch.zeros_like(logits))
        weights = torch.softmax(logits, dim=1)
        hinge = hinge * weights

    per_query = hinge.sum(dim=1)  # sum over negatives
    if reduction == "mean":
        loss = per_query.mean() if b else per_query.sum()
    elif reduction == "sum":
        loss = per_query.sum()
    else:
        loss = per_query

    with torch.no_grad():
        n_valid = valid.sum()
        stats = {
            "active_frac": active.sum().float() / n_valid.clamp_min(1).float(),
            "violators": active.sum(dim=1).float().mean() if b else scores.new_zeros(()),
            "s_p": s_p.detach().mean() if b else scores.new_zeros(()),
            "s_n": (torch.where(valid, s_n.detach(), torch.zeros_like(s_n)).sum()
                    / n_valid.clamp_min(1).float()),
            "n_neg": valid.sum(dim=1).float().mean() if b else scores.new_zeros(()),
        }
    return loss, stats


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
    * **Reduction**: sum over the negatives, mean over the queries (``"mean"``);
      ``"sum"`` sums over queries too and ``"none"`` returns the ``[B]`` per-query terms.
    * **Positive**: ``pos`` may be passed; otherwise it is drawn with
      :func:`sample_positives` according to ``positive_sampling``: ``"uniform"`` over the
      query's positives, or ``"propensity"`` (probability proportional to the inverse
      propensity of the label; ``propensity`` must then be passed to ``forward``).

    Scores are computed in float32 even under bf16 / fp16 autocast.

    Args:
        k: number of hard negatives per query.
        margin: fixed margin (ignored when ``dynamic_margin``).
        dynamic_margin, min_margin, max_margin: the dynamic-margin option.
        aggressive, tau, detach_weights: the softmax weighting of violators.
        positive_sampling: ``"uniform"`` or ``"propensity"`` (used when ``pos`` is None).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        normalize: L2-normalise ``Q`` and ``L`` before scoring.
        return_stats: make ``forward`` return ``(loss, stats)`` by default.

    Example::

        loss_fn = TripletLoss(k=10, dynamic_margin=True, aggressive=True)
        loss, stats = loss_fn(q, l, target, pos, return_stats=True)
    """

    def __init__(
        self,
        k: int = 10,
        margin: float = 0.3,
        dynamic_margin: bool = False,
        min_margin: float = 0.1,
        max_margin: float = 0.3,
        aggressive: bool = False,
        tau: float = 0.1,
        detach_weights: bool = False,
        positive_sampling: Literal["uniform", "propensity"] = "uniform",
        reduction: Literal["mean", "sum", "none"] = "mean",
        normalize: bool = False,
        return_stats: bool = False,
    ):
        super().__init__()
        if positive_sampling not in ("uniform", "propensity"):
            raise ValueError(
                f"positive_sampling must be 'uniform' or 'propensity', got {positive_sampling!r}"
            )
        if min_margin > max_margin:
            raise ValueError(f"min_margin ({min_margin}) > max_margin ({max_margin})")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.k = int(k)
        self.margin = float(margin)
        self.dynamic_margin = bool(dynamic_margin)
        self.min_margin = float(min_margin)
        self.max_margin = float(max_margin)
        self.aggressive = bool(aggressive)
        self.tau = float(tau)
        self.detach_weights = bool(detach_weights)
        self.positive_sampling = positive_sampling
        self.reduction = reduction
        self.normalize = bool(normalize)
        self.return_stats = bool(return_stats)

    def extra_repr(self) -> str:
        margin = (f"dynamic_margin=[{self.min_margin}, {self.max_margin}]"
                  if self.dynamic_margin else f"margin={self.margin}")
        return (f"k={self.k}, {margin}, aggressive={self.aggressive}, tau={self.tau}, "
                f"positive_sampling={self.positive_sampling!r}, reduction={self.reduction!r}")

    def scores(self, query_emb: Tensor, label_emb: Tensor) -> Tensor:
        """``[B, N]`` float32 score matrix ``Q L^T`` (normalising first if configured)."""
        q = query_emb.float()
        l = label_emb.float()
        if self.normalize:
            q = nn.functional.normalize(q, dim=-1)
            l = nn.functional.normalize(l, dim=-1)
        with torch.autocast(device_type=q.device.type, enabled=False):
            return q @ l.T

    def forward(
        self,
        query_emb: Tensor,
        label_emb: Tensor,
        target: Tensor,
        pos: Tensor | None = None,
        propensity: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_stats: bool | None = None,
    ):
        """Compute the loss (see the class docstring).

        Args:
            query_emb: ``[B, D]`` query embeddings.
            label_emb: ``[N, D]`` in-batch label embeddings.
            target: ``[B, N]`` bool / 0-1 float: every in-batch positive of each query.
            pos: ``[B]`` index of the sampled positive per query; sampled when None.
            propensity: ``[N]`` label propensities for ``positive_sampling="propensity"``.
            generator: ``torch.Generator`` for the positive sampling.
            return_stats: override the module's ``return_stats``.

        Returns:
            the loss, or ``(loss, stats)`` (see :func:`triplet_loss_from_scores`).
        """
        if query_emb.dim() != 2 or label_emb.dim() != 2:
            raise ValueError("query_emb must be [B, D] and label_emb [N, D]")
        if query_emb.shape[1] != label_emb.shape[1]:
            raise ValueError(
                f"embedding sizes differ: queries {query_emb.shape[1]}, labels {label_emb.shape[1]}"
            )
        target = target.to(query_emb.device)
        if pos is None:
            if self.positive_sampling == "propensity":
                if propensity is None:
                    raise ValueError("positive_sampling='propensity' needs `propensity`")
                pos = sample_positives(target, propensity, generator)
            else:
                pos = sample_positives(target, None, generator)
        s = self.scores(query_emb, label_emb)
        loss, stats = triplet_loss_from_scores(
            s, target, pos,
            k=self.k, margin=self.margin, dynamic_margin=self.dynamic_margin,
            min_margin=self.min_margin, max_margin=self.max_margin,
            aggressive=self.aggressive, tau=self.tau, detach_weights=self.detach_weights,
            reduction=self.reduction,
        )
        want = self.return_stats if return_stats is None else return_stats
        return (loss, stats) if want else loss
