"""The literature's sink measures on hand-built tensors with known answers
(vixml_lib.sinks.scores), and the paired bootstrap (vixml_lib.sinks.bootstrap)."""
import math

import numpy as np
import pytest
import torch

from vixml_lib import sinks
from vixml_lib.prompt import KIND_CODES, PAD_KIND

IMG, TITLE, PREFIX, EOS, CLS = (KIND_CODES[k] for k in ("images", "title", "text_prefix", "eos", "cls"))
ROWS = [[1.0], [0.6, 0.4], [0.5, 0.25, 0.25], [0.2, 0.3, 0.3, 0.2]]


def causal(rows=ROWS):
    """A [1, T, T] causal attention map from its lower-triangular rows."""
    T = len(rows)
    a = torch.zeros(1, T, T)
    for q, r in enumerate(rows):
        a[0, q, : len(r)] = torch.tensor(r)
    return a


# --------------------------------------------------------------------------- sink scores (Gu et al.)


def test_sink_score_is_the_mean_over_later_queries():
    a = causal()
    real = torch.ones(1, 4, dtype=torch.bool)
    score = lambda k: sinks.sink_scores(a, torch.tensor([k]), real).item()  # noqa: E731
    assert score(0) == pytest.approx((0.6 + 0.5 + 0.2) / 3)  # the key's own row does not count
    assert score(1) == pytest.approx((0.25 + 0.3) / 2)
    assert score(2) == pytest.approx(0.3)
    assert math.isnan(score(3)) and math.isnan(score(-1))  # no later query / no key
    # Gu et al.'s exact form counts the key's own row too
    gu = sinks.sink_scores(a, torch.tensor([0]), real, include_self=True).item()
    assert gu == pytest.approx((1.0 + 0.6 + 0.5 + 0.2) / 4)
    assert sinks.sink_scores(a, torch.tensor([3]), real, include_self=True).item() == pytest.approx(0.2)


def test_sink_score_respects_padding_and_per_item_lengths():
    a = torch.cat([causal(), causal()], 0)
    a[1, 3] = torch.tensor([0.97, 0.01, 0.01, 0.01])  # the padded query row of item 1: ignored
    real = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    s = sinks.sink_scores(a, torch.tensor([0, 0]), real)
    assert s.tolist() == pytest.approx([(0.6 + 0.5 + 0.2) / 3, (0.6 + 0.5) / 2])
    s = sinks.sink_scores(a, torch.tensor([2, 2]), real)
    assert s[0].item() == pytest.approx(0.3) and torch.isnan(s[1])  # item 1's last real position


def test_sink_score_of_an_encoder_counts_every_other_query():
    a = torch.tensor([[[0.5, 0.5, 0.0], [0.7, 0.2, 0.1], [0.4, 0.4, 0.2]]])
    real = torch.ones(1, 3, dtype=torch.bool)
    assert sinks.sink_scores(a, torch.tensor([1]), real, "all").item() == pytest.approx((0.5 + 0.4) / 2)
    assert sinks.sink_scores(a, torch.tensor([1]), real, "later").item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="'later'.*'all'"):
        sinks.sink_scores(a, torch.tensor([1]), real, "causal")


def test_sink_score_keeps_layer_and_head_dims_and_one_key_per_item():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 4, 5, 5).tril()
    a = a / a.sum(-1, keepdim=True)  # [B, layers, heads, T, T]
    real = torch.ones(2, 5, dtype=torch.bool)
    s = sinks.sink_scores(a, torch.tensor([0, 2]), real)
    assert s.shape == (2, 3, 4)
    assert torch.allclose(s[0], a[0, :, :, 1:, 0].mean(-1)) and torch.allclose(s[1], a[1, :, :, 3:, 2].mean(-1))
    # for position 0 the sink score equals the attention mass on position 0 of sinks.metrics
    pos0 = torch.zeros(2, 5, dtype=torch.bool)
    pos0[:, 0] = True
    assert torch.allclose(sinks.sink_scores(a, torch.zeros(2, dtype=torch.long), real),
                          sinks.attention_mass(a, pos0, real))


def test_sink_positions_of_each_target():
    kinds = torch.tensor([[IMG, PREFIX, TITLE, EOS, PAD_KIND],
                          [PREFIX, TITLE, IMG, IMG, EOS],
                          [IMG, CLS, TITLE, TITLE, KIND_CODES["sep"]],
                          [PREFIX, TITLE, EOS, PAD_KIND, PAD_KIND]])
    found = sinks.sink_positions(kinds)
    assert found["pos0"].tolist() == [0, 0, 0, 0]
    assert found["first_image"].tolist() == [0, 2, 0, -1]
    assert found["first_text"].tolist() == [1, 0, 1, 0]  # [CLS] counts as text


