"""Same inputs: every baseline may hash the aux (inputs=visual|aux|both), the cosine reference
against a brute-force ranking, Table 3's two blocks and tuning aux_weight on the training data."""

import json
import math

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lagnh_pyg.baselines import SHALLOW, InputTransform, fit_run, load_model, make_baseline
from lagnh_pyg.baselines.base import linear_embedding, signs
from lagnh_pyg.cli.main import app
from lagnh_pyg.codes import pack_codes
from lagnh_pyg.data.store import Dataset
from lagnh_pyg.errors import InputError
from lagnh_pyg.experiments import ExperimentSpec, run_accuracy
from lagnh_pyg.experiments.tuning import ValidationData, tune_baseline
from lagnh_pyg.metrics import evaluate_cosine
from lagnh_pyg.rundir import Run

runner = CliRunner()


@pytest.fixture(scope="module")
def items():
    """Clustered non-negative features with an aux that carries the cluster, some aux rows zero."""
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, size=240)
    X = np.maximum(rng.standard_normal((5, 32))[labels] * 2 + rng.standard_normal((240, 32)), 0).astype(np.float32)
    A = np.eye(5, dtype=np.float32)[labels] * rng.uniform(0.5, 3, size=(240, 1)).astype(np.float32)
    A[::7] = 0  # items with no detection / no tag
    return X, A


def in_features(model):
    """The input width of a deep baseline's network (its first linear layer)."""
    import torch

    return next(m for m in model.net.modules() if isinstance(m, torch.nn.Linear)).in_features


def unit(m):
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return np.where(n > 0, m / np.where(n > 0, n, 1), 0)


# -- the input transform -------------------------------------------------------------------
def test_transform_shapes_weighting_and_zero_aux(items):
    X, A = items
    np.testing.assert_array_equal(InputTransform("visual")(X, A), X)
    both = InputTransform("both", 2.5)(X, A)
    assert both.shape == (240, 37) and both.dtype == np.float32 and np.isfinite(both).all()
    np.testing.assert_allclose(both[:, :32], unit(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both[:, 32:], 2.5 * unit(A), rtol=1e-6, atol=1e-7)
    norms = np.linalg.norm(both[:, 32:], axis=1)
    assert np.allclose(norms[::7], 0) and np.allclose(np.delete(norms, np.s_[::7]), 2.5)
    aux = InputTransform("aux")(X, A)
    assert aux.shape == (240, 5) and np.isfinite(aux).all() and np.allclose(aux[::7], 0)
    assert InputTransform("both").dim(32, 5) == 37 and InputTransform("aux").dim(32, 5) == 5


@pytest.mark.parametrize("params, message", [
    ({"inputs": "foo"}, "inputs must be one of visual, aux, both, got 'foo'"),
    ({"inputs": "both", "aux_weight": -1}, "aux_weight must be at least 0"),
    ({"inputs": "both", "aux_weight": "nan"}, "aux_weight must be finite"),
    ({"inputs": "both", "aux_weight": "x"}, "aux_weight must be a number"),
    ({"aux_weight": 2}, "weighs the aux of inputs=both only"),
])
def test_bad_input_settings_refused(params, message):
    with pytest.raises(InputError, match=message):
        make_baseline("itq", 16, **params)


@pytest.mark.parametrize("name", [cls.name for cls in SHALLOW])
def test_shallow_codes_are_the_method_on_the_transformed_inputs(name, items, tmp_path):
    X, A = items
    fit, new = slice(0, 200), slice(200, 240)
    params = {"anchors": 50} if name == "sgh" else {}
    model = make_baseline(name, 16, seed=1, inputs="both", aux_weight=0.5, **params).fit(X[fit], aux=A[fit])
    plain = make_baseline(name, 16, seed=1, **params).fit(InputTransform("both", 0.5)(X[fit], A[fit]))
    T = InputTransform("both", 0.5)(X[new], A[new])
    codes = model.encode(X[new], A[new])
    np.testing.assert_array_equal(codes, plain.encode(T))  # the method itself, on [x/|x|, w a/|a|]
    # each item from its own aux: a permutation of the items permutes the codes
    perm = np.random.default_rng(0).permutation(40)
    np.testing.assert_array_equal(model.encode(X[new][perm], A[new][perm]), codes[perm])
    # a saved model encodes identically, with its transform restored
    back = load_model(model.save(tmp_path / "m.npz"))
    assert back.transform == InputTransform("both", 0.5) and back.aux_dim == 5
    np.testing.assert_array_equal(back.encode(X[new], A[new]), codes)
    with pytest.raises(InputError, match="needs the aux"):
        back.encode(X[new])
    with pytest.raises(InputError, match="aux have 3 dimensions"):
        back.encode(X[new], A[new][:, :3])
    with pytest.raises(InputError, match="one aux row per item"):
        back.encode(X[new], A[:3])


def test_itq_on_both_inputs_by_hand(items):
    X, A = items
    model = make_baseline("itq", 8, inputs="both").fit(X, aux=A)
    T = np.hstack([unit(X), unit(A)]).astype(np.float32)
    np.testing.assert_array_equal(model.encode(X, A), signs(linear_embedding(T, model.mean, model.projection)))
    assert model.projection.shape == (37, 8)


def test_aux_only_ignores_the_features(items):
    X, A = items
    model = make_baseline("lsh", 16, seed=3, inputs="aux").fit(X, aux=A)
    np.testing.assert_array_equal(model.encode(X, A), model.encode(np.zeros_like(X), A))


def test_models_saved_before_the_transform_load_as_visual(items, tmp_path):
    X, A = items
    model = make_baseline("itq", 16, seed=2).fit(X)
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k != "inputs"}
    np.savez(tmp_path / "old.npz", **old)
    back = load_model(tmp_path / "old.npz")
    assert back.transform == InputTransform("visual") and back.aux_dim is None
    np.testing.assert_array_equal(back.encode(X, A), model.encode(X))


