import copy

import numpy as np
import pytest
import torch

from lagnh_pyg.config import load_config
from lagnh_pyg.graph import build_graph, normalize_edge_weight, topology_of_graph
from lagnh_pyg.sampling import make_neighbor_loader
from lagnh_pyg.training import SampledSource, Trainer
from lagnh_pyg.training.loop import run_epoch
from lagnh_pyg.training.sampled import (
    BatchFetcher,
    SampledModule,
    sampled_degree,
    sampled_forward,
    sampled_message_scale,
)
from lagnh_pyg.training.sources import sampled_step_of
from lagnh_pyg.training.trainer import graph_step_of

TINY = {
    "graph": {"k": 4},
    "model": {"anchors": 16, "att_dim": 16, "hidden": 24},
    "train": {"g_steps": 2, "lr": 1e-3},
}


def _problem(n=60, d=12, c=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)
    aux = (rng.random((n, c)) < 0.3).astype(np.float32)
    aux[3] = 0  # a node without aux semantics
    return x, aux


def _trainer(cfg, d, c):
    torch.manual_seed(0)
    tr = Trainer(cfg, d, c, 16)
    tr.model.attention.set_anchors(torch.rand(16, c))
    return tr


@pytest.mark.parametrize("normalization", ["gcn", "row"])
def test_sampled_step_equals_full_graph_step(normalization):
    x, aux = _problem()
    cfg = load_config(TINY, [f"model.normalization={normalization}"])
    graph = build_graph(x, aux, k=4)
    full, samp = _trainer(cfg, 12, 6), _trainer(cfg, 12, 6)
    samp.model.load_state_dict(full.model.state_dict())
    samp.disc.load_state_dict(full.disc.state_dict())
    full.model.set_feature_stats(graph.x)
    samp.model.set_feature_stats(graph.x)

    loader = make_neighbor_loader(topology_of_graph(graph), [-1, -1], None, batch_size=graph.num_nodes, shuffle=False)
    fetch = BatchFetcher(x, aux)
    (batch,) = list(loader)
    b = fetch(batch)
    assert b.batch_size == graph.num_nodes and torch.equal(batch.n_id, torch.arange(graph.num_nodes))

    torch.manual_seed(1)
    t_full = full.graph_step(graph)
    torch.manual_seed(1)
    t_samp = samp.step(sampled_step_of(SampledModule(samp.model), b))
    for k in t_full:
        assert t_samp[k] == pytest.approx(t_full[k], rel=1e-5, abs=1e-6), k
    for (name, p), q in zip(full.model.state_dict().items(), samp.model.state_dict().values()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
    for p, q in zip(full.disc.parameters(), samp.disc.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)
    # and the forward passes agree in eval mode
    full.model.eval()
    samp.model.eval()
    with torch.no_grad():
        zf = full.model(graph.x, graph.aux, graph.edge_index, graph.s_a)["z"]
        zs = sampled_forward(samp.model, b.x, b.aux, b.edge_index, b.s_a, b.count)["z"]
    assert torch.allclose(zf, zs, rtol=1e-5, atol=1e-6)


def test_sampled_degree_exact_when_complete_and_scaled_otherwise():
    # node 0 has in-edges from 1, 2 (both sampled); node 1 has 3 in-edges in the full graph,
    # one sampled (from 0); node 2 has 2 in-edges, none sampled, one edge out of it (2->0)
    ei = torch.tensor([[1, 2, 0, 0, 1, 2], [0, 0, 1, 0, 1, 2]])
    w = torch.tensor([0.5, 0.25, 0.4, 2.0, 2.0, 1.0])
    count = torch.tensor([3, 4, 3])
    deg = sampled_degree(ei, w, count, 3)
    assert torch.allclose(deg, torch.tensor([2.0 + 0.75, 2.0 + 3 * 0.4, 1.0 + 2 * 0.25]))
    full_count = torch.tensor([3, 2, 1])  # when every in-edge is present: the plain weighted degree
    _, plain = normalize_edge_weight(ei, w, 3, "gcn")
    assert torch.allclose(sampled_degree(ei, w, full_count, 3), plain)


def test_sampled_message_scale_makes_the_aggregate_unbiased():
    """Node 0 has 4 neighbours in the full graph (count 5 with its self-loop); a uniform sample
    of 2 of them, scaled by 4/2, averages over every possible sample to the full aggregate
    (enumerated, not simulated). Self-loops and completely sampled nodes keep factor 1."""
    import itertools

    rng = np.random.default_rng(0)
    h = torch.from_numpy(rng.standard_normal((5, 3)))
    w = torch.from_numpy(rng.random(5))  # normalised weight of edge j -> 0 (w[0]: the self-loop)
    full = (w[:, None] * h).sum(0)
    count = torch.tensor([5, 1, 1, 1, 1])
    means = []
    for pick in itertools.combinations(range(1, 5), 2):
        src = torch.tensor([0, *pick, 1, 2, 3, 4])
        dst = torch.tensor([0, 0, 0, 1, 2, 3, 4])
        scale = sampled_message_scale(torch.stack([src, dst]), count, 5)
        assert scale.tolist() == [1, 2, 2, 1, 1, 1, 1]
        into0 = dst == 0
        means.append((scale[into0, None].double() * w[src[into0], None] * h[src[into0]]).sum(0))
    assert torch.allclose(torch.stack(means).mean(0), full)
    # every in-edge present: no scaling at all
    ei = torch.tensor([[1, 2, 0, 0, 1, 2], [0, 0, 1, 0, 1, 2]])
    assert torch.equal(sampled_message_scale(ei, torch.tensor([3, 2, 1]), 3), torch.ones(6))


def _first_sampled_batch(seed: int):
    """An eval-mode trainer and the first sampled batch (fan-out 2, 2: below the degrees) of
    an 80-node problem."""
    x, aux = _problem(n=80, seed=seed)
    cfg = load_config(TINY)
    graph = build_graph(x, aux, k=4)
    tr = _trainer(cfg, 12, 6)
    tr.model.set_feature_stats(graph.x)
    tr.model.eval()
    loader = make_neighbor_loader(topology_of_graph(graph), [2, 2], None, batch_size=10, shuffle=False)
    return tr, BatchFetcher(x, aux)(next(iter(loader)))


def test_sampled_forward_scales_the_neighbour_messages():
    """With a fan-out below the degrees, the unbiased forward's normalised edge weights are the
    unscaled forward's times (count-1)/m on each sampled neighbour edge, with the same degree
    estimate; SampledModule and the run's config (train.sampled_unbiased) select the same
    two forwards."""
    from lagnh_pyg.distributed import DistContext
    from lagnh_pyg.training.runner import _sampled_module

    tr, b = _first_sampled_batch(seed=3)
    args = (b.x, b.aux, b.edge_index, b.s_a, b.count)
    with torch.no_grad():
        scaled = sampled_forward(tr.model, *args)
        plain = sampled_forward(tr.model, *args, unbiased=False)
        via_module = {u: _sampled_module(tr, DistContext(), "cpu", u).weighted_graph(*args) for u in (True, False)}
    ei, n = scaled["edge_index"], b.x.shape[0]
    scale = sampled_message_scale(ei, b.count, n)
    assert (scale > 1).any()  # the fan-out does cut some neighbourhoods
    assert torch.allclose(scaled["edge_weight"], (plain["edge_weight"] * scale).to(plain["edge_weight"].dtype))
    assert torch.allclose(scaled["degree"], plain["degree"])  # the degree estimate is unchanged
    assert not torch.allclose(scaled["z"], plain["z"])
    assert torch.equal(via_module[True]["edge_weight"], scaled["edge_weight"])
    assert torch.equal(via_module[False]["edge_weight"], plain["edge_weight"])


def test_sampled_forward_counts_the_in_edges_once(monkeypatch):
    """The degree estimate and the message scale share one count of each node's sampled
    in-edges per forward, and give what each computes on its own."""
    import lagnh_pyg.training.sampled as sampled

    tr, b = _first_sampled_batch(seed=4)
    calls = []
    real = sampled.sampled_in_edges
    monkeypatch.setattr(sampled, "sampled_in_edges", lambda ei, n: calls.append(n) or real(ei, n))
    with torch.no_grad():
        out = sampled_forward(tr.model, b.x, b.aux, b.edge_index, b.s_a, b.count)
        assert len(calls) == 1
        SampledModule(tr.model).weighted_graph(b.x, b.aux, b.edge_index, b.s_a, b.count)
        assert len(calls) == 2
    monkeypatch.setattr(sampled, "sampled_in_edges", real)
    ei, n = out["edge_index"], b.x.shape[0]
    w = torch.rand(ei.shape[1], dtype=torch.float64)
    m_in = real(ei, n)
    assert m_in.tolist() == [float(((ei[1] == i) & (ei[0] != i)).sum()) for i in range(n)]
    assert torch.equal(sampled_degree(ei, w, b.count, n, m_in), sampled_degree(ei, w, b.count, n))
    assert torch.equal(sampled_message_scale(ei, b.count, n, m_in), sampled_message_scale(ei, b.count, n))


def test_sampled_epoch_trains_with_small_fanout():
    x, aux = _problem(n=200, seed=2)
    cfg = load_config(TINY)
    graph = build_graph(x, aux, k=4)
    tr = _trainer(cfg, 12, 6)
    tr.model.set_feature_stats(graph.x)
    fetch = BatchFetcher(x, aux)
    source = SampledSource(SampledModule(tr.model), topology_of_graph(graph), fetch, [3, 2], None, 32, seed=0,
                           max_batches=4)
    loader = source.loader
    before = copy.deepcopy(tr.model.state_dict())
    terms = run_epoch(tr, source)
    assert terms["batches"] == 4 and all(np.isfinite(v) for v in terms.values())
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    # a batch holds its seeds first and only sampled neighbours beyond them
    batch = fetch(next(iter(loader)))
    assert batch.batch_size == 32 and batch.num_nodes <= 32 * (1 + 3 + 3 * 2)
    assert (batch.edge_index[0] == batch.edge_index[1]).sum() == batch.num_nodes  # one self-loop each


def test_batch_fetcher_reads_rows_through_a_map(tmp_path):
    x, aux = _problem(n=20)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    rows = np.arange(20)[::-1].copy()
    from torch_geometric.data import Data

    batch = Data(n_id=torch.tensor([5, 1, 7]), edge_index=torch.tensor([[1], [0]]), s_a=torch.tensor([0.5]),
                 count=torch.tensor([2, 2, 1]), batch_size=1, num_nodes=3)
    b = BatchFetcher(mm, aux, rows)(batch)
    assert np.array_equal(b.x.numpy(), x[rows[[5, 1, 7]]])
    assert np.array_equal(b.aux.numpy(), aux[[5, 1, 7]])
    assert b.edge_index.shape[1] == 4 and b.s_a.shape == (4,)


@pytest.mark.parametrize("g_steps", [None, 1, 3])
def test_sampled_source_runs_its_generator_steps_per_batch(g_steps):
    x, aux = _problem(n=120, seed=3)
    cfg = load_config(TINY)  # train.g_steps = 2: what a step takes when the source sets none
    graph = build_graph(x, aux, k=4)
    tr = _trainer(cfg, 12, 6)
    tr.model.set_feature_stats(graph.x)
    source = SampledSource(SampledModule(tr.model), topology_of_graph(graph), BatchFetcher(x, aux), [3, 2], None, 40,
                           seed=0, g_steps=g_steps)
    run_epoch(tr, source)
    adam_steps = int(tr.opt_g.state[next(tr.model.parameters())]["step"])
    assert adam_steps == 3 * (cfg.train.g_steps if g_steps is None else g_steps)  # 120 seeds / 40 = 3 batches
    assert int(tr.opt_d.state[next(tr.disc.parameters())]["step"]) == 3


def test_sampled_defaults_take_one_generator_step_per_batch():
    cfg = load_config(None)
    assert cfg.train.sampled_g_steps == 1 and cfg.train.g_steps == 5  # the full graph keeps the release's 5


def test_large_graphs_propagate_by_messages_with_the_same_result(monkeypatch):
    """Past CSR_MAX_NODES the GCN passes messages along the edges (the CSR backward would form
    a dense n x n gradient); both paths give the same codes and gradients."""
    import lagnh_pyg.nn.lagnh as lagnh_mod

    x, aux = _problem(n=80, seed=4)
    graph = build_graph(x, aux, k=4)
    tr = _trainer(load_config(TINY), 12, 6)
    tr.model.set_feature_stats(graph.x)
    tr.model.eval()
    results = []
    for limit in (10_000, 10):  # CSR, then messages
        monkeypatch.setattr(lagnh_mod, "CSR_MAX_NODES", limit)
        tr.model.zero_grad()
        z = tr.model(graph.x, graph.aux, graph.edge_index, graph.s_a)["z"]
        z.pow(2).sum().backward()
        results.append((z.detach(), [p.grad.clone() for p in tr.model.parameters() if p.grad is not None]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert len(results[0][1]) == len(results[1][1]) > 0
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_sampled_gcn_computes_only_what_the_seeds_use(monkeypatch):
    """A sampled batch runs the GCN's first layer on the seeds and their first hop only and
    its second on the seeds: the seeds' codes and every gradient are those of the whole
    subgraph's forward."""
    import lagnh_pyg.nn.lagnh as lagnh_mod

    x, aux = _problem(n=300, seed=5)
    graph = build_graph(x, aux, k=4)
    tr = _trainer(load_config(TINY), 12, 6)
    tr.model.set_feature_stats(graph.x)
    tr.model.eval()
    loader = make_neighbor_loader(topology_of_graph(graph), [3, 2], None, batch_size=16, seed=0)
    b = BatchFetcher(x, aux)(next(iter(loader)))
    assert b.rows[1] == 16 < b.rows[0] < b.num_nodes
    results = []
    for limit, rows in ((10_000, None), (10, None), (10_000, b.rows)):  # CSR, messages, trimmed
        monkeypatch.setattr(lagnh_mod, "CSR_MAX_NODES", limit)
        tr.model.zero_grad()
        out = sampled_forward(tr.model, b.x, b.aux, b.edge_index, b.s_a, b.count, rows)
        z = out["z"][:16]
        z.pow(2).sum().backward()
        results.append((z.detach(), [p.grad.clone() for p in tr.model.parameters() if p.grad is not None]))
    assert out["z"].shape[0] == 16 and out["z1"].shape[0] == b.rows[0]
    for z, grads in results[1:]:
        assert torch.allclose(z, results[0][0], atol=1e-5)
        assert len(grads) == len(results[0][1]) > 0
        for a, g in zip(results[0][1], grads):
            assert torch.allclose(a, g, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("sampled", [False, True])
def test_step_runs_the_attention_once_for_its_first_two_passes_with_the_same_result(sampled):
    """A step's no-grad pass and first generator pass share one attention / edge-weight pass
    (Step.split); the parameters after the step are bit for bit those of two whole passes."""
    import dataclasses

    x, aux = _problem(n=200, seed=6)
    cfg = load_config(TINY)  # 2 generator updates: the second recomputes everything
    graph = build_graph(x, aux, k=4)
    if sampled:
        loader = make_neighbor_loader(topology_of_graph(graph), [3, 2], None, batch_size=32, seed=0)
        b = BatchFetcher(x, aux)(next(iter(loader)))
    states = []
    for split in (True, False):
        tr = _trainer(cfg, 12, 6)
        tr.model.set_feature_stats(graph.x)
        step = sampled_step_of(SampledModule(tr.model), b) if sampled else graph_step_of(tr.model, graph)
        assert step.split is not None
        calls = []
        att = tr.model.attentive_features
        tr.model.attentive_features = lambda *a: calls.append(1) or att(*a)
        torch.manual_seed(3)
        tr.step(step if split else dataclasses.replace(step, split=None))
        assert len(calls) == (2 if split else 3)
        states.append({**tr.model.state_dict(), **{f"d.{k}": v for k, v in tr.disc.state_dict().items()}})
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k


@pytest.mark.parametrize("n, sets, want", [
    (2000, [], 3),  # 2 batches of 1,024: 6 updates an epoch, at least the full graph's 5
    (4000, [], 2),
    (5000, [], 1),  # 5 batches: the default's 1 a batch already takes 5
    (50000, [], 1),
    (2000, ["train.sampled_g_steps=4"], 4),  # never below what is asked
    (2000, ["train.sampled_match_full=false"], 1),
    (2000, ["train.max_batches=1"], 1),  # a capped epoch is not a true one
    (300, ["train.g_steps=2"], 2),
])
def test_sampled_mode_takes_at_least_a_full_graph_epochs_generator_updates(n, sets, want):
    from lagnh_pyg.training.runner import sampled_generator_steps

    assert sampled_generator_steps(load_config("demo", ["train.mode=sampled", *sets]), n) == want


def test_a_sampled_run_on_few_seed_batches_takes_the_raised_generator_updates(small_synthetic, tmp_path):
    """400 training nodes in one seed batch of 400 with train.g_steps = 2: two generator updates a
    batch (one discriminator update), so 2 epochs take 4 Adam steps of the generator; 2 without
    the match."""
    from lagnh_pyg.training import train_run

    steps = {}
    for match in ("true", "false"):
        run = train_run(small_synthetic, TINY, 16, tmp_path / match, progress=False,
                        overrides=["train.mode=sampled", "train.seed_batch_size=400", "train.epochs=2",
                                   f"train.sampled_match_full={match}"])
        ck = torch.load(run / "checkpoint.pt", weights_only=True)
        steps[match] = (int(ck["opt_g"]["state"][0]["step"]), int(ck["opt_d"]["state"][0]["step"]))
    assert steps == {"true": (4, 2), "false": (2, 2)}
