import math

import pytest
import torch

from vixml_lib.losses import (
    LossConfig,
    TripletLoss,
    mine_hard_negatives,
    triplet_loss_from_scores,
)

# Toy batch: 2 queries x 5 in-batch labels. Query 0 has an off-diagonal positive (label
# 2, score 0.8) that scores above every negative: it must never be mined as a negative.
S = torch.tensor([[0.90, 0.50, 0.80, 0.85, 0.10],
                  [0.20, 0.60, 0.65, 0.30, 0.55]])
T = torch.tensor([[1, 0, 1, 0, 0],
                  [0, 1, 0, 0, 0]], dtype=torch.bool)
POS = torch.tensor([0, 1])
# k = 2 hardest negatives: query 0 -> labels 3 (0.85), 1 (0.50); query 1 -> 2 (0.65), 4 (0.55)


def embeddings(scores):
    """Q, L with Q @ L.T == scores (L = identity), so the module sees the toy scores."""
    q = scores.clone().requires_grad_(True)
    l = torch.eye(scores.shape[1]).requires_grad_(True)
    return q, l


def test_hard_negative_selection_skips_all_positives():
    idx, valid = mine_hard_negatives(S, T, k=2)
    assert idx.tolist() == [[3, 1], [2, 4]]
    assert valid.all()
    idx, valid = mine_hard_negatives(S, T, k=3)
    assert idx[0].tolist() == [3, 1, 4] and idx[1].tolist() == [2, 4, 3]
    # k larger than the negatives available: trailing slots are flagged invalid
    idx, valid = mine_hard_negatives(S, T, k=10)
    assert idx.shape == (2, 5)
    assert valid.sum(1).tolist() == [3, 4]
    for i in range(2):
        mined = set(idx[i][valid[i]].tolist())
        assert mined.isdisjoint(set(torch.nonzero(T[i]).flatten().tolist()))


def test_fixed_margin_hand_computed():
    # q0: s_p=.9: [.85-.9+.3]+ = .25, [.5-.9+.3]+ = 0 -> .25
    # q1: s_p=.6: [.65-.6+.3]+ = .35, [.55-.6+.3]+ = .25 -> .60
    loss, stats = triplet_loss_from_scores(S, T, POS, k=2, margin=0.3, dynamic_margin=False)
    assert loss.item() == pytest.approx((0.25 + 0.60) / 2, abs=1e-6)
    assert stats["active_frac"].item() == pytest.approx(3 / 4)
    assert stats["s_p"].item() == pytest.approx(0.75)
    assert stats["s_n"].item() == pytest.approx((0.85 + 0.5 + 0.65 + 0.55) / 4)
    assert stats["n_neg"].item() == pytest.approx(2.0)
    per_query, _ = triplet_loss_from_scores(S, T, POS, k=2, margin=0.3, dynamic_margin=False, reduction="none")
    assert per_query.tolist() == pytest.approx([0.25, 0.60], abs=1e-6)


def test_module_matches_and_returns_stats():
    q, l = embeddings(S)
    fn = TripletLoss(k=2, margin=0.3, dynamic_margin=False)
    loss = fn(q, l, T, POS)
    assert loss.item() == pytest.approx(0.425, abs=1e-6)
    loss2, stats = fn(q, l, T, POS, return_stats=True)
    assert loss2.item() == pytest.approx(0.425, abs=1e-6)
    assert set(stats) >= {"active_frac", "s_p", "s_n"}


def test_dynamic_margin_hand_computed():
    # m = clamp(|s_p - s_n|, .1, .3), detached
    # q0: .85: m=clamp(.05)=.1 -> .85-.9+.1 = .05 ; .5: m=clamp(.4)=.3 -> -.1 -> 0
    # q1: .65: m=clamp(.05)=.1 -> .65-.6+.1 = .15 ; .55: m=.1 -> .55-.6+.1 = .05
    loss, _ = triplet_loss_from_scores(S, T, POS, k=2, dynamic_margin=True,
                                       min_margin=0.1, max_margin=0.3)
    assert loss.item() == pytest.approx((0.05 + 0.20) / 2, abs=1e-6)


def test_dynamic_margin_is_detached():
    s = S.clone().requires_grad_(True)
    loss, _ = triplet_loss_from_scores(s, T, POS, k=2, dynamic_margin=True)
    loss.backward()
    # every active pair contributes +1/B to s_n and -1/B to s_p, as with a fixed margin
    expected = torch.zeros_like(S)
    expected[0, 3] = 0.5
    expected[0, 0] = -0.5
    expected[1, 2] = expected[1, 4] = 0.5
    expected[1, 1] = -1.0
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_aggressive_weighting_hand_computed():
    # fixed margin .3; weights = softmax(s_n / .1) over violators only
    # q0: one violator (.85, hinge .25) -> weight 1 -> .25
    # q1: violators .65 (.35) and .55 (.25): weights e^6.5, e^5.5 normalised
    w1 = math.exp(6.5) / (math.exp(6.5) + math.exp(5.5))
    expected = (0.25 + 0.35 * w1 + 0.25 * (1 - w1)) / 2
    loss, _ = triplet_loss_from_scores(S, T, POS, k=2, margin=0.3, dynamic_margin=False, aggressive=True, tau=0.1)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # with k=3, q0's third negative (.1) is not a violator and gets weight 0
    loss3, _ = triplet_loss_from_scores(S, T, POS, k=3, margin=0.3, dynamic_margin=False, aggressive=True, tau=0.1)
    # q1's third negative (.3): .3-.6+.3 = 0 -> not a violator either
    assert loss3.item() == pytest.approx(expected, abs=1e-6)