def test_sink_share_averages_items_then_counts_heads_above_epsilon():
    s = np.array([[[0.9, 0.1], [0.5, 0.31]],
                  [[0.7, 0.1], [0.0, 0.29]],
                  [[np.nan, np.nan], [np.nan, np.nan]]])  # item 2 lacks the key
    # item means: [[0.8, 0.1], [0.25, 0.30]] -> only 0.8 is above 0.3 (0.30 is not above it)
    assert sinks.sink_share(s, 0.3) == pytest.approx(0.25)
    assert sinks.sink_share(s, 0.2) == pytest.approx(0.75)
    assert sinks.sink_share(s, 0.9) == 0.0
    assert math.isnan(sinks.sink_share(s[2:], 0.3))
    with pytest.raises(ValueError, match="items, layers, heads"):
        sinks.sink_share(s[0], 0.3)


# --------------------------------------------------------------------------- massive activations (Sun et al.)


def test_massive_activations_find_value_token_and_channel():
    h = torch.ones(2, 2, 4, 5)  # [B, states, T, D]
    h[0, 1, 1, 2] = 100.0
    h[0, 1, 0, 3] = -50.0  # magnitudes count, not signs
    h[0, 1, 2, 0] = 30.0
    h[0, 1, 3, 4] = 1000.0  # item 0 position 3 is padding: never counted
    h[1, 0, 0, 0] = 7.0
    real = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    found = sinks.massive_activations(h, real, k=3)
    assert found["top"][0, 1].tolist() == [100.0, 50.0, 30.0]
    assert found["position"][0, 1].tolist() == [1, 0, 2] and found["channel"][0, 1].tolist() == [2, 3, 0]
    assert found["median"][0, 1].item() == 1.0 and found["median"].shape == (2, 2)
    assert found["top"][1, 0, 0].item() == 7.0 and (found["position"][1, 0, 0], found["channel"][1, 0, 0]) == (0, 0)
    # the median is over the real entries only: make half of item 0's real entries 3
    h2 = torch.ones(1, 1, 2, 2)
    h2[0, 0, 1] = 3.0
    h2 = torch.cat([h2, torch.full((1, 1, 1, 2), 99.0)], 2)  # a padded position
    med = sinks.massive_activations(h2, torch.tensor([[1, 1, 0]], dtype=torch.bool), k=1)["median"]
    assert med.item() == 1.0  # the lower median of [1, 1, 3, 3], padding left out
    with pytest.raises(ValueError, match="exceeds"):
        sinks.massive_activations(h2, torch.ones(1, 3, dtype=torch.bool), k=7)


# --------------------------------------------------------------------------- key / value and other norms


def test_projection_norms_average_the_heads_and_skip_padding():
    proj = torch.tensor([[[3.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0], [9.0, 9.0, 9.0, 9.0]]])  # 2 heads of 2
    out = sinks.projection_norms(proj, 2, torch.tensor([[1, 1, 0]], dtype=torch.bool))
    assert out[0, :2].tolist() == pytest.approx([2.5, 1.5]) and torch.isnan(out[0, 2])
    with pytest.raises(ValueError, match="does not split into 3 heads"):
        sinks.projection_norms(proj, 3, torch.ones(1, 3, dtype=torch.bool))


def test_norms_by_kind_and_position0_ratio():
    norms = np.array([[[10.0, 1.0, 3.0, np.nan]], [[20.0, 2.0, 2.0, 4.0]]])  # [N=2, S=1, T=4]
    kinds = np.array([[PREFIX, TITLE, EOS, PAD_KIND], [PREFIX, TITLE, TITLE, EOS]])
    by = sinks.norms_by_kind(norms, kinds)
    assert by["position 0"].tolist() == [15.0]
    assert by["title"].tolist() == pytest.approx([(1 + 2 + 2) / 3]) and by["eos"].tolist() == pytest.approx([3.5])
    assert "text_prefix" not in by  # position 0 is reported apart
    assert sinks.position0_ratio(norms).tolist() == pytest.approx([(10 / 2 + 20 / (8 / 3)) / 2])


# --------------------------------------------------------------------------- paired bootstrap