def test_deep_baseline_both_inputs_round_trip_and_old_files(items, tmp_path):
    X, A = items
    model = make_baseline("bihalf", 8, seed=0, epochs=2, inputs="both", aux_weight=2).fit(X, aux=A)
    assert in_features(model) == 37
    codes = model.encode(X, A)
    back = load_model(model.save(tmp_path / "m.safetensors"))
    assert back.transform == InputTransform("both", 2.0)
    np.testing.assert_array_equal(back.encode(X, A), codes)
    perm = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_array_equal(back.encode(X[perm], A[perm]), codes[perm])
    # a file written before the transform (no "inputs" in its header) is visual
    visual = make_baseline("bihalf", 8, seed=0, epochs=2).fit(X)
    path = visual.save(tmp_path / "v.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "inputs"}
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=meta)
    old = load_model(tmp_path / "old.safetensors")
    assert old.transform == InputTransform("visual")
    np.testing.assert_array_equal(old.encode(X, A), visual.encode(X))


def test_tbh_rescales_transformed_inputs_to_the_features_length(items, tmp_path):
    """TBH's squared-error reconstruction is tuned on raw features: inputs=both is rescaled to
    their mean row length (a stored scalar), which keeps its codes from collapsing."""
    import torch

    X, A = items
    X = X * 5  # raw rows ~35x longer than the unit-length concatenation
    tiny = {"epochs": 20, "middle": 64, "cbn": 32, "batch_size": 32, "inputs": "both"}
    model = make_baseline("tbh", 16, seed=0, **tiny).fit(X, aux=A)
    both = InputTransform("both")(X, A)
    expected = np.linalg.norm(X, axis=1).mean() / np.linalg.norm(both, axis=1).mean()
    assert model.config["input_scale"] == "features"
    assert model.fit_info["input_scale"] == pytest.approx(expected, rel=1e-5)
    assert float(model.buffers["scale"]) == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():  # the network sees the scaled rows at encode time too
        logits = model.net.logits(torch.from_numpy(both) * float(model.buffers["scale"])).numpy()
    codes = model.encode(X, A)
    np.testing.assert_array_equal(codes, signs(logits))
    unscaled = make_baseline("tbh", 16, seed=0, input_scale="none", **tiny).fit(X, aux=A)
    assert "scale" not in unscaled.buffers
    assert len(np.unique(codes, axis=0)) >= 5 * len(np.unique(unscaled.encode(X, A), axis=0))
    back = load_model(model.save(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(back.encode(X, A), codes)
    # the visual input is never rescaled
    visual = make_baseline("tbh", 16, seed=0, epochs=1, middle=16, cbn=8, batch_size=32).fit(X)
    assert "scale" not in visual.buffers and "input_scale" not in visual.fit_info
    # a file saved before the scale existed (no input_scale in its config) encodes unscaled
    path = unscaled.save(tmp_path / "u.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    del config["input_scale"]
    meta["config"] = json.dumps(config)
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=meta)
    old = load_model(tmp_path / "old.safetensors")
    assert old.config["input_scale"] == "none"
    np.testing.assert_array_equal(old.encode(X, A), unscaled.encode(X, A))


def test_stored_views_take_their_items_aux(items):
    X, A = items
    rng = np.random.default_rng(2)
    V = (X[:, None, :] + rng.random((240, 3, 32))).astype(np.float32)
    model = make_baseline("cibhash", 8, inputs="both", aux_weight=0.5, epochs=1, hidden=16, batch_size=32)
    out = model.views_inputs(V, A, 240, 32)
    assert out.shape == (240, 3, 37)
    for k in range(3):
        np.testing.assert_allclose(out[:, k], InputTransform("both", 0.5)(V[:, k], A), rtol=1e-6)
    model.fit(X, views=V, aux=A)
    assert model.fit_info["augmentation"]["variant"] == "views" and in_features(model) == 37


# -- the run directory and the CLI ---------------------------------------------------------
def test_cli_baseline_inputs_both_encodes_each_item_with_its_aux(small_synthetic, tmp_path):
    run_dir = tmp_path / "itq-both"
    res = runner.invoke(app, ["baseline", "itq", str(small_synthetic), "--bits", "16", "--out", str(run_dir),
                              "--set", "inputs=both", "--set", "aux_weight=0.5"])
    assert res.exit_code == 0, res.output
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["inputs"] == {"inputs": "both", "aux_weight": 0.5}
    assert meta["config"] == {"seed": 0, "iterations": 50, "pca": "auto"}
    res = runner.invoke(app, ["encode", str(run_dir), "--split", "all", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ds = Dataset.open(small_synthetic)
    train = ds.split("train")
    ref = make_baseline("itq", 16, iterations=50).fit(InputTransform("both", 0.5)(ds.feature_rows(train),
                                                                                   ds.aux_rows(train)))
    for split in ("query", "database"):
        idx = ds.split(split)
        expected = ref.encode(InputTransform("both", 0.5)(ds.feature_rows(idx), ds.aux_rows(idx)))
        np.testing.assert_array_equal(np.load(run_dir / "codes" / f"{split}.npy"), pack_codes(expected))


@pytest.mark.parametrize("sets, message", [
    (["inputs=foo"], "inputs must be one of visual, aux, both, got 'foo'"),
    (["inputs=both", "aux_weight=-1"], "aux_weight must be at least 0"),
    (["inputs=both", "aux_weight=nan"], "aux_weight must be finite"),
    (["aux_weight=2"], "add --set inputs=both"),
])
def test_cli_bad_inputs_one_line_exit_2(sets, message, small_synthetic, tmp_path):
    argv = ["baseline", "lsh", str(small_synthetic), "--bits", "16", "--out", str(tmp_path / "run")]
    res = runner.invoke(app, argv + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and message in res.stderr
    assert not (tmp_path / "run").exists()


def test_cli_help_says_what_inputs_mean():
    res = runner.invoke(app, ["baseline", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for text in ("--set inputs=visual", "--set inputs=aux", "--set inputs=both", "aux_weight", "L2-normalised"):
        assert text in res.output


def test_experiment_accuracy_default_grid_is_the_library_grid():
    """`lagnh experiment accuracy`'s --aux-weights default is AUX_WEIGHTS, which reaches past 16
    (several baselines' validation MAP still rose at 16 on the demo data)."""
    import inspect

    from lagnh_pyg.cli.experiment import accuracy
    from lagnh_pyg.experiments.same_inputs import AUX_WEIGHTS, check_weights

    default = inspect.signature(accuracy).parameters["aux_weights"].default
    assert check_weights([float(w) for w in default.split(",")]) == AUX_WEIGHTS
    assert max(AUX_WEIGHTS) == 64.0


# -- the cosine reference --------------------------------------------------------------------
def brute_force_cosine_map(q, db, lq, ldb, topk, protocol, exact=False):
    """One query at a time, each pair on its own: the cosine (``exact``: the exact rational
    ``sign(q.x) (q.x)^2 / (|q|^2 |x|^2)`` of integer vectors, so equal cosines tie exactly;
    else math.fsum), the ranking sorted by (-score, database position), AP@K by its definition."""
    from fractions import Fraction

    def cos(u, v):
        if exact:
            dot, nu, nv = sum(int(a) * int(b) for a, b in zip(u, v)), sum(int(a) ** 2 for a in u), sum(int(b) ** 2 for b in v)
            return Fraction(0) if nu == 0 or nv == 0 else (1 if dot >= 0 else -1) * Fraction(dot * dot, nu * nv)
        nu, nv = math.sqrt(math.fsum(x * x for x in u)), math.sqrt(math.fsum(x * x for x in v))
        return 0.0 if nu == 0 or nv == 0 else math.fsum(a * b for a, b in zip(u, v)) / (nu * nv)

    aps, counted = [], []
    for i in range(len(q)):
        scores = [cos(q[i].tolist(), db[j].tolist()) for j in range(len(db))]
        ranking = sorted(range(len(db)), key=lambda j: (-scores[j], j))[:topk]
        rel = [bool((lq[i] & ldb[j]).any()) for j in ranking]
        hits, total = 0, 0.0
        for rank, r in enumerate(rel, 1):
            if r:
                hits += 1
                total += hits / rank
        aps.append(total / hits if hits else 0.0)
        counted.append({"lagnh": bool((lq[i] & ldb).any()), "calctopmap": True, "hit": hits > 0}[protocol])
    return float(np.mean([a for a, c in zip(aps, counted) if c])), np.array(aps)


@pytest.mark.parametrize("protocol", ["lagnh", "calctopmap", "hit"])
def test_cosine_reference_equals_brute_force(protocol):
    rng = np.random.default_rng(7)
    # small integer vectors: duplicates, multiples ([1, 1, 0, 0], [2, 2, 0, 0]) and other equal
    # cosines computed along different float paths, zero rows and negative entries included
    db = rng.integers(-1, 3, size=(150, 4)).astype(np.float32)
    q = rng.integers(-1, 3, size=(20, 4)).astype(np.float32)
    ldb = (rng.random((150, 6)) < 0.25).astype(np.uint8)
    lq = (rng.random((20, 6)) < 0.25).astype(np.uint8)
    lq[0] = 0  # a query with no relevant item
    for topk in (10, 60, None):
        res = evaluate_cosine(q, db, lq, ldb, topk, protocol, memory_bytes=4000)  # several query chunks
        ref, ref_ap = brute_force_cosine_map(q, db, lq > 0, ldb > 0, topk or len(db), protocol, exact=True)
        assert res.map == pytest.approx(ref, abs=1e-12)
        np.testing.assert_allclose(res.ap, ref_ap, atol=1e-12)


def test_cosine_ties_keep_database_order():
    # the database holds copies of one vector: every relevant copy first in database order
    db = np.array([[1, 2, 3]] * 5 + [[3, 2, 1]], np.float32) * np.array([[1], [2], [1], [3], [1], [1]], np.float32)
    lq, ldb = np.array([[1, 0]]), np.array([[0, 1], [0, 1], [1, 0], [0, 1], [1, 0], [1, 0]])
    res = evaluate_cosine(np.array([[1, 2, 3]], np.float32), db, lq, ldb, topk=6, pk_cutoffs=None)
    # ranks 1..5 are the copies in database order (relevant at 3 and 5), then the other vector
    assert res.map == pytest.approx((1 / 3 + 2 / 5 + 3 / 6) / 3)
    with pytest.raises(InputError, match="NaN"):
        evaluate_cosine(np.array([[np.nan, 0, 0]]), db, lq, ldb)
    with pytest.raises(InputError, match="dimensions"):
        evaluate_cosine(np.ones((1, 2)), db, lq, ldb)


# -- Table 3's two blocks ------------------------------------------------------------------
@pytest.fixture
def fake_lagnh(monkeypatch):
    import zlib

    from retrieval_fakes import make_run

    import lagnh_pyg.training

    calls = []

    def train_run(data_dir, config, bits, out_dir, overrides=(), resume=False, device="auto", progress=True):
        calls.append(str(out_dir))
        make_run(data_dir, out_dir, bits=bits, seed=zlib.crc32(repr(overrides).encode()), encode=False)
        return out_dir

    monkeypatch.setattr(lagnh_pyg.training, "train_run", train_run)
    return calls


def test_accuracy_two_blocks_with_references(small_synthetic, tmp_path, fake_lagnh):
    out = tmp_path / "rep"
    spec = ExperimentSpec(small_synthetic, out, topk=50)
    run_accuracy(spec, ["lagnh", "itq", "lsh"], [16, 32], blocks=["visual", "same"], aux_weights=[0.5, 2])
    md = (out / "accuracy.md").read_text()
    visual, same = md.index("## Visual-only baselines (the paper's protocol)"), md.index("## Same inputs")
    assert visual < same < md.index("### aux_weight on the validation split")
    for block in (md[visual:same], md[same:md.index("### aux_weight")]):
        assert "| lagnh |" in block and "| itq |" in block and "| lsh |" in block
        for ref in ("*cosine on features*", "*cosine on aux*", "*cosine on [features, aux]*",
                    "*cosine on [features, aux], tuned weight*"):
            assert f"| {ref} (no hashing) |" in block
    rep = json.loads((out / "accuracy.json").read_text())
    cells = rep["cells"]
    assert [(c["method"], c["extra"]["block"]) for c in cells if c["bits"] == 16] == [
        ("lagnh", "visual+same"), ("itq", "visual"), ("itq", "same"), ("lsh", "visual"), ("lsh", "same")]
    assert len(fake_lagnh) == 2  # one LAGNH model per code length, shown in both blocks
    ds = Dataset.open(small_synthetic)
    q, db = ds.split("query"), ds.split("database")
    for c in cells:
        run = Run.open(c["run_dir"])
        codes_q, codes_db = run.load_codes("query"), run.load_codes("database")
        from lagnh_pyg.metrics import mean_average_precision

        assert c["map"] == pytest.approx(mean_average_precision(codes_q, codes_db, ds.label_rows(q), ds.label_rows(db),
                                                                50), abs=1e-12)
        if c["extra"]["block"] == "same":
            choice = c["extra"]["aux_weight_choice"]
            assert [r["aux_weight"] for r in choice["results"]] == [0.5, 2.0]
            best = max(choice["results"], key=lambda r: r["validation_map"])
            assert c["extra"]["aux_weight"] == best["aux_weight"] == choice["aux_weight"]
            assert run.meta["inputs"] == {"inputs": "both", "aux_weight": best["aux_weight"]}
    # the references: cosine on the query and database splits, as an independent ranking gives
    refs = {r["name"]: r for r in rep["references"]}
    X_q, X_db, A_q, A_db = ds.feature_rows(q), ds.feature_rows(db), ds.aux_rows(q), ds.aux_rows(db)
    L_q, L_db = ds.label_rows(q) > 0, ds.label_rows(db) > 0
    assert refs["cosine on features"]["map"] == pytest.approx(evaluate_cosine(X_q, X_db, L_q, L_db, 50).map, abs=1e-12)
    assert refs["cosine on aux"]["map"] == pytest.approx(evaluate_cosine(A_q, A_db, L_q, L_db, 50).map, abs=1e-12)
    sub = slice(0, 25)  # the brute force on a quarter of the queries: the same APs
    res = evaluate_cosine(np.hstack([unit(X_q), unit(A_q)]), np.hstack([unit(X_db), unit(A_db)]), L_q, L_db, 50)
    _, ap = brute_force_cosine_map(np.hstack([unit(X_q), unit(A_q)])[sub], np.hstack([unit(X_db), unit(A_db)]),
                                   L_q[sub], L_db, 50, "lagnh")
    np.testing.assert_allclose(res.ap[sub], ap, atol=1e-9)
    assert refs["cosine on [features, aux]"]["map"] == pytest.approx(res.map, abs=1e-9)
    tuned = refs["cosine on [features, aux], tuned weight"]
    assert tuned["aux_weight"] == max(tuned["validation"], key=lambda r: r["validation_map"])["aux_weight"]
    assert (out / "accuracy-references.csv").read_text().count("\n") == 5
    header = (out / "accuracy.csv").read_text().splitlines()[0]
    assert header.startswith("method,bits,seed,block,inputs,aux_weight,protocol,topk,map")
    assert (out / "pk-same-16bits.png").is_file() and (out / "pk-16bits.png").is_file()
    # a later run with more methods reuses every finished run and every choice
    before = {c["run_dir"]: c["map"] for c in cells}
    run_accuracy(ExperimentSpec(small_synthetic, out, topk=50), ["lagnh", "itq", "lsh", "pcah"], [16, 32],
                 blocks=["visual", "same"], aux_weights=[0.5, 2])
    again = json.loads((out / "accuracy.json").read_text())["cells"]
    assert all(c["reused"] for c in again if c["method"] != "pcah") and len(fake_lagnh) == 2
    assert all(c["extra"]["aux_weight_choice"]["reused"] for c in again if c["extra"]["block"] == "same"
               and c["method"] != "pcah")
    assert {c["run_dir"]: c["map"] for c in again if c["run_dir"] in before} == before


def test_cli_accuracy_blocks_option(small_synthetic, tmp_path):
    out = tmp_path / "rep"
    res = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out", str(out),
                              "--methods", "pcah", "--bits", "16", "--topk", "30", "--aux-weights", "1,2"])
    assert res.exit_code == 0, res.output
    assert "## Visual-only baselines" in res.stdout and "## Same inputs" in res.stdout
    res = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out", str(tmp_path / "v"),
                              "--methods", "pcah", "--bits", "16", "--topk", "30", "--blocks", "visual"])
    assert res.exit_code == 0 and "## Same inputs" not in res.stdout and "*cosine on aux*" in res.stdout
    for args, msg in ((["--blocks", "paper"], "unknown Table 3 block 'paper'"),
                      (["--aux-weights", "1,-2"], "aux_weight must be at least 0"),
                      (["--aux-weights", "1,nan"], "aux_weight must be finite"),
                      (["--aux-weights", "1,1"], "lists 1 twice")):
        res = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out",
                                  str(tmp_path / "bad"), "--methods", "lsh", "--bits", "16", *args])
        assert res.exit_code == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
        assert msg in res.stderr, res.stderr


# -- the sweep past the grid's edge --------------------------------------------------------
def _peaked(peak: float, calls: list):
    """A validation score with one maximum at ``peak`` (in log2 w), recording each weight asked."""
    def score(w):
        calls.append(w)
        return {"validation_map": 1.0 - (math.log2(w) - math.log2(peak)) ** 2 / 100 if w > 0 else 0.0, "fit_seconds": 0.1}
    return score


@pytest.mark.parametrize("grid, peak, tried, pick", [
    ((0.5, 1.0, 2.0), 32.0, [0.5, 1, 2, 4, 8, 16, 32, 64, 128], 32.0),  # past the top: doubles until the MAP
    ((1.0, 2.0, 4.0), 0.125, [1, 2, 4, 0.5, 0.25, 0.125, 0.0625, 0.03125], 0.125),  # falls twice; halves below
    ((0.5, 4.0, 1.0), 1.0, [0.5, 4, 1], 1.0),  # an inner pick: the grid alone (in any order)
    ((0.5, 1.0), 0.001, [0.5, 1, 0.25, 0.125, 0.0625, 0.03125, 0.015625], 0.015625),  # halving stops at 1/64
    ((0.0, 1.0, 4.0), 0.001, [0, 1, 4], 1.0),  # a grid holding 0 is not halved past its smallest weight
    ((2.0, 4.0), 4.0, [2, 4, 8, 16], 4.0),  # a pick at the top that the next two weights do not beat
    ((1.0, 8.0), 1e9, [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096], 4096.0),  # doubling stops at 4096
    ((8.0,), 1e9, [8], 8.0),  # one weight: nothing to go past
])
def test_sweep_weights_goes_past_an_edge_pick(grid, peak, tried, pick):
    from lagnh_pyg.experiments.same_inputs import EXTEND_MAX, EXTEND_MIN, sweep_weights

    assert (EXTEND_MIN, EXTEND_MAX) == (1 / 64, 4096.0)
    calls = []
    out = sweep_weights(grid, _peaked(peak, calls))
    assert calls == tried and [r["aux_weight"] for r in out["results"]] == [float(w) for w in tried]
    assert out["aux_weight"] == pick
    assert out["validation_map"] == max(r["validation_map"] for r in out["results"])
    assert [r["extended"] for r in out["results"]] == [i >= len(grid) for i in range(len(tried))]
    assert all(r["fit_seconds"] == 0.1 for r in out["results"])  # what the score says is kept
    calls.clear()
    assert sweep_weights(grid, _peaked(peak, calls), extend=False)["aux_weight"] in grid and calls == list(grid)


def test_sweep_weights_forgives_one_dip_not_two_and_ties_keep_the_first():
    from lagnh_pyg.experiments.same_inputs import sweep_weights

    maps = {1.0: 0.5, 2.0: 0.7, 4.0: 0.69, 8.0: 0.8, 16.0: 0.8, 32.0: 0.79, 64.0: 0.95}
    out = sweep_weights((1.0, 2.0), lambda w: {"validation_map": maps[w]})
    # 4 dips, 8 gains; 16 ties (not a gain), 32 dips: stop before 64
    assert [r["aux_weight"] for r in out["results"]] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0] and out["aux_weight"] == 8.0


