"""The public Python API (lagnh_pyg.estimators): the estimators are the command line's fitting
and encoding, so each side reads what the other wrote and both give the same codes."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_LAGNH
from typer.testing import CliRunner

import lagnh_pyg
from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import Dataset
from lagnh_pyg.encoders import encode_splits
from lagnh_pyg.errors import InputError
from lagnh_pyg.rundir import Run

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def train_rows(ds):
    rows = ds.split("train")
    return ds.feature_rows(rows), ds.aux_rows(rows)


def cli_codes(run_dir, out):
    """The codes ``lagnh encode`` writes for a run: {split: packed codes}."""
    return {s: np.load(p) for s, p in encode_splits(Run.open(run_dir), ["query", "database"], out_dir=out).items()}


def test_the_public_names_import_lazily():
    names = ["LAGNH", "ITQ", "LSH", "PCAH", "SH", "SKLSH", "SGH", "UHBDNN", "DeepBit", "SSDH", "SADH", "TBH",
             "CIBHash", "BiHalf", "HammingIndex"]
    code = ("import sys, lagnh_pyg\n"
            "assert 'torch' not in sys.modules and 'lagnh_pyg.estimators' not in sys.modules, 'imported eagerly'\n"
            f"from lagnh_pyg import {', '.join(names)}\n"
            "print(lagnh_pyg.__version__)\n")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    from lagnh_pyg.version import __version__

    assert res.stdout.strip() == __version__
    assert set(names) <= set(lagnh_pyg.__all__) and set(names) <= set(dir(lagnh_pyg))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lagnh_pyg.Nope  # noqa: B018


def test_python_m_runs_the_command_line():
    res = subprocess.run([sys.executable, "-m", "lagnh_pyg", "--help"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "index-folder" in res.stdout


# -- the baselines ---------------------------------------------------------------------------------
def test_baseline_defaults_are_the_command_lines():
    """Each keyword's default is the one `lagnh baseline` uses: the declaration, over which the
    shipped config (configs/baselines/NAME.yaml) wins."""
    from lagnh_pyg import baselines as B
    from lagnh_pyg.estimators import DEEP, ITQ, SHALLOW

    assert ITQ().get_params() == {"bits": 32, "iterations": 50, "pca": "auto", "inputs": "visual", "aux_weight": 1.0,
                                  "seed": 0}
    for est in (*SHALLOW, *DEEP):
        shipped, _ = B.load_params(est.method)
        params = est().get_params()
        for p in (*est.baseline.params, *B.INPUT_PARAMS):
            assert params.pop(p.name) == shipped.get(p.name, p.default), (est.method, p.name)
        assert params == {"bits": 32, "seed": 0, **({"device": "auto"} if est in DEEP else {})}
    assert repr(ITQ(bits=16, iterations=3)) == "ITQ(bits=16, iterations=3)"


def test_a_shipped_baseline_config_sets_the_estimators_default(monkeypatch):
    from lagnh_pyg import baselines as B
    from lagnh_pyg.estimators.baselines import _estimator

    monkeypatch.setattr(B, "load_params", lambda name, config=None: ({"epochs": 3}, "cibhash.yaml"))
    assert _estimator(B.CIBHash)().epochs == 3 and _estimator(B.CIBHash)().temperature == 0.3


def test_itq_on_a_dataset_or_on_arrays_is_lagnh_baseline(small_synthetic, tmp_path):
    from lagnh_pyg import ITQ

    ds = Dataset.open(small_synthetic)
    r = runner.invoke(app, ["baseline", "itq", str(small_synthetic), "--bits", "16", "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    ref = cli_codes(tmp_path / "cli", tmp_path / "cli-codes")

    on_dir = ITQ(bits=16).fit(small_synthetic)
    codes = on_dir.encode(small_synthetic)  # every item, in row order
    assert codes.dtype == np.uint8 and codes.shape == (ds.n, 2)
    for split, packed in ref.items():
        np.testing.assert_array_equal(codes[ds.split(split)], packed)
    X, _ = train_rows(ds)
    on_arrays = ITQ(bits=16).fit(X)
    np.testing.assert_array_equal(on_arrays.encode(ds.feature_rows()), codes)
    loaded = ITQ.load(tmp_path / "cli")
    assert loaded.get_params() == on_dir.get_params()
    np.testing.assert_array_equal(loaded.encode(ds.feature_rows()), codes)
    pm = on_arrays.transform(ds.feature_rows()[:5])
    assert pm.dtype == np.int8 and set(np.unique(pm)) <= {-1, 1}
    np.testing.assert_array_equal(np.packbits(pm > 0, axis=1), codes[:5])


def test_a_baseline_fitted_on_arrays_saves_a_run_the_command_line_uses(small_synthetic, tmp_path):
    from lagnh_pyg import ITQ

    ds = Dataset.open(small_synthetic)
    X, A = train_rows(ds)
    model = ITQ(bits=16, inputs="both", aux_weight=0.5).fit(X, aux=A)
    with pytest.raises(InputError, match="pass the aux"):
        model.encode(X)
    model.save(tmp_path / "run")
    with pytest.raises(InputError, match="already exists"):
        model.save(tmp_path / "run")
    r = runner.invoke(app, ["encode", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    run = Run.open(tmp_path / "run")
    assert run.meta["data_dir"] == "data" and run.meta["inputs"] == {"inputs": "both", "aux_weight": 0.5}
    np.testing.assert_array_equal(run.load_codes("database"), model.encode(X, A))  # its items, in order
    r = runner.invoke(app, ["search", str(tmp_path / "run"), "--id", "3", "-k", "2"])
    assert r.exit_code == 0 and "query 3" in r.output
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)  # the run holds its dataset: it moves as one directory
    again = ITQ.load(moved)
    assert again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.encode(X, A), model.encode(X, A))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).encode(X, A), model.encode(X, A))


def test_a_deep_baseline_round_trips(small_synthetic, tmp_path):
    from lagnh_pyg import CIBHash

    X, _ = train_rows(Dataset.open(small_synthetic))
    model = CIBHash(bits=8, epochs=1, hidden=16, device="cpu").fit(X)
    model.save(tmp_path / "cib")
    assert Run.open(tmp_path / "cib").model_path.suffix == ".safetensors"
    np.testing.assert_array_equal(CIBHash.load(tmp_path / "cib").encode(X), model.encode(X))


def test_bad_input_is_refused_with_one_clear_message(small_synthetic, tmp_path):
    from lagnh_pyg import ITQ, LSH

    X, A = train_rows(Dataset.open(small_synthetic))
    with pytest.raises(InputError, match="not fitted"):
        LSH().encode(X)
    with pytest.raises(InputError, match="itq parameter iterations must be"):
        ITQ(iterations=-1).fit(X)
    with pytest.raises(InputError, match="hashes each item's aux"):
        ITQ(inputs="aux").fit(X)
    with pytest.raises(InputError, match=r"aux values must lie in \[0, 1\]"):
        ITQ(inputs="both").fit(X, aux=A - 1)
    with pytest.raises(InputError, match="X has 3 rows but aux has 2"):
        ITQ(inputs="both").fit(X[:3], aux=A[:2])
    with pytest.raises(InputError, match="Invalid parameter 'iteration'"):
        ITQ().set_params(iteration=3)
    with pytest.raises(InputError, match="X has 5 features, but ITQ is expecting 64"):
        ITQ(bits=8).fit(X).encode(X[:, :5])
    with pytest.raises(InputError, match="holds a run of itq, not of lagnh"):
        lagnh_pyg.LAGNH.load(ITQ(bits=8).fit(X).save(tmp_path / "itq"))
    four = ITQ(bits=4).fit(X)  # in memory any code length; a run directory stores bytes
    assert four.encode(X[:2]).shape == (2, 1)
    with pytest.raises(InputError, match="multiple of 8"):
        four.save(tmp_path / "four")
    assert not (tmp_path / "four").exists()


# -- LAGNH ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lagnh_on_arrays(small_synthetic):
    from lagnh_pyg import LAGNH

    X, A = train_rows(Dataset.open(small_synthetic))
    return LAGNH(bits=16, config=TINY_LAGNH).fit(X, aux=A)


def test_lagnh_fitted_on_a_dataset_is_lagnh_train(small_synthetic, tiny_runs, tmp_path):
    """The estimator trains what `lagnh train` trains (same config, same codes), and loads
    the command line's run."""
    from lagnh_pyg import LAGNH

    ds = Dataset.open(small_synthetic)
    ref = cli_codes(tiny_runs["full"], tmp_path / "ref")
    model = LAGNH(bits=16, config=TINY_LAGNH).fit(small_synthetic)
    codes = model.encode(small_synthetic)
    loaded = LAGNH.load(tiny_runs["full"])
    assert loaded.bits == 16 and loaded.config_.graph.k == TINY_LAGNH["graph"]["k"]
    for split, packed in ref.items():
        np.testing.assert_array_equal(codes[ds.split(split)], packed)
        rows = ds.split(split)
        np.testing.assert_array_equal(loaded.encode(ds.feature_rows(rows), ds.aux_rows(rows)), packed)


