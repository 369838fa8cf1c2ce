import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lagnh_pyg.data.store import Dataset, write_dataset
from lagnh_pyg.encode import load_lagnh_encoder
from lagnh_pyg.errors import InputError
from lagnh_pyg.rundir import Run
from lagnh_pyg.training import train_run

TINY = {
    "graph": {"k": 5},
    "model": {"anchors": 32, "att_dim": 16, "hidden": 32},
    "train": {"epochs": 3, "lr": 1e-3, "g_steps": 2, "checkpoint_every": 0, "threads": 1},
    "encode": {"k": 5},
}


@pytest.fixture(scope="module")
def run_dir(small_synthetic, tmp_path_factory):
    return train_run(small_synthetic, TINY, 32, tmp_path_factory.mktemp("enc") / "run", progress=False)


def test_one_image_one_code(small_synthetic, run_dir):
    """A query encoded alone is bit-identical to it encoded among 1,000 others."""
    ds = Dataset.open(small_synthetic)
    enc = load_lagnh_encoder(Run.open(run_dir))
    assert enc.batch_independent
    X, A = ds.feature_rows(np.arange(1001)), ds.aux_rows(np.arange(1001))
    together = enc.encode(X, A) > 0
    for i in (0, 17, 1000):
        alone = enc.encode(X[i : i + 1], A[i : i + 1]) > 0
        assert np.array_equal(alone[0], together[i])
    # order does not matter either
    perm = np.random.default_rng(0).permutation(1001)
    assert np.array_equal(enc.encode(X[perm], A[perm]) > 0, together[perm])


def test_training_nodes_are_not_changed_by_new_items(small_synthetic, run_dir):
    """Edges go into new nodes only: a new item links to training nodes, never the reverse."""
    enc = load_lagnh_encoder(Run.open(run_dir))
    ds = Dataset.open(small_synthetic)
    q = ds.split("query")
    X, A = ds.feature_rows(q), ds.aux_rows(q)
    new, ids, w = enc.neighbours(X, A, enc.model.attentive_features(*_t(X, A)), _unit(A))
    per_item = np.bincount(new.numpy(), minlength=len(q))
    assert (per_item >= 5).all() and (per_item <= 10).all() and (w > 0).all()  # graph.k = 5 per source
    before = enc.cache["z1"].clone()
    enc.encode(ds.feature_rows(q), ds.aux_rows(q))
    assert (enc.cache["z1"] == before).all()


def _t(x, a):
    import torch

    return torch.from_numpy(x), torch.from_numpy(a)


def _unit(a):
    import torch
    import torch.nn.functional as F

    return F.normalize(torch.from_numpy(a), dim=1)


def test_encodings_and_zero_aux(small_synthetic, run_dir):
    ds = Dataset.open(small_synthetic)
    X = ds.feature_rows(np.arange(300))
    A = np.zeros((300, ds.aux_dim), np.float32)  # no aux at all: no NaN anywhere
    for mode in ("neighbours", "self", "faithful"):
        enc = load_lagnh_encoder(Run.open(run_dir), encoding=mode)
        z = enc.encode(X, A)
        assert z.shape == (300, 32) and np.isfinite(z).all()
    assert load_lagnh_encoder(Run.open(run_dir), encoding="faithful").encode_chunk_multiple == 256
    with pytest.raises(InputError, match="encoding"):
        load_lagnh_encoder(Run.open(run_dir), encoding="knn")
    with pytest.raises(InputError, match="expects"):
        load_lagnh_encoder(Run.open(run_dir)).encode(X[:, :10], A)


