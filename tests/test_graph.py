import numpy as np
import pytest
import torch

from lagnh_pyg.errors import InputError
from lagnh_pyg.graph import (
    auto_sigma2,
    build_graph,
    edge_sq_dist,
    fused_edge_weight,
    normalize_edge_weight,
    self_mass,
    sort_by_target,
)
from lagnh_pyg.knn import knn_search, l2_normalize


def _data(rng, n=60, d=8, c=5, zero_aux=()):
    x = rng.standard_normal((n, d)).astype(np.float32)
    a = (rng.random((n, c)) < 0.4).astype(np.float32)
    a[list(zero_aux)] = 0
    return x, a


def test_topology_symmetric_unique_one_self_loop(rng):
    x, a = _data(rng)
    g = build_graph(x, a, k=4)
    ei = g.edge_index
    n = g.num_nodes
    pairs = set(map(tuple, ei.T.tolist()))
    assert len(pairs) == ei.shape[1]  # no duplicates
    assert all((j, i) in pairs for i, j in pairs)  # symmetric
    loops = ei[0] == ei[1]
    assert torch.equal(torch.sort(ei[0, loops]).values, torch.arange(n))  # one self-loop each
    # sorted by target, then source (what the CSR forward needs)
    key = ei[1] * n + ei[0]
    assert bool((key[1:] > key[:-1]).all())
    # every node keeps at least its k visual neighbours
    deg = torch.bincount(ei[1][~loops], minlength=n)
    assert int(deg.min()) >= 4


def test_knn_edges_are_the_nearest(rng):
    x, a = _data(rng)
    g = build_graph(x, a, k=3, sources="visual")
    xn = l2_normalize(x)
    sims = xn @ xn.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :3]
    pairs = set(map(tuple, g.edge_index.T.tolist()))
    for i in range(len(x)):
        for j in nearest[i]:
            assert (i, int(j)) in pairs and (int(j), i) in pairs


def test_s_a_matches_dense_cosine_and_zero_aux_is_safe(rng):
    x, a = _data(rng, zero_aux=(0, 5, 7))
    g = build_graph(x, a, k=4)
    an = l2_normalize(a)
    dense = np.clip(an @ an.T, 0, None)
    src, dst = g.edge_index.numpy()
    np.testing.assert_allclose(g.s_a.numpy(), dense[src, dst], atol=1e-6)
    assert torch.isfinite(g.s_a).all()
    assert float(g.s_a[(g.edge_index[0] == 0) & (g.edge_index[1] == 0)]) == 0.0


def test_fused_weights_against_dense(rng):
    x, a = _data(rng, zero_aux=(3,))
    g = build_graph(x, a, k=4)
    xhat = torch.randn(g.num_nodes, 6, dtype=torch.float64)
    eta, sigma2 = 2.5, torch.tensor(1.7, dtype=torch.float64)
    w = fused_edge_weight(xhat, g.edge_index, g.s_a.double(), eta, sigma2)
    # dense Eq. 3-5, written out
    d2 = ((xhat[:, None, :] - xhat[None, :, :]) ** 2).sum(-1)
    s_v = torch.exp(-d2 / (2 * sigma2))
    an = torch.from_numpy(l2_normalize(a)).double()
    s = s_v + eta * (an @ an.T).clamp_min(0)
    src, dst = g.edge_index
    torch.testing.assert_close(w, s[src, dst])
    # the fast SDDMM distance equals the gathered one
    torch.testing.assert_close(edge_sq_dist(xhat, g.edge_index), d2[src, dst])
    # variants
    torch.testing.assert_close(fused_edge_weight(xhat, g.edge_index, g.s_a.double(), eta, sigma2, "visual"), s_v[src, dst])
    wa = fused_edge_weight(xhat, g.edge_index, g.s_a.double(), eta, sigma2, "aux")
    assert torch.all(wa[src == dst] == 1)


def test_auto_sigma_is_mean_squared_edge_distance(rng):
    x, a = _data(rng)
    g = build_graph(x, a, k=4)
    xhat = torch.randn(g.num_nodes, 5)
    src, dst = g.edge_index
    off = src != dst
    expected = (xhat[src[off]] - xhat[dst[off]]).pow(2).sum(1).mean()
    torch.testing.assert_close(auto_sigma2(xhat, g.edge_index), expected)


@pytest.mark.parametrize("how", ["gcn", "row"])
def test_normalisation_against_dense(rng, how):
    x, a = _data(rng, n=20, zero_aux=(1,))
    g = build_graph(x, a, k=3)
    w = torch.rand(g.edge_index.shape[1], dtype=torch.float64)
    nw, deg = normalize_edge_weight(g.edge_index, w, g.num_nodes, how)
    S = torch.zeros(20, 20, dtype=torch.float64)
    S[g.edge_index[1], g.edge_index[0]] = w  # S[target, source]
    d = S.sum(1)
    dense = S / d[:, None] if how == "row" else S / torch.sqrt(d[:, None] * d[None, :])
    torch.testing.assert_close(nw, dense[g.edge_index[1], g.edge_index[0]])
    torch.testing.assert_close(deg, d)
    assert 0 < self_mass(g.edge_index, nw, 20) < 1


def test_zero_degree_gives_zero_not_nan():
    ei = torch.tensor([[0, 1], [0, 1]])
    nw, _ = normalize_edge_weight(ei, torch.tensor([0.0, 1.0]), 3)
    assert torch.isfinite(nw).all()


def test_sort_by_target_permutes_attributes():
    ei = torch.tensor([[2, 0, 1], [1, 0, 1]])
    attr = torch.tensor([10.0, 20.0, 30.0])
    ei2, attr2 = sort_by_target(ei, attr)
    assert ei2.tolist() == [[0, 1, 2], [0, 1, 1]]
    assert attr2.tolist() == [20.0, 30.0, 10.0]


def test_k_too_large_is_one_clear_error(rng):
    x, a = _data(rng, n=10)
    with pytest.raises(InputError, match="graph.k=10"):
        build_graph(x, a, k=10)


def test_label_diagnostic_and_ivf(rng):
    x, a = _data(rng, n=400)
    labels = (a[:, :3] > 0).astype(np.uint8)
    g = build_graph(x, a, k=5, labels=labels)
    assert 0 <= g.stats["edges_sharing_label"] <= 1
    assert g.stats["degree_mean"] >= 5
    _sims, ids = knn_search(l2_normalize(x), 5, index="ivf")
    assert ids.shape == (400, 5) and not (ids == np.arange(400)[:, None]).any()


@pytest.mark.parametrize("weights", ["fused", "visual", "aux"])
def test_dense_fused_weight_equals_the_sparse_form_on_every_pair(weights):
    """One Eq. 3-5, two forms: the dense all-pairs matrix holds the sparse per-edge weights."""
    from lagnh_pyg.graph import dense_fused_weight, fused_edge_weight

    g = torch.Generator().manual_seed(0)
    n = 9
    xhat = torch.randn(n, 5, generator=g)
    aux_unit = torch.nn.functional.normalize((torch.rand(n, 4, generator=g) < 0.5).float(), dim=1)
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    ei = torch.stack([src.reshape(-1), dst.reshape(-1)])
    s_a = (aux_unit[ei[0]] * aux_unit[ei[1]]).sum(1).clamp_min(0)
    sparse = fused_edge_weight(xhat, ei, s_a, eta=0.7, sigma2=1.3, weights=weights).reshape(n, n)
    dense = dense_fused_weight(xhat, xhat, aux_unit, aux_unit, 0.7, 1.3, weights, same=True)
    assert torch.allclose(dense, sparse, atol=1e-5)
