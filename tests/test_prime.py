"""PRIME: prototypes, centroids, the loss terms against hand-computed values, and resume."""
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from vixml_lib.losses import LossConfig, prime_loss, prototype_regulariser, triplet_loss_from_scores
from vixml_lib.prime import PrimeConfig, PrimeHead, free_vector_count, label_centroids

# --------------------------------------------------------------------------- a 3 x 4 example
# 3 queries x 4 in-batch labels; query 0 has labels 0 and 3. Scores against the label
# encoder (S_u = x.u) and against the prototypes (S_z = x.z), chosen so that no hinge
# argument is exactly 0 (ties are tested separately).
S_U = torch.tensor([[0.90, 0.45, 0.15, 0.70],
                    [0.30, 0.80, 0.60, 0.10],
                    [0.40, 0.75, 0.50, 0.20]])
S_Z = torch.tensor([[0.60, 0.40, 0.10, 0.90],
                    [0.20, 0.95, 0.30, 0.50],
                    [0.10, 0.60, 0.80, 0.00]])
T = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
FIXED = LossConfig(k=2, margin=0.3, dynamic_margin=False, tie_gradient="zero")
POS = {"xu": torch.tensor([0, 1, 2]), "xz": torch.tensor([0, 1, 2]),
       "ux": torch.tensor([0, 1, 2, 0]), "reg": torch.tensor([0, 1, 2])}


def embeddings():
    """q, u, z with q.u^T = S_U and q.z^T = S_Z: q = [S_U | S_Z], u = [I | 0], z = [0 | I]."""
    q = torch.cat([S_U, S_Z], 1).clone().requires_grad_(True)
    eye, zero = torch.eye(4), torch.zeros(4, 4)
    return q, torch.cat([eye, zero], 1), torch.cat([zero, eye], 1)


def test_each_prime_term_against_hand_computed_values():
    # T(x,u): row0 negatives .45 .15 -> 0; row1 .6 .3 vs .8 -> .1; row2 .75 .4 vs .5 -> .55 + .2
    t_xu, _ = triplet_loss_from_scores(S_U, T, POS["xu"], FIXED)
    assert t_xu.item() == pytest.approx((0 + 0.1 + 0.75) / 3, abs=1e-6)
    # T(x,z): row0 .4 vs .6 -> .1; row1 0; row2 .6 vs .8 -> .1
    t_xz, _ = triplet_loss_from_scores(S_Z, T, POS["xz"], FIXED)
    assert t_xz.item() == pytest.approx(0.2 / 3, abs=1e-6)
    # T(u,x), label -> query: label1 .75 vs .8 -> .25; label2 .6 vs .5 -> .4; labels 0, 3 -> 0
    t_ux, _ = triplet_loss_from_scores(S_U.T, T.T, POS["ux"], FIXED)
    assert t_ux.item() == pytest.approx(0.65 / 4, abs=1e-6)
    # R: positives [s_u - s_z + .1]+ = .4, 0, 0 -> mean over active .4; negatives (top-2 by s_z)
    # [s_z - s_u + .1]+ = .05, .05 (row 0), .5, 0 (row 1), 0, 0 (row 2) -> .6 / 3 = .2
    r = prototype_regulariser(S_U, S_Z, T, POS["reg"], k=2, margin=0.1, tie_gradient="zero")
    assert r.item() == pytest.approx((0.4 + 0.2) / 2, abs=1e-6)
    q, u, z = embeddings()
    total, parts = prime_loss(q, u, z, T, POS, FIXED)
    assert total.item() == pytest.approx(0.85 / 3 + 0.2 / 3 + 0.65 / 4 + 0.1 * 0.3, abs=1e-6)
    assert parts["R"].item() == pytest.approx(0.3, abs=1e-6)
    weighted, _ = prime_loss(q, u, z, T, POS, LossConfig.of(FIXED, w_xu=0, w_ux=2, w_reg=1))
    assert weighted.item() == pytest.approx(0.2 / 3 + 2 * 0.65 / 4 + 0.3, abs=1e-6)