def test_cli_accuracy_extends_the_grid_past_an_edge_pick(small_synthetic, tmp_path):
    """`experiment accuracy` goes on past the grid's edge by default, each weight past it scored on
    the validation split as the grid's are (checked by hand), and the report lists them."""
    from lagnh_pyg.metrics import mean_average_precision

    grid = "0.25,0.5"  # PCAH's validation MAP is highest at the grid's top here, and again past it
    out = tmp_path / "rep"
    res = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out", str(out),
                              "--methods", "pcah", "--bits", "16", "--topk", "40", "--blocks", "same",
                              "--aux-weights", grid])
    assert res.exit_code == 0, res.output
    cell = next(c for c in json.loads((out / "accuracy.json").read_text())["cells"] if c["extra"]["block"] == "same")
    choice = cell["extra"]["aux_weight_choice"]
    weights = [r["aux_weight"] for r in choice["results"]]
    assert len(weights) > 3 and weights[2:] == [weights[1] * 2 ** i for i in range(1, len(weights) - 1)]
    maps = [r["validation_map"] for r in choice["results"]]
    assert choice["aux_weight"] == weights[int(np.argmax(maps))] == cell["extra"]["aux_weight"] > 0.5
    assert max(maps[-2:]) <= max(maps[:-2])  # it stopped after two weights without a gain
    data = ValidationData.of(Dataset.open(small_synthetic), 0.2, 0)
    for w, m in zip(weights, maps):  # each score by hand
        t = InputTransform("both", w)
        model = make_baseline("pcah", 16).fit(t(data.X_fit, data.A_fit))
        ref = mean_average_precision(model.encode(t(data.X_val, data.A_val)), model.encode(t(data.X_fit, data.A_fit)),
                                     data.L_val, data.L_fit, 40)
        assert m == pytest.approx(ref, abs=1e-12)
    md = (out / "accuracy.md").read_text()
    assert f"| w={weights[-1]:g} |" in md and "were tried because a pick lay at its edge" in md
    assert "a pick at the grid's edge goes on" in md
    res = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out", str(tmp_path / "fixed"),
                              "--methods", "pcah", "--bits", "16", "--topk", "40", "--blocks", "same",
                              "--aux-weights", grid, "--no-extend-weights"])
    assert res.exit_code == 0, res.output
    cell = next(c for c in json.loads((tmp_path / "fixed" / "accuracy.json").read_text())["cells"]
                if c["extra"]["block"] == "same")
    assert [r["aux_weight"] for r in cell["extra"]["aux_weight_choice"]["results"]] == weights[:2]
    assert "were tried because" not in (tmp_path / "fixed" / "accuracy.md").read_text()


