"""The sink measures on hand-built attention tensors (vixml_lib.sinks.metrics)."""
import numpy as np
import pytest
import torch

from vixml_lib import sinks
from vixml_lib.prompt import KIND_CODES

IMG, TITLE, PREFIX, EOS = KIND_CODES["images"], KIND_CODES["title"], KIND_CODES["text_prefix"], KIND_CODES["eos"]


def causal(rows):
    """A [1, 1, T, T] attention tensor from lower-triangular rows."""
    T = len(rows)
    a = torch.zeros(1, 1, T, T)
    for q, r in enumerate(rows):
        a[0, 0, q, : len(r)] = torch.tensor(r)
    return a


# --------------------------------------------------------------------------- hand-built tensors


def test_mass_on_position0_is_the_mean_over_real_queries_after_it():
    a = causal([[1.0], [0.6, 0.4], [0.5, 0.25, 0.25], [0.2, 0.3, 0.3, 0.2]])
    real = torch.ones(1, 4, dtype=torch.bool)
    pos0 = torch.tensor([[True, False, False, False]])
    # position 0 (always 1.0 on itself) is not a counted query
    assert sinks.attention_mass(a, pos0, real).item() == pytest.approx((0.6 + 0.5 + 0.2) / 3)
    # a target later in the sequence only counts the queries that can see it
    later = torch.tensor([[False, False, True, True]])
    assert sinks.attention_mass(a, later, real).item() == pytest.approx((0.25 + 0.5) / 2)
    assert sinks.counted_queries(later, real).tolist() == [[False, False, True, True]]


def test_padding_is_excluded_as_query_and_key():
    a = causal([[1.0], [0.6, 0.4], [0.5, 0.25, 0.25], [0.2, 0.3, 0.3, 0.2]])
    a = torch.cat([a, a.clone()], 0)
    a[1, 0, 3] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # garbage in the padded row of item 1
    real = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    pos0 = torch.zeros(2, 4, dtype=torch.bool)
    pos0[:, 0] = True
    mass = sinks.attention_mass(a, pos0, real)
    assert mass[0].item() == pytest.approx((0.6 + 0.5 + 0.2) / 3)
    assert mass[1].item() == pytest.approx((0.6 + 0.5) / 2)  # the padded query does not count
    target = torch.tensor([[False, False, False, True]] * 2)  # the padded key is no target
    m = sinks.attention_mass(a, target, real)
    assert m[0].item() == pytest.approx(0.2) and torch.isnan(m[1])
    share = sinks.received_share(a, real)
    assert torch.allclose(share.sum(-1), torch.ones(2, 1))  # shares of all attention
    assert share[1, 0, 3].item() == 0 and share[1, 0, 0].item() == pytest.approx(mass[1].item())


def test_mass_keeps_layer_and_head_dims_and_is_nan_without_target():
    a = torch.rand(3, 2, 4, 5, 5).tril()
    a = a / a.sum(-1, keepdim=True)
    real = torch.ones(3, 5, dtype=torch.bool)
    none = torch.zeros(3, 5, dtype=torch.bool)
    out = sinks.attention_mass(a, none, real)
    assert out.shape == (3, 2, 4) and torch.isnan(out).all()


def test_receiver_categories():
    kinds = np.array([[IMG, PREFIX, TITLE, IMG, EOS], [PREFIX, TITLE, TITLE, IMG, EOS]])
    pos = np.array([[0, 1, 3, 4, 2], [0, 1, 3, 4, 2]])
    cats = sinks.receiver_categories(pos, kinds)
    assert cats[0].tolist() == ["image at 0", "first text token", "image", "EOS", "other text"]
    assert cats[1].tolist() == ["text at 0", "other text", "image", "EOS", "other text"]
