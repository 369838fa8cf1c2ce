"""Augmented views from images: `lagnh extract features --views K` and `lagnh data add-views`."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import Dataset, write_dataset
from lagnh_pyg.errors import InputError

runner = CliRunner()


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, size=(40 + i, 36, 3), dtype=np.uint8)).save(root / f"p{i}.png")
    return root


def _extract(photos, out, views=2, shard_size=4):
    args = ["extract", "features", str(photos), "--backbone", "efficientnet_lite0", "--weights", "none",
            "--image-size", "32", "--workers", "0", "--shard-size", str(shard_size), "--out", str(out)]
    return runner.invoke(app, args + (["--views", str(views)] if views is not None else []))


def test_extract_views_then_add_views_round_trip(photos, tmp_path):
    res = _extract(photos, tmp_path / "ext")
    assert res.exit_code == 0, res.output
    assert "augmented views" in res.output
    man = json.loads((tmp_path / "ext" / "manifest.json").read_text())
    assert man["views"]["k"] == 2 and man["views"]["dtype"] == "float16"
    feats = np.load(tmp_path / "ext" / "features.npy")
    views = np.load(tmp_path / "ext" / "views.npy")
    assert views.shape == (6, 2, feats.shape[1]) and views.dtype == np.float16
    assert not np.allclose(views[:, 0], feats, atol=1e-3) and not np.allclose(views[:, 0], views[:, 1], atol=1e-3)
    # seeded per shard: another run (other shard size) gives the first shard's views again
    assert _extract(photos, tmp_path / "ext2", shard_size=4).exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "ext2" / "views.npy"), views)

    ids = (tmp_path / "ext" / "ids.txt").read_text().splitlines()
    data = write_dataset(tmp_path / "data", feats, np.zeros((6, 1), np.float32), ids=ids,
                         splits={"train": [4, 1, 2], "query": [0], "database": [3, 5]})
    res = runner.invoke(app, ["data", "add-views", str(data), str(tmp_path / "ext"), "--out", str(tmp_path / "dv")])
    assert res.exit_code == 0, res.output
    ds = Dataset.open(tmp_path / "dv")
    assert ds.manifest["version"] == 2 and ds.has_views and not ds.verify()
    np.testing.assert_array_equal(ds.views_of([4, 1]), views[[4, 1]].astype(np.float32))
    np.testing.assert_array_equal(ds.feature_rows(), feats)
    assert not Dataset.open(data).has_views  # the source dataset is untouched


def test_add_views_bad_inputs(photos, tmp_path):
    assert _extract(photos, tmp_path / "plain", views=None).exit_code == 0
    feats = np.load(tmp_path / "plain" / "features.npy")
    data = write_dataset(tmp_path / "data", feats, np.zeros((6, 1), np.float32),
                         splits={"train": [0, 1], "query": [2], "database": [3]})
    res = runner.invoke(app, ["data", "add-views", str(data), str(tmp_path / "plain"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "has no views" in res.stderr
    assert _extract(photos, tmp_path / "ext").exit_code == 0
    # dataset ids 0..5 are not the extraction's file names
    res = runner.invoke(app, ["data", "add-views", str(data), str(tmp_path / "ext"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "have no views in" in res.stderr and not (tmp_path / "o").exists()
    res = _extract(photos, tmp_path / "neg", views=-1)
    assert res.exit_code == 2 and "--views must be 0" in res.stderr
    with pytest.raises(InputError, match="no stored views"):
        Dataset.open(data).views_of([0])
