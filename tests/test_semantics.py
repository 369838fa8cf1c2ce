"""The denoised semantics (graph.semantics: denoised, loss.reconstruct: Sd): the streamed ridge
fit against a dense reference, the diffusion against a dense adjacency, the graph's aux list,
the neighbour rule of new items, the sampled batches' targets, a run end to end."""

import numpy as np
import pytest
import torch

from lagnh_pyg.config import load_config
from lagnh_pyg.nn import LAGNH


def _problem(n=400, d=16, c=6, seed=0):
    """Features whose first columns predict the first aux columns; the last aux column is junk
    (random, unrelated to the features), the one before it noisy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = np.zeros((n, c), np.float32)
    y[:, : c - 2] = (x[:, : c - 2] + 0.3 * rng.standard_normal((n, c - 2)) > 0.5)
    y[:, c - 2] = (x[:, c - 2] + 1.5 * rng.standard_normal(n) > 0.8)
    y[:, c - 1] = rng.random(n) < 0.3
    return x, y


def _model(x, y, visual=0.5):
    return LAGNH(x.shape[1], y.shape[1], 8, att_dim=8, hidden=8, anchors=4, semantics=True, semantic_visual=visual)


def _dense_reference(x, y, ridge):
    """The map by its formulas on dense float64 arrays (no streaming): standardised features,
    ridge on the centred aux, reliability = clipped correlation with the 2-fold (even/odd rows)
    cross-fitted prediction."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    n, d = x.shape
    a = (x - x.mean(0)) / x.std(0, ddof=1)
    lam = ridge * n

    def fit(rows):
        return np.linalg.solve(a[rows].T @ a[rows] + lam * np.eye(d), a[rows].T @ (y[rows] - y[rows].mean(0)))

    w = fit(np.arange(n))
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    p = np.empty_like(y)
    p[even], p[odd] = a[even] @ fit(odd), a[odd] @ fit(even)
    rel = np.array([np.corrcoef(y[:, j], p[:, j])[0, 1] for j in range(y.shape[1])]).clip(0, 1)
    return w, rel


@pytest.mark.parametrize("chunk", [32768, 37])
def test_the_streamed_fit_is_the_dense_formula(chunk, monkeypatch):
    from lagnh_pyg.training import semantics

    monkeypatch.setattr(semantics, "CHUNK", chunk)  # many chunks, a fold split inside each
    x, y = _problem()
    model = _model(x, y)
    info = semantics.fit_semantic_map(model, x, y, None, ridge=0.05)
    w, rel = _dense_reference(x, y, 0.05)
    np.testing.assert_allclose(model.semantic_weight.numpy(), w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.semantic_reliability.numpy(), rel, atol=1e-5)
    assert rel[0] > 0.6 and rel[-1] < 0.15 and rel[-2] < rel[0]  # junk and noisy columns count less
    assert info["rows"] == 400 and info["columns"] == 6


def test_the_fit_reads_training_rows_of_a_memory_map(tmp_path):
    from lagnh_pyg.training.semantics import fit_semantic_map, semantic_rows

    x, y = _problem()
    big = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32, (800, x.shape[1]))
    big[::2] = x
    big.flush()
    rows = np.arange(0, 800, 2)
    a, b = _model(x, y), _model(x, y)
    fit_semantic_map(a, x, y, None, 0.01)
    fit_semantic_map(b, np.load(tmp_path / "f.npy", mmap_mode="r"), y, rows, 0.01)
    for k, v in a.state_dict().items():
        if k.startswith("semantic"):
            torch.testing.assert_close(v, b.state_dict()[k])
    s = semantic_rows(b, np.load(tmp_path / "f.npy", mmap_mode="r"), y, rows)
    np.testing.assert_allclose(s, a.semantic(torch.from_numpy(x), torch.from_numpy(y)).numpy(), atol=1e-6)


def test_semantic_vectors_by_their_formula():
    from lagnh_pyg.training.semantics import fit_semantic_map

    x, y = _problem()
    model = _model(x, y, visual=0.7)
    fit_semantic_map(model, x, y, None, 0.01)
    s = model.semantic(torch.from_numpy(x), torch.from_numpy(y)).double().numpy()

    def l2n(v):
        nv = np.linalg.norm(v, axis=1, keepdims=True)
        return np.divide(v, nv, out=np.zeros_like(v), where=nv > 0)

    sd = {k: v.double().numpy() for k, v in model.state_dict().items() if k.startswith("semantic")}
    p = ((x - sd["semantic_mean"]) / sd["semantic_std"]) @ sd["semantic_weight"]
    ref = l2n(0.7 * l2n(p) + l2n(y * sd["semantic_reliability"]))
    np.testing.assert_allclose(s, ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5)  # an item without aux still has semantics
    assert (y.sum(1) == 0).any()


