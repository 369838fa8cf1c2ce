import pytest
import torch
import torch.nn.functional as F

from lagnh_pyg.graph import build_graph
from lagnh_pyg.nn import LAGNH, CrossModalAttention, Discriminator, GCNGenerator


@pytest.fixture
def tiny(rng):
    x = rng.standard_normal((30, 12)).astype("float32")
    a = (rng.random((30, 6)) < 0.4).astype("float32")
    a[0] = 0  # an item without aux
    return build_graph(x, a, k=3)


@pytest.mark.parametrize("keys", ["anchors", "categories", "batch", "none"])
@pytest.mark.parametrize("self_key", [False, True])
def test_attention_shapes_gradients(keys, self_key):
    torch.manual_seed(0)
    att = CrossModalAttention(12, 6, dim=8, keys=keys, num_anchors=5, self_key=self_key)
    if keys == "anchors":
        att.set_anchors(torch.rand(5, 6))
    x, aux = torch.randn(9, 12), torch.rand(9, 6)
    aux[0] = 0
    out = att(x, aux)
    assert out.shape == (9, 8) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert att.lin_x.weight.grad is not None
    if keys != "none":
        assert att.lin_y.weight.grad is not None and torch.isfinite(att.lin_y.weight.grad).all()
    if keys != "batch":  # one item, one code
        torch.testing.assert_close(att(x[3:4], aux[3:4]), out[3:4].detach())


def test_attention_matches_eq_1_2_in_batch():
    torch.manual_seed(0)
    att = CrossModalAttention(12, 6, dim=8, keys="batch")
    x, aux = torch.randn(5, 12), torch.rand(5, 6)
    xt, yt = att.lin_x(x), att.lin_y(aux)
    s = torch.stack([torch.stack([F.cosine_similarity(xt[i], yt[j], dim=0).clamp_min(0) for j in range(5)])
                     for i in range(5)])
    a = s / s.norm(dim=1, keepdim=True).clamp_min(1e-12)  # a row with no positive cosine stays 0
    torch.testing.assert_close(att(x, aux), xt + a @ yt)


def test_generator_and_discriminator(tiny):
    gen = GCNGenerator(12, 16, 8, dropout=0.5)
    w = torch.rand(tiny.edge_index.shape[1], requires_grad=True)
    z1, z = gen(tiny.x, tiny.edge_index, w)
    assert z1.shape == (30, 16) and z.shape == (30, 8)
    z.sum().backward()
    assert w.grad is not None and gen.conv1.lin.weight.grad is not None
    d = Discriminator(8)
    assert d(z.detach()).shape == (30,)


def _model(**kw):
    torch.manual_seed(0)
    args = {"att_dim": 8, "hidden": 16, "dropout": 0.0, "attention": "anchors", "anchors": 4, "eta": 2.0}
    args.update(kw)
    m = LAGNH(12, 6, 8, **args)
    if m.attention.keys == "anchors":
        m.attention.set_anchors(torch.rand(4, 6))
    return m


def test_sparse_forward_shapes_gradients_no_nan(tiny):
    m = _model()
    out = m(tiny.x, tiny.aux, tiny.edge_index, tiny.s_a)
    assert out["z"].shape == (30, 8) and out["z1"].shape == (30, 16) and out["xhat"].shape == (30, 8)
    assert all(torch.isfinite(v).all() for v in out.values() if v.is_floating_point())
    out["z"].pow(2).sum().backward()
    for name, p in m.named_parameters():
        if name.startswith(("classifier", "decoder")):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_sparse_forward_equals_dense_on_a_complete_graph():
    """The CSR/SDDMM path over a complete graph is the dense Eq. 3-7 computation."""
    torch.manual_seed(1)
    n = 10
    x, aux = torch.randn(n, 12), (torch.rand(n, 6) < 0.5).float()
    aux[2] = 0
    for norm in ("gcn", "row"):
        m = _model(sigma=1.3, normalization=norm).eval()
        src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="xy")
        ei = torch.stack([src.reshape(-1), dst.reshape(-1)])
        an = F.normalize(aux, dim=1)
        s_a = (an[ei[0]] * an[ei[1]]).sum(1).clamp_min(0)
        sparse = m(x, aux, ei, s_a)["z"]
        dense = m.forward_dense(x, aux)["z"]
        torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-5)