def test_lagnh_on_arrays_is_the_same_model_and_saves_a_servable_run(small_synthetic, lagnh_on_arrays, tiny_runs,
                                                                       tmp_path):
    from lagnh_pyg import LAGNH

    ds = Dataset.open(small_synthetic)
    model = lagnh_on_arrays
    db = ds.split("database")
    ref = cli_codes(tiny_runs["full"], tmp_path / "ref")  # trained on the same items: the same model
    np.testing.assert_array_equal(model.encode(ds.feature_rows(db), ds.aux_rows(db)), ref["database"])
    X, A = train_rows(ds)
    model.save(tmp_path / "run")
    r = runner.invoke(app, ["encode", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(Run.open(tmp_path / "run").load_codes("database"), model.encode(X, A))
    r = runner.invoke(app, ["search", str(tmp_path / "run"), "--id", "7", "-k", "3"])
    assert r.exit_code == 0 and "query 7" in r.output
    np.testing.assert_array_equal(LAGNH.load(tmp_path / "run").encode(X[:50], A[:50]), model.encode(X[:50], A[:50]))
    twin = pickle.loads(pickle.dumps(model))
    assert twin.run_dir_ != model.run_dir_
    np.testing.assert_array_equal(twin.encode(X[:50], A[:50]), model.encode(X[:50], A[:50]))


def test_lagnh_parameters_are_config_keys(lagnh_on_arrays):
    from lagnh_pyg import LAGNH

    model = LAGNH(bits=64, train__epochs=7, variant="no-att")
    assert model.get_params() == {"bits": 64, "config": "demo", "device": "auto", "train__epochs": 7,
                                  "variant": "no-att"}
    cfg = model.resolved_config()
    assert cfg.train.epochs == 7 and cfg.variant == "no-att" and cfg.model.attention == "none"
    assert model.set_params(graph__k=4, bits=32) is model and model.resolved_config().graph.k == 4
    assert repr(model) == "LAGNH(train__epochs=7, variant='no-att', graph__k=4)"
    with pytest.raises(InputError, match="no parameter train__epoch"):
        LAGNH(train__epoch=3).resolved_config()
    with pytest.raises(InputError, match="train.epochs must be"):
        LAGNH(train__epochs=-1).fit(np.zeros((20, 3)), aux=np.zeros((20, 2)))
    assert lagnh_on_arrays.config_.train.epochs == TINY_LAGNH["train"]["epochs"]


def test_lagnh_needs_aux_unless_no_aux(tmp_path):
    from lagnh_pyg import LAGNH

    X = np.random.default_rng(0).standard_normal((40, 6))
    with pytest.raises(InputError, match="pass aux="):
        LAGNH(bits=8, config=TINY_LAGNH).fit(X)
    with pytest.raises(InputError, match="needs more than 5 samples, got 1 sample"):
        LAGNH(bits=8, config=TINY_LAGNH).fit(X[:1], aux=np.ones((1, 2)))
    model = LAGNH(bits=8, config=TINY_LAGNH, variant="no-aux", train__epochs=1).fit(X)
    codes = model.transform(X)
    assert codes.shape == (40, 8) and codes.dtype == np.int8
    np.testing.assert_array_equal(model.transform(X[:7]), codes[:7])  # one item, one code


# -- the index -------------------------------------------------------------------------------------
def test_hamming_index_add_search_save_load(tmp_path):
    from lagnh_pyg import LSH, HammingIndex

    X = np.random.default_rng(1).standard_normal((100, 8))
    lsh = LSH(bits=16).fit(X)
    index = HammingIndex(16)
    index.add(lsh.encode(X), [f"item{i}" for i in range(100)])
    hits = index.search(lsh.encode(X[:3]), k=1)
    assert [row[0] for row in hits.ids] == ["item0", "item1", "item2"] and not hits.distances.any()
    index.save(tmp_path / "index")
    again = HammingIndex.load(tmp_path / "index")
    assert again.search(lsh.encode(X[:3]), k=5).ids == index.search(lsh.encode(X[:3]), k=5).ids