def test_regulariser_pushes_prototypes_up_on_positives_and_down_on_negatives():
    s_z = S_Z.clone().requires_grad_(True)
    s_u = S_U.clone().requires_grad_(True)
    prototype_regulariser(s_u, s_z, T, POS["reg"], k=2, margin=0.1, tie_gradient="zero").backward()
    # the active positive (row 0, label 0): raising the prototype score lowers R
    assert s_z.grad[0, 0].item() == pytest.approx(-0.5)
    assert s_u.grad[0, 0].item() == pytest.approx(0.5)
    # the active negatives (row 0 labels 1, 2; row 1 label 3): raising s_z raises R
    for i, j in ((0, 1), (0, 2), (1, 3)):
        assert s_z.grad[i, j].item() == pytest.approx(1 / 6)
    # inactive terms pass no gradient
    assert s_z.grad[2].abs().sum().item() == 0.0


def test_tie_gradient_is_half_as_the_authors_torch_max():
    # with the dynamic margin, a pair inside the [0.1, 0.3] band has a hinge argument of exactly 0
    s = torch.tensor([[0.9, 0.7]], requires_grad=True)  # s_p - s_n = 0.2, inside the band
    t = torch.tensor([[1, 0]], dtype=torch.bool)
    for tie, expected in (("half", 0.5), ("zero", 0.0)):
        s.grad = None
        loss, _ = triplet_loss_from_scores(s, t, torch.tensor([0]), k=1, tie_gradient=tie)
        loss.backward()
        assert loss.item() == 0.0
        assert s.grad[0, 1].item() == pytest.approx(expected) and s.grad[0, 0].item() == pytest.approx(-expected)


# --------------------------------------------------------------------------- the head


def test_combiner_gives_normalised_prototypes_of_the_right_shape():
    head = PrimeHead(n_labels=6, dim=16, config=PrimeConfig(free_vectors=4, heads=8, feedforward=32), seed=0)
    head.set_clusters([np.array([0, 1]), np.array([2, 3]), np.array([4, 5])])
    u = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    z = head(u, torch.tensor([0, 2, 4, 5, 1]))
    assert z.shape == (5, 16) and torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert head.cluster_of.tolist() == [0, 0, 1, 1, 2, 2]
    z.sum().backward()
    assert head.free.grad is not None and head.free.grad[3].abs().sum() == 0  # free vector 3 unused


def test_centroids_are_the_mean_query_embedding_of_each_label():
    Y = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], np.float32) * 0.5)  # values ignored
    E = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [9.0, 9.0]], np.float32)
    C, counts = label_centroids(Y, E)
    assert counts.tolist() == [2, 2, 0]
    np.testing.assert_allclose(C, [[0.5, 0.5], [1.0, 1.5], [0.0, 0.0]])
    C_rows, _ = label_centroids(Y, E[[1, 2]], rows=np.array([1, 2]))  # only some queries embedded
    np.testing.assert_allclose(C_rows, [[0.0, 1.0], [1.0, 1.5], [0.0, 0.0]])


def test_unseen_labels_fall_back_to_the_label_encoder():
    head = PrimeHead(n_labels=3, dim=8, config=PrimeConfig(free_vectors=2, heads=8, feedforward=16), seed=0)
    head.set_clusters([np.array([0, 1]), np.array([2])])
    head.set_centroids(np.ones((3, 8), np.float32), counts=np.array([3, 0, 1]))
    u = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    out = head.label_embeddings(u, np.arange(3))
    np.testing.assert_array_equal(out[1], u[1])  # no training query: u
    head.eval()  # no dropout: label_embeddings runs in eval mode
    z = head(torch.from_numpy(u[[0, 2]]), torch.tensor([0, 2])).detach().numpy()
    np.testing.assert_allclose(out[[0, 2]], z, atol=1e-6)


def test_free_vector_count_is_a_power_of_two_scaled_to_the_labels():
    assert free_vector_count(131_073) == 65_536 and free_vector_count(1_305_265) == 65_536
    assert free_vector_count(3000) == 1024 and free_vector_count(1) == 1
    assert free_vector_count(3000, 256) == 256
    with pytest.raises(ValueError, match="power of two"):
        PrimeConfig(free_vectors=100)


def test_centroids_never_build_a_dense_queries_by_labels_matrix():
    rng = np.random.default_rng(0)
    n_q, n_l, d = 300_000, 200_000, 4
    rows = np.repeat(np.arange(n_q), 2)
    Y = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, rng.integers(0, n_l, rows.size))), shape=(n_q, n_l))
    E = rng.normal(size=(n_q, d)).astype(np.float32)
    tracemalloc.start()
    C, counts = label_centroids(Y, E)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert C.shape == (n_l, d) and counts.sum() == Y.nnz
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB (a dense queries x labels float32 would be 240 GB)"