def test_cli_encode(small_synthetic, run_dir, tmp_path):
    from lagnh_pyg.cli.main import app

    r = CliRunner().invoke(app, ["encode", str(run_dir), "--encoding", "self"])
    assert r.exit_code == 0, r.output
    meta = json.loads((run_dir / "codes" / "meta.json").read_text())
    ds = Dataset.open(small_synthetic)
    assert meta["encoding"] == "self"
    assert meta["splits"] == {"query": len(ds.split("query")), "database": len(ds.split("database"))}
    r = CliRunner().invoke(app, ["encode", str(run_dir)])
    assert r.exit_code == 0 and json.loads((run_dir / "codes" / "meta.json").read_text())["encoding"] == "neighbours"
    codes = np.load(run_dir / "codes" / "query.npy")
    assert codes.dtype == np.uint8 and codes.shape == (100, 4)
    # a dataset of another feature dimension: one line, exit 2
    rng = np.random.default_rng(0)
    other = write_dataset(tmp_path / "other", rng.random((20, 10), dtype=np.float32),
                          np.zeros((20, Dataset.open(small_synthetic).aux_dim), np.float32),
                          splits={"train": np.arange(10), "query": np.arange(10, 15), "database": np.arange(15, 20)})
    r = CliRunner().invoke(app, ["encode", str(run_dir), "--data", str(other)])
    assert r.exit_code == 2 and "expects 64-d" in r.output


def test_tampered_model_file(small_synthetic, run_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with open(copy / "checkpoint.pt", "ab") as f:
        f.write(b"junk")
    with pytest.raises(InputError, match="changed after"):
        load_lagnh_encoder(Run.open(copy))


def _brute_topk(base, queries, k, positive=False):
    """Reference: exact cosine top-k per query (numpy), optionally positive similarities only."""
    def unit(a):
        n = np.linalg.norm(a, axis=1, keepdims=True)
        return np.divide(a, n, out=np.zeros_like(a), where=n > 0)

    s = unit(queries).astype(np.float64) @ unit(base).astype(np.float64).T
    out = []
    for row in s:
        top = np.argsort(-row, kind="stable")[:k]
        out.append({int(j) for j in top if not positive or row[j] > 0})
    return out


@pytest.mark.parametrize("index", ["auto", "ivf"])
@pytest.mark.parametrize("sources", ["both", "visual", "aux"])
def test_training_neighbours_follow_the_training_graph_rule(sources, index, tmp_path):
    """A new item's training neighbours: its k visual (cosine) ∪ its k aux (positive cosine) nearest,
    the rule build_graph gives every training node; checked against brute force. ``ivf``: the
    large-N path (chunked IVF over a memory map of which the training rows are a subset, the
    candidates re-ranked from the map), searching every list here, so it must be exact too."""
    from lagnh_pyg.encode import TrainingNeighbours

    rng = np.random.default_rng(0)
    X, Xq = rng.random((300, 12), dtype=np.float32), rng.random((40, 12), dtype=np.float32)
    A = (rng.random((300, 8)) < 0.3).astype(np.float32) * rng.random((300, 8), dtype=np.float32)
    Aq = (rng.random((40, 8)) < 0.3).astype(np.float32) * rng.random((40, 8), dtype=np.float32)
    A[:5] = 0
    Aq[0] = 0  # no aux: visual neighbours only
    if index == "auto":
        got = TrainingNeighbours(X, A, 6, sources)(Xq, Aq)
    else:  # the training rows are every other row of a memory-mapped array
        big = np.lib.format.open_memmap(tmp_path / "f.npy", "w+", np.float32, (600, 12))
        big[1::2] = X
        big.flush()
        rows = np.arange(1, 600, 2)
        got = TrainingNeighbours(np.load(tmp_path / "f.npy", mmap_mode="r"), A, 6, sources, "ivf", rows=rows)(Xq, Aq)
    vis = _brute_topk(X, Xq, 6) if sources != "aux" else [set()] * 40
    has = np.flatnonzero(A.sum(1) > 0)
    aux = ([{int(has[j]) for j in s} for s in _brute_topk(A[has], Aq, 6, positive=True)]
           if sources != "visual" else [set()] * 40)
    for i in range(40):
        row = [int(j) for j in got[i] if j >= 0]
        assert len(row) == len(set(row)) and set(row) == vis[i] | aux[i]
    assert sources == "visual" or not aux[0]
