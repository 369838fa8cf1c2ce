"""The offline demo dataset: Fashion-MNIST loading, mosaic construction, pools, detector, build, cache, CLI."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("timm")

from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import Dataset
from lagnh_pyg.demo import fashion_mnist as mosaic
from lagnh_pyg.demo.build import build_demo
from lagnh_pyg.demo.detector import TileDetector
from lagnh_pyg.demo.fashion_mnist import CLASSES, load_fashion_mnist
from lagnh_pyg.demo.mosaics import DemoSpec, compose, render
from lagnh_pyg.errors import InputError

runner = CliRunner()


def _write_idx(path, array, gz=True):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_items(n, rng):
    """28x28 'items' whose class is readable from pixels: a bright bar at a class-specific row."""
    y = rng.integers(0, 10, size=n).astype(np.uint8)
    x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 250
    return x, y


@pytest.fixture(scope="module")
def fake_fmnist(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    tr_x, tr_y = _fake_items(1200, rng)
    te_x, te_y = _fake_items(300, rng)
    _write_idx(root / "train-images-idx3-ubyte", tr_x)
    _write_idx(root / "train-labels-idx1-ubyte", tr_y)
    _write_idx(root / "t10k-images-idx3-ubyte", te_x, gz=False)  # plain IDX works too
    _write_idx(root / "t10k-labels-idx1-ubyte", te_y, gz=False)
    return root


def test_load_fashion_mnist(fake_fmnist, tmp_path, monkeypatch):
    tr_x, _, _, te_y = load_fashion_mnist(fake_fmnist)
    assert tr_x.shape == (1200, 28, 28) and te_y.shape == (300,) and tr_x.dtype == np.uint8
    with pytest.raises(InputError, match="does not hold the four Fashion-MNIST"):
        load_fashion_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"garbage!" * 4)
    with pytest.raises(InputError, match="not an IDX file"):
        mosaic._read_idx(tmp_path / "train-images-idx3-ubyte")
    # nothing installed and no download root: the message says how to install it offline
    monkeypatch.setattr(mosaic, "SYSTEM_DIRS", ())
    monkeypatch.delenv("LAGNH_FASHION_MNIST", raising=False)
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(None, download_root=None)


def test_compose_pools_labels_and_splits(fake_fmnist):
    tr_x, tr_y, te_x, te_y = load_fashion_mnist(fake_fmnist)
    spec = DemoSpec(n_train=60, n_query=40, n_database=300, detector_pool=200, seed=3)
    m = compose(spec, tr_y, te_y)
    n = 400
    assert m.tiles.shape == (n, 4) and m.labels.shape == (n, 10)
    counts = (m.tiles >= 0).sum(1)
    assert counts.min() == 1 and counts.max() == 4 and set(np.unique(counts)) == {1, 2, 3, 4}
    # ground truth = the set of the items' classes
    for i in range(n):
        ys = te_y if m.from_test[i] else tr_y
        classes = {int(ys[t]) for t in m.tiles[i] if t >= 0}
        assert set(np.flatnonzero(m.labels[i])) == classes
    # queries use test-file items only, each once; other mosaics never touch the detector's pool
    q = m.splits["query"]
    assert m.from_test[q].all() and not m.from_test[np.setdiff1d(np.arange(n), q)].any()
    qt = m.tiles[q][m.tiles[q] >= 0]
    assert len(np.unique(qt)) == len(qt)
    other = m.tiles[~m.from_test]
    assert not np.isin(other[other >= 0], m.detector_items).any()
    assert len(m.splits["train"]) == 60 and len(m.splits["database"]) == 300
    assert not np.intersect1d(m.splits["train"], m.splits["database"]).size
    assert not np.intersect1d(q, m.splits["database"]).size
    # rendering: quadrants hold the items, empty quadrants are black
    img = render(m, tr_x, te_x, np.arange(5))
    for i in range(5):
        for qd in range(4):
            r, c = divmod(qd, 2)
            block = img[i, r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28]
            t = m.tiles[i, qd]
            np.testing.assert_array_equal(block, 0 if t < 0 else (te_x if m.from_test[i] else tr_x)[t])
    inside = compose(DemoSpec(n_train=60, n_query=40, n_database=300, detector_pool=200, train_in_database=True), tr_y, te_y)
    assert np.isin(inside.splits["train"], inside.splits["database"]).all() and len(inside.splits["database"]) == 300


def test_tile_detector_learns(fake_fmnist):
    tr_x, tr_y, _, _ = load_fashion_mnist(fake_fmnist)
    det = TileDetector(seed=0).fit(tr_x[:800], tr_y[:800], epochs=8, batch=128)
    acc = (det.scores(tr_x[800:]).argmax(1) == tr_y[800:]).mean()
    assert acc > 0.9
    blank = np.zeros((1, 56, 56), dtype=np.uint8)
    assert det.detect(blank).sum() == 0  # no proposal in an all-black mosaic


def test_build_demo_tiny_and_cache(fake_fmnist, tmp_path):
    spec = DemoSpec(n_train=50, n_query=20, n_database=100, detector_pool=200, image_size=32)
    out = tmp_path / "demo"
    res = build_demo(spec, out, fashion_mnist_dir=fake_fmnist, cache_dir=tmp_path / "cache")
    assert not res["cached"] and res["n_items"] == 170 and res["feature_dim"] == 1280
    ds = Dataset.open(out)
    assert ds.n == 170 and ds.aux_dim == 10 and ds.label_dim == 10
    assert [len(ds.split(s)) for s in ("train", "query", "database")] == [50, 20, 100]
    aux = np.asarray(ds.aux)
    assert set(np.unique(aux)) <= {0.0, 1.0}
    # the detector sees the fake classes well: aux agrees with the labels
    labels = np.asarray(ds.labels)
    assert (aux * labels).sum() / labels.sum() > 0.8
    paths = ds.paths
    assert len(paths) == 170 and all(p.endswith(".png") for p in paths)
    from PIL import Image

    assert Image.open(paths[0]).size == (56, 56)
    assert (out / "aux_scores.npy").is_file()
    assert ds.manifest["provenance"]["demo_spec"]["n_train"] == 50
    # same spec: reused; features come from the cache when the dataset is rebuilt
    assert build_demo(spec, out, fashion_mnist_dir=fake_fmnist, cache_dir=tmp_path / "cache")["cached"]
    feats = ds.feature_rows()
    tags = DemoSpec(**{**spec.__dict__, "aux": "tags", "junk_tags": 4})
    res2 = build_demo(tags, tmp_path / "demo-tags", fashion_mnist_dir=fake_fmnist, cache_dir=tmp_path / "cache")
    ds2 = Dataset.open(tmp_path / "demo-tags")
    assert ds2.aux_dim == 14 and res2["aux_dim"] == 14
    np.testing.assert_array_equal(ds2.feature_rows(), feats)
    with pytest.raises(InputError, match="already exists"):
        build_demo(DemoSpec(n_train=51, n_query=20, n_database=100, detector_pool=200, image_size=32), out,
                   fashion_mnist_dir=fake_fmnist, cache_dir=tmp_path / "cache")


def test_spec_validation():
    for kw, match in [({"aux": "boxes"}, "--aux"), ({"detector_threshold": 1.0}, "threshold"),
                      ({"tag_drop": 2.0}, "probability"), ({"n_query": 0}, "--n-query")]:
        with pytest.raises(InputError, match=match):
            DemoSpec(**kw).validate()
    assert len(CLASSES) == 10


def test_cli_data_demo(fake_fmnist, tmp_path):
    args = ["data", "demo", "--out", str(tmp_path / "d"), "--n-train", "30", "--n-query", "10", "--n-database", "40",
            "--detector-pool", "200", "--image-size", "32", "--fashion-mnist-dir", str(fake_fmnist),
            "--cache-dir", str(tmp_path / "c"), "--no-images"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "wrote demo dataset" in r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "cached" in r.output
    r = runner.invoke(app, ["data", "demo", "--out", str(tmp_path / "e"), "--fashion-mnist-dir", str(tmp_path)])
    assert r.exit_code == 2 and "Fashion-MNIST" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["data", "demo", "--out", str(tmp_path / "e"), "--detector-threshold", "0"])
    assert r.exit_code == 2 and "threshold" in r.output


def test_extra_train_keeps_every_other_mosaic(fake_fmnist):
    train_x, train_y, test_x, test_y = load_fashion_mnist(fake_fmnist)
    base = DemoSpec(n_train=40, n_query=10, n_database=60, detector_pool=200)
    m0 = compose(base, train_y, test_y)
    m1 = compose(DemoSpec(**{**base.__dict__, "extra_train": 25}), train_y, test_y)
    m2 = compose(DemoSpec(**{**base.__dict__, "extra_train": 7}), train_y, test_y)
    n0 = len(m0.tiles)
    np.testing.assert_array_equal(m1.tiles[:n0], m0.tiles)
    np.testing.assert_array_equal(m1.labels[:n0], m0.labels)
    for split in ("query", "database"):
        np.testing.assert_array_equal(m1.splits[split], m0.splits[split])
    np.testing.assert_array_equal(m1.splits["train"], np.concatenate([m0.splits["train"], np.arange(n0, n0 + 25)]))
    assert m1.ids[:n0] == m0.ids and m1.ids[n0] == "train-00040" and len(set(m1.ids)) == len(m1.ids)
    np.testing.assert_array_equal(m2.tiles, m1.tiles[: n0 + 7])  # a smaller extra set is a prefix
    extra = m1.tiles[n0:]
    assert ((extra >= 0).sum(1) >= 1).all() and not m1.from_test[n0:].any()
    assert not np.isin(extra[extra >= 0], m1.detector_items).any()  # never a detector item
    img = render(m1, train_x, test_x, rows=np.arange(n0, n0 + 25))
    assert img.shape == (25, 56, 56)


def test_build_demo_extra_train_reuses_base(fake_fmnist, tmp_path):
    spec = DemoSpec(n_train=30, n_query=10, n_database=40, detector_pool=200, image_size=32, aux="tags")
    build_demo(spec, tmp_path / "a", fashion_mnist_dir=fake_fmnist, cache_dir=tmp_path / "c", write_images=False)
    big = DemoSpec(**{**spec.__dict__, "extra_train": 12})
    logs = []
    build_demo(big, tmp_path / "b", fashion_mnist_dir=fake_fmnist, cache_dir=tmp_path / "c", write_images=False,
               log=logs.append)
    assert any("reused cache" in m for m in logs)  # the base mosaics' features were not recomputed
    a, b = Dataset.open(tmp_path / "a"), Dataset.open(tmp_path / "b")
    assert len(b.split("train")) == 42 and b.n == a.n + 12
    for split in ("query", "database"):
        np.testing.assert_array_equal(b.split(split), a.split(split))
        rows = a.split(split)
        np.testing.assert_array_equal(b.feature_rows(rows), a.feature_rows(rows))
        np.testing.assert_array_equal(b.aux_rows(rows), a.aux_rows(rows))
        np.testing.assert_array_equal(b.label_rows(rows), a.label_rows(rows))
    np.testing.assert_array_equal(b.feature_rows(a.split("train")), a.feature_rows(a.split("train")))
    # an older manifest without the field still counts as the same (default) spec
    assert build_demo(spec, tmp_path / "a", fashion_mnist_dir=fake_fmnist, cache_dir=tmp_path / "c")["cached"]


def test_cli_data_demo_views(fake_fmnist, tmp_path):
    """--views K stores K augmented renderings of each training mosaic (only those), cached."""
    args = ["data", "demo", "--out", str(tmp_path / "d"), "--n-train", "20", "--n-query", "10", "--n-database", "30",
            "--detector-pool", "200", "--image-size", "32", "--fashion-mnist-dir", str(fake_fmnist),
            "--cache-dir", str(tmp_path / "c"), "--no-images", "--views", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    ds = Dataset.open(tmp_path / "d")
    train = ds.split("train")
    np.testing.assert_array_equal(ds.views_index(), np.sort(train))
    v = ds.views_of(train)
    assert v.shape == (20, 2, 1280) and ds.manifest["views"]["recipe"]["rotation_degrees"] == [-10, 10]
    assert not np.allclose(v[:, 0], ds.feature_rows(train), atol=1e-2)  # augmented, not copies
    assert runner.invoke(app, args).output.count("cached") == 1  # same options: reused
    # a build without views at the same place is a different dataset
    r = runner.invoke(app, args[:-2])
    assert r.exit_code == 2 and "already exists" in r.stderr
    r = runner.invoke(app, args[:-1] + ["-1"])
    assert r.exit_code == 2 and "--views must be 0" in r.stderr