def test_aggressive_no_violators_no_nan():
    s = torch.tensor([[0.9, 0.0, -0.1]], requires_grad=True)
    t = torch.tensor([[1, 0, 0]])
    for detach in (False, True):
        loss, _ = triplet_loss_from_scores(s, t, torch.tensor([0]), k=2, aggressive=True,
                                           detach_weights=detach)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(s.grad).all() and (s.grad == 0).all()
        s.grad = None


def test_gradients_flow_to_both_towers():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1).requires_grad_(True)
    l = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1).requires_grad_(True)
    t = torch.zeros(4, 6, dtype=torch.bool)
    t[torch.arange(4), torch.arange(4)] = True
    t[0, 5] = True
    for kw in ({"dynamic_margin": False}, {"dynamic_margin": True}, {"dynamic_margin": False, "aggressive": True}):
        fn = TripletLoss(k=3, margin=1.5, **kw)  # margin large: every triplet active
        loss = fn(q, l, t, torch.arange(4))
        loss.backward()
        assert loss.item() > 0
        assert q.grad.abs().sum() > 0 and l.grad.abs().sum() > 0
        q.grad = l.grad = None


def test_k_larger_than_available_negatives():
    # 3 queries; query 2 has a single negative (label 4)
    s = torch.cat([S, torch.tensor([[0.3, 0.2, 0.4, 0.9, 0.5]])])
    t = torch.cat([T, torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)])
    pos = torch.tensor([0, 1, 3])
    loss, stats = triplet_loss_from_scores(s, t, pos, k=10, margin=0.3, dynamic_margin=False)
    # q0 negatives {.85, .5, .1}: .25 ; q1 {.65, .55, .3, .2}: .35+.25 ; q2 {.5}: 0
    assert loss.item() == pytest.approx((0.25 + 0.60 + 0.0) / 3, abs=1e-6)
    assert stats["n_neg"].item() == pytest.approx((3 + 4 + 1) / 3)
    # a row with no negative at all contributes 0 (and no NaN)
    t_all = torch.ones(1, 3, dtype=torch.bool)
    s1 = torch.tensor([[0.1, 0.2, 0.3]], requires_grad=True)
    loss, _ = triplet_loss_from_scores(s1, t_all, torch.tensor([0]), k=10, aggressive=True)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(s1.grad).all()


def test_sampled_positive_is_masked_even_if_target_misses_it():
    t = torch.tensor([[0, 0, 1, 0, 0]], dtype=torch.bool)
    idx, _ = mine_hard_negatives(S[:1], t, k=4)
    loss, _ = triplet_loss_from_scores(S[:1], t, torch.tensor([0]), k=4, margin=0.3, dynamic_margin=False)
    # label 0 (the sampled positive) is never its own negative: negatives .85, .5, .1
    assert loss.item() == pytest.approx(0.25, abs=1e-6)


def test_bf16_inputs():
    q, l = embeddings(S)
    loss = TripletLoss(k=2, dynamic_margin=False)(q.to(torch.bfloat16), l.to(torch.bfloat16), T, POS)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(0.425, abs=1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    q, l = embeddings(S)
    fn = TripletLoss(k=2, dynamic_margin=True, aggressive=True)
    cpu = fn(q, l, T, POS)
    gpu = fn(q.detach().cuda().requires_grad_(True), l.detach().cuda(), T.cuda(), POS.cuda())
    assert gpu.item() == pytest.approx(cpu.item(), abs=1e-6)


def test_loss_config_is_the_one_place_for_settings():
    cfg = LossConfig(k=2, margin=0.3, dynamic_margin=False)
    q, l = embeddings(S)
    assert TripletLoss(cfg)(q, l, T, POS).item() == pytest.approx(0.425, abs=1e-6)
    assert triplet_loss_from_scores(S, T, POS, cfg)[0].item() == pytest.approx(0.425, abs=1e-6)
    # keyword settings replace fields of the given config
    dyn, _ = triplet_loss_from_scores(S, T, POS, cfg, dynamic_margin=True)
    assert dyn.item() == pytest.approx((0.05 + 0.20) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="min_margin"):
        LossConfig(min_margin=0.5, max_margin=0.3)
    with pytest.raises(ValueError, match="k must be"):
        LossConfig(k=0)