def test_accuracy_reuses_a_weight_choice_only_with_the_same_extend_rule(small_synthetic, tmp_path):
    """The cached aux-weight choices (and the tuned cosine reference) are reused by a second run
    with the same rule, and chosen afresh when the run changes --extend-weights."""
    out = tmp_path / "rep"
    args = ["experiment", "accuracy", "--data", str(small_synthetic), "--out", str(out), "--methods", "pcah",
            "--bits", "16", "--topk", "40", "--blocks", "same", "--aux-weights", "0.25,0.5"]

    def choice(extra: list[str]) -> dict:
        res = runner.invoke(app, args + extra)
        assert res.exit_code == 0, res.output
        cells = json.loads((out / "accuracy.json").read_text())["cells"]
        return next(c for c in cells if c["extra"]["block"] == "same")["extra"]["aux_weight_choice"]

    first = choice([])
    assert not first["reused"] and len(first["results"]) > 2  # past the grid's edge, as in the test above
    again = choice([])
    assert again["reused"] and again["results"] == first["results"]
    plain = choice(["--no-extend-weights"])
    assert not plain["reused"] and [r["aux_weight"] for r in plain["results"]] == [0.25, 0.5]
    assert choice(["--no-extend-weights"])["reused"]


# -- tuning aux_weight on the training data ------------------------------------------------
def test_tune_aux_weight_on_the_validation_split(small_synthetic, tmp_path):
    md = tune_baseline("itq", small_synthetic, 16, {"aux_weight": ["0.5", "2"]}, tmp_path / "t", topk=40,
                       fixed={"inputs": "both"})
    rep = json.loads(md.with_suffix(".json").read_text())
    assert rep["fixed"] == {"inputs": "both"} and [r["params"]["aux_weight"] for r in rep["results"]] == ["0.5", "2"]
    ds = Dataset.open(small_synthetic)
    data = ValidationData.of(ds, 0.2, 0)
    assert not set(data.fit_idx) & set(ds.split("query")) and not set(data.val_idx) & set(ds.split("database"))
    from lagnh_pyg.metrics import mean_average_precision

    for r in rep["results"]:  # each score by hand: the fit and validation items with their own aux
        t = InputTransform("both", float(r["params"]["aux_weight"]))
        model = make_baseline("itq", 16).fit(t(data.X_fit, data.A_fit))
        ref = mean_average_precision(model.encode(t(data.X_val, data.A_val)), model.encode(t(data.X_fit, data.A_fit)),
                                     data.L_val, data.L_fit, 40)
        assert r["validation_map"] == pytest.approx(ref, abs=1e-12)
    assert rep["results"][0]["validation_map"] != rep["results"][1]["validation_map"]  # the aux is used
    res = runner.invoke(app, ["experiment", "tune", "--data", str(small_synthetic), "--out", str(tmp_path / "c"),
                              "--method", "lsh", "--bits", "16", "--set", "inputs=both", "--grid", "aux_weight=1,4"])
    assert res.exit_code == 0, res.output
    assert "aux_weight" in res.stdout and "inputs=both" in res.stdout
    res = runner.invoke(app, ["experiment", "tune", "--data", str(small_synthetic), "--out", str(tmp_path / "d"),
                              "--method", "lsh", "--bits", "16", "--grid", "aux_weight=1,4"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "add --set inputs=both" in res.stderr
    assert not (tmp_path / "d").exists()


def test_tune_extends_aux_weight_past_the_grid_edge(small_synthetic, tmp_path, monkeypatch):
    """`experiment tune --extend-weights` follows an edge pick past the grid, as Table 3 does:
    every point scored is listed (the extra ones marked), the best is chosen among all; the
    validation scores here peak at w = 8 (mocked: the rule is what is tested, the real scores
    are by the test above). Without the flag the grid alone; with another grid key, an error."""
    calls = []
    peaked = _peaked(8.0, calls)
    monkeypatch.setattr(ValidationData, "score", lambda self, method, bits, params, **kw: peaked(float(params["aux_weight"])))
    res = runner.invoke(app, ["experiment", "tune", "--data", str(small_synthetic), "--out", str(tmp_path / "e"),
                              "--method", "itq", "--bits", "16", "--set", "inputs=both", "--grid", "aux_weight=1,2",
                              "--extend-weights"])
    assert res.exit_code == 0, res.output
    assert calls == [1, 2, 4, 8, 16, 32]
    rep = json.loads((tmp_path / "e" / "tune-itq-16bits.json").read_text())
    assert [r["params"]["aux_weight"] for r in rep["results"]] == [1, 2, 4, 8, 16, 32]
    assert [r["extended"] for r in rep["results"]] == [False, False, True, True, True, True]
    assert rep["best"]["params"] == {"aux_weight": 8.0} and rep["provenance"]["extend_weights"] is True
    md = (tmp_path / "e" / "tune-itq-16bits.md").read_text()
    assert "Best: {'aux_weight': 8.0}" in md and "past the grid" in md and md.count("| yes |") == 4
    calls.clear()
    res = runner.invoke(app, ["experiment", "tune", "--data", str(small_synthetic), "--out", str(tmp_path / "g"),
                              "--method", "itq", "--bits", "16", "--set", "inputs=both", "--grid", "aux_weight=1,2"])
    assert res.exit_code == 0 and calls == [1, 2], res.output
    assert "past the grid" not in (tmp_path / "g" / "tune-itq-16bits.md").read_text()
    calls.clear()
    res = runner.invoke(app, ["experiment", "tune", "--data", str(small_synthetic), "--out", str(tmp_path / "h"),
                              "--method", "itq", "--bits", "16", "--set", "inputs=both", "--grid", "aux_weight=1,2",
                              "--grid", "iterations=10,20", "--extend-weights"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "--extend-weights" in res.stderr
    assert calls == [] and not (tmp_path / "h").exists()


def test_fit_run_records_the_inputs(small_synthetic, tmp_path):
    run = Run.open(fit_run("lsh", small_synthetic, 16, tmp_path / "v"))
    assert run.meta["inputs"] == {"inputs": "visual"}
    run = Run.open(fit_run("lsh", small_synthetic, 16, tmp_path / "a", inputs="aux"))
    assert run.meta["inputs"] == {"inputs": "aux"}