def test_diffusion_is_the_dense_neighbour_mean():
    from lagnh_pyg.graph import build_graph, diffuse

    x, y = _problem(n=120)
    g = build_graph(x, y, 5)
    s = torch.nn.functional.normalize(torch.from_numpy(np.random.default_rng(1).standard_normal((120, 6))), dim=1)
    adj = torch.zeros(120, 120, dtype=torch.float64)
    src, dst = g.edge_index
    adj[dst, src] = 1.0
    adj.fill_diagonal_(0)
    around = torch.nn.functional.normalize(adj @ s, dim=1)
    ref = torch.nn.functional.normalize(s + 0.8 * around, dim=1)
    torch.testing.assert_close(diffuse(s, g.edge_index, 0.8), ref)
    torch.testing.assert_close(diffuse(s, g.edge_index, 0.0), s)


def test_the_aux_list_follows_the_given_vectors_and_weights_stay_raw():
    from lagnh_pyg.graph import build_graph, edge_aux_similarity

    x, y = _problem(n=150)
    other = np.random.default_rng(3).random((150, 6)).astype(np.float32)
    g = build_graph(x, y, 4, "aux", aux_knn=other)
    unit = other / np.linalg.norm(other, axis=1, keepdims=True)
    top = np.argsort(-(unit @ unit.T), axis=1, kind="stable")[:, :4]
    src, dst = g.edge_index.numpy()
    for i in range(150):
        assert set(top[i]) <= set(src[dst == i])  # i's kNN by the given vectors, symmetrised
    torch.testing.assert_close(g.s_a, edge_aux_similarity(g.aux_unit, g.edge_index))  # S^a: the raw aux


def test_new_items_link_by_their_semantics_as_the_training_graph_did():
    """Queried as a new item, a training item finds the aux neighbours its training node has
    in the graph built on the same semantics."""
    from lagnh_pyg.encode import TrainingNeighbours
    from lagnh_pyg.graph import build_graph
    from lagnh_pyg.training.semantics import fit_semantic_map, semantic_rows

    x, y = _problem(n=300)
    model = _model(x, y)
    fit_semantic_map(model, x, y, None, 0.01)
    s = semantic_rows(model, x, y, None)
    near = TrainingNeighbours(x, y, 5, "aux", semantic=model)
    got = near(x[:30], y[:30])
    g = build_graph(x, y, 5, "aux", aux_knn=s)
    src, dst = g.edge_index.numpy()
    for i in range(30):
        mine = {int(j) for j in got[i] if j >= 0}
        assert i in mine and mine <= set(src[dst == i])  # its own kNN list, within its graph edges
    plain = TrainingNeighbours(x, y, 5, "aux")(x[:30], y[:30])
    assert not np.array_equal(plain, got)  # the raw aux ranks otherwise


def test_config_resolution_of_the_semantics():
    from lagnh_pyg.config import uses_semantics

    cfg = load_config("demo")
    assert cfg.graph.semantics == "denoised" and cfg.loss.reconstruct == "Sd" and uses_semantics(cfg)
    faithful = load_config("demo", ["train.mode=faithful"])
    assert faithful.graph.semantics == "raw" and faithful.loss.reconstruct == "Sa" and not uses_semantics(faithful)
    paper = load_config("demo", ["variant=paper-graph"])
    assert not uses_semantics(paper)
    assert load_config("demo", ["variant=recons-Sa"]).loss.reconstruct == "Sa"
    assert not uses_semantics(load_config("demo", ["variant=no-aux"]))
    assert not uses_semantics(load_config())  # the dataclass defaults: the paper's method


def test_sampled_batches_carry_their_seeds_targets():
    from torch_geometric.data import Data

    from lagnh_pyg.training.sampled import BatchFetcher

    x, y = _problem(n=20)
    target = torch.nn.functional.normalize(torch.rand(20, 6), dim=1)
    batch = Data(n_id=torch.tensor([5, 1, 7]), edge_index=torch.tensor([[1], [0]]), s_a=torch.tensor([0.5]),
                 count=torch.tensor([2, 2, 1]), batch_size=2, num_nodes=3)
    b = BatchFetcher(x, y, target=target)(batch)
    torch.testing.assert_close(b.target_unit, target[[5, 1]])


@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_a_denoised_run_trains_encodes_and_reloads(mode, small_synthetic, tmp_path):
    """lagnh train with the denoised semantics, full and sampled: the checkpoint carries the fitted
    map, and a reloaded run's neighbours encoding links new items by it and gives finite outputs."""
    import copy

    from helpers import TINY_LAGNH

    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.encode import load_lagnh_encoder
    from lagnh_pyg.rundir import Run
    from lagnh_pyg.training import train_run

    cfg = copy.deepcopy(TINY_LAGNH)
    cfg["graph"].update(semantics="denoised")
    cfg["loss"] = {"reconstruct": "Sd"}
    out = train_run(small_synthetic, cfg, 16, tmp_path / "run", overrides=[f"train.mode={mode}"], progress=False)
    enc = load_lagnh_encoder(Run.open(out))
    assert enc.model.has_semantics and float(enc.model.semantic_weight.abs().sum()) > 0
    assert enc.training_neighbours.semantic is enc.model
    ds = Dataset.open(small_synthetic)
    q = ds.split("query")[:20]
    z = enc.encode(ds.feature_rows(q), ds.aux_rows(q))
    assert z.shape == (20, 16) and np.isfinite(z).all()
