"""The neighbours encoding's cache by layer-wise inference (lagnh_pyg/training/encoder_cache.py)
and the neighbours encoding of sampled runs, against whole-graph forwards of the same model."""

import json
import os

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from lagnh_pyg.cache_file import EncoderCacheFile, load_encoder_cache
from lagnh_pyg.data.store import Dataset
from lagnh_pyg.graph import build_graph
from lagnh_pyg.knn import l2_normalize
from lagnh_pyg.nn import LAGNH
from lagnh_pyg.rundir import ENCODER_FILE, Run
from lagnh_pyg.training.encoder_cache import (
    MemoryCache,
    build_encoder_cache,
    cache_shapes,
    graph_edges,
    sampling_topology_for_cache,
)

TINY = {
    "graph": {"k": 5},
    "model": {"anchors": 32, "att_dim": 16, "hidden": 32},
    "train": {"epochs": 2, "lr": 1e-3, "g_steps": 2, "checkpoint_every": 0, "threads": 1, "seed_batch_size": 128},
}


@pytest.fixture(scope="module")
def small(small_synthetic):
    ds = Dataset.open(small_synthetic)
    rows = ds.split("train")
    X, A = ds.feature_rows(rows), ds.aux_rows(rows)
    torch.manual_seed(0)
    model = LAGNH(X.shape[1], A.shape[1], 32, att_dim=16, hidden=32, anchors=32).eval()
    model.attention.set_anchors(torch.from_numpy(A[:32]))
    return ds, X, A, build_graph(X, A, 5), model


def _cache(model, X, A, g, chunk, store=None):
    store = store or MemoryCache(cache_shapes(model, len(X)))
    build_encoder_cache(model, X, A, g.edge_index, g.s_a, g.aux_unit, store, chunk=chunk)
    return store


def test_layerwise_cache_equals_a_whole_graph_forward(small):
    """One chunk: sigma^2, xhat, z1 and degrees bit for bit those of LAGNH.forward on the whole
    graph (what training's cache always was). Chunks of 100 and 7 nodes: the same degrees and
    sigma^2, rows within float rounding (BLAS blocks differently for 7 rows), the same codes."""
    ds, X, A, g, model = small
    model.update_sigma2(model.attentive_features(g.x, g.aux), g.edge_index)
    sigma2 = model.sigma2.clone()
    ref = model(g.x, g.aux, g.edge_index, g.s_a)
    from lagnh_pyg.encode import LagnhEncoder, TrainingNeighbours

    q = ds.split("query")
    Xq, Aq = ds.feature_rows(q), ds.aux_rows(q)
    near = TrainingNeighbours(X, A, 5)
    codes = {}
    for chunk in (16384, 100, 7):
        model.sigma2.fill_(1.0)
        c = _cache(model, X, A, g, chunk).tensors()
        assert torch.equal(model.sigma2, sigma2) and torch.equal(c["degree"], ref["degree"])
        if chunk > len(X):
            assert torch.equal(c["xhat"], ref["xhat"]) and torch.equal(c["z1"], ref["z1"])
        torch.testing.assert_close(c["z1"], ref["z1"], rtol=1e-5, atol=1e-6)
        assert torch.equal(c["aux_unit"], g.aux_unit)
        codes[chunk] = LagnhEncoder(model, "neighbours", near, c).encode(Xq, Aq) > 0
    assert np.array_equal(codes[16384], codes[100]) and np.array_equal(codes[16384], codes[7])


@pytest.mark.parametrize("index", ["flat", "chunked"])
def test_graph_edges_rebuild_the_training_graph_from_its_sampling_topology(small, index):
    _, X, A, g, _ = small
    if index == "chunked":  # the >200k backend (its S^a by a sampled matmul)
        g = build_graph(X, A, 5, index="chunked")
    ei, s_a, au = graph_edges(sampling_topology_for_cache(g))
    assert torch.equal(ei, g.edge_index) and torch.equal(s_a, g.s_a) and au is g.aux_unit


def test_cache_file_is_written_in_blocks_and_loaded_memory_mapped(small, tmp_path):
    """The file store gives the memory store's values; the loader maps the file (it shows in
    /proc/self/maps while the tensors live) and never copies it."""
    _, X, A, g, model = small
    mem = _cache(model, X, A, g, 64).tensors()
    f = EncoderCacheFile(tmp_path, cache_shapes(model, len(X)), ENCODER_FILE)
    _cache(model, X, A, g, 64, f)
    f.commit(tmp_path, "fedcba9876543210")
    assert [p.name for p in tmp_path.iterdir()] == [ENCODER_FILE]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / ENCODER_FILE).stat().st_mode & 0o777 == 0o666 & ~umask
    run = Run(tmp_path, {"model_fingerprint": "fedcba9876543210"})
    got = load_encoder_cache(run, {"xhat", "z1", "degree", "aux_unit"})
    maps = open("/proc/self/maps").read()
    assert str(tmp_path / ENCODER_FILE) in maps
    for k, t in mem.items():
        assert torch.equal(got[k], t), k
    from safetensors.torch import load_file  # and it is a plain safetensors file

    assert torch.equal(load_file(str(tmp_path / ENCODER_FILE))["z1"], mem["z1"])