def test_faithful_forward_against_dense_reimplementation():
    """train.mode=faithful: in-batch attention, sigma=1, row normalisation, raw features."""
    torch.manual_seed(2)
    m = _model(attention="batch", sigma=1.0, normalization="row", feature_norm="none", eta=0.7).eval()
    x, aux = torch.randn(16, 12), (torch.rand(16, 6) < 0.5).float()
    aux[3] = 0
    out = m.forward_dense(x, aux)
    # Eq. 1-2
    xt, yt = m.attention.lin_x(x), m.attention.lin_y(aux)
    s = (F.normalize(xt, dim=1) @ F.normalize(yt, dim=1).T).clamp_min(0)
    xhat = xt + (s / s.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ yt
    # Eq. 3-5 and the release's D^-1 S
    s_v = torch.exp(-torch.cdist(xhat, xhat).pow(2) / 2)
    an = F.normalize(aux, dim=1)
    S = s_v + 0.7 * (an @ an.T).clamp_min(0)
    S_hat = S / S.sum(1, keepdim=True)
    # Eq. 6-7 (no bias, dropout off in eval)
    W1, W2 = m.generator.conv1.lin.weight.T, m.generator.conv2.lin.weight.T
    z = S_hat @ torch.relu(S_hat @ xhat @ W1) @ W2
    torch.testing.assert_close(out["xhat"], xhat)
    torch.testing.assert_close(out["z"], z, rtol=1e-4, atol=1e-5)
    # gradients reach the attention through the graph
    out = m.train().forward_dense(x, aux)
    out["z"].sum().backward()
    assert m.attention.lin_y.weight.grad is not None


def test_all_zero_aux_no_nan(tiny):
    m = _model()
    aux = torch.zeros_like(tiny.aux)
    s_a = torch.zeros_like(tiny.s_a)
    out = m(tiny.x, aux, tiny.edge_index, s_a)
    out["z"].sum().backward()
    assert torch.isfinite(out["z"]).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert torch.isfinite(m.forward_dense(tiny.x, aux)["z"]).all()


def test_dense_forward_equals_gcnconv_on_the_sparse_graph():
    """The faithful mode's dense matmuls compute GCNConv's layers with its own weights."""
    from lagnh_pyg.nn.generator import GCNGenerator

    torch.manual_seed(0)
    gen = GCNGenerator(12, 20, 8, dropout=0.0).eval()
    x = torch.randn(30, 12)
    adj = torch.rand(30, 30) * (torch.rand(30, 30) < 0.6)
    z1_ref, z_ref = gen(x, adj.to_sparse_csr())
    z1, z = gen.forward_dense(x, adj)
    assert torch.allclose(z1, z1_ref, atol=1e-5) and torch.allclose(z, z_ref, atol=1e-5)


def test_csr_forward_equals_gcnconv_messages_values_and_gradients():
    """The whole-graph CSR path (its own backward to the edge weights) computes GCNConv's
    layers and their gradients, as per-edge messages do."""
    from lagnh_pyg.graph import sort_by_target
    from lagnh_pyg.nn.generator import GCNGenerator

    torch.manual_seed(0)
    n = 60
    ei = torch.cat([torch.randint(0, n, (2, 400)), torch.arange(n).repeat(2, 1)], 1)
    (ei,) = sort_by_target(torch.unique(ei, dim=1))
    w0, x0 = torch.rand(ei.shape[1]), torch.randn(n, 12)
    gen = GCNGenerator(12, 20, 8, dropout=0.0)
    out = {}
    for path in ("csr", "messages"):
        gen.zero_grad()
        w, x = w0.clone().requires_grad_(), x0.clone().requires_grad_()
        z1, z = gen.forward_csr(x, ei, w) if path == "csr" else gen(x, ei, w)
        (z.sin().sum() + z1.cos().sum()).backward()
        out[path] = (z1, z, w.grad, x.grad, gen.conv1.lin.weight.grad.clone(), gen.conv2.lin.weight.grad.clone())
    for a, b in zip(out["csr"], out["messages"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