def _reference_z(model, g, X, A, Xn, An, ids):
    """Independent reference of the neighbours encoding: LAGNH.forward on one graph holding the
    training graph and the new items, each new item with edges from its training neighbours
    ``ids`` and its self-loop (nothing into the training nodes)."""
    n, m = len(X), len(Xn)
    q, col = np.nonzero(ids >= 0)
    t = ids[q, col]
    au, aun = l2_normalize(A), l2_normalize(An)
    new = np.arange(n, n + m)
    src = np.concatenate([g.edge_index[0].numpy(), t, new])
    dst = np.concatenate([g.edge_index[1].numpy(), n + q, new])
    s_a = np.concatenate([g.s_a.numpy(), np.maximum((au[t] * aun[q]).sum(1), 0), (aun * aun).sum(1)])
    ei = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
    with torch.no_grad():
        out = model(torch.from_numpy(np.concatenate([X, Xn])), torch.from_numpy(np.concatenate([A, An])), ei,
                    torch.from_numpy(s_a.astype(np.float32)))
    return out["z"][n:].numpy()


@pytest.mark.parametrize("large", [False, True], ids=["in-memory", "past-EXACT_MAX_NODES"])
def test_sampled_run_encodes_with_neighbours(small_synthetic, tmp_path, monkeypatch, large):
    """`lagnh train --set train.mode=sampled` writes the cache; `lagnh encode` uses the
    neighbours encoding; training items encoded as new items get the codes of a whole-graph
    forward (training graph + them). ``large``: the path of more than EXACT_MAX_NODES training
    nodes (features memory-mapped, graph by the chunked backend, cache from the sampling
    topology, chunked neighbour index), forced on 400 nodes."""
    from lagnh_pyg.cli.main import app
    from lagnh_pyg.encode import load_lagnh_encoder

    if large:
        monkeypatch.setattr("lagnh_pyg.training.runner.EXACT_MAX_NODES", 100)
        monkeypatch.setattr("lagnh_pyg.training.newitems.EXACT_MAX_NODES", 100)
        monkeypatch.setattr("lagnh_pyg.training.encoder_cache.CHUNK", 64)  # several node chunks
        import lagnh_pyg.training.runner as runner

        seen = []
        monkeypatch.setattr(runner, "graph_edges", lambda topo: seen.append(topo) or graph_edges(topo))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "16", "--out",
                                 str(run), "--set", "train.mode=sampled", "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (run / ENCODER_FILE).is_file() and len(seen if large else [0]) == 1
    r = CliRunner().invoke(app, ["encode", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "codes" / "meta.json").read_text())["encoding"] == "neighbours"

    enc = load_lagnh_encoder(Run.open(run))
    ds = Dataset.open(small_synthetic)
    rows = ds.split("train")
    X, A = ds.feature_rows(rows), ds.aux_rows(rows)
    c = enc.model.generator.conv1
    if large:  # the training graph of the chunked backend (seeded: the same graph again)
        g = build_graph(ds.features, A, 5, "both", "chunked", rows=rows, seed=0)
    else:
        g = build_graph(X, A, 5)
    g.x, g.aux = torch.from_numpy(X), torch.from_numpy(A)
    with torch.no_grad():  # the cache is the whole-graph forward's
        full = enc.model(g.x, g.aux, g.edge_index, g.s_a)
    torch.testing.assert_close(enc.cache["z1"], full["z1"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(enc.cache["degree"], full["degree"], rtol=1e-6, atol=1e-6)
    assert c.out_channels == enc.cache["z1"].shape[1]
    pick = np.arange(0, len(X), 7)
    z = enc.encode(X[pick], A[pick])
    ref = _reference_z(enc.model, g, X, A, X[pick], A[pick], enc.training_neighbours(X[pick], A[pick]))
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-5)
    sure = np.abs(ref) > 1e-4  # a sign is only defined away from 0
    assert sure.mean() > 0.99 and np.array_equal((z > 0)[sure], (ref > 0)[sure])
