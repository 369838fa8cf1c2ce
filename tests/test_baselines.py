"""Shallow baselines: each method against its definition, determinism, persistence, the CLI."""

import json
import shutil

import numpy as np
import pytest
from helpers import ref_map
from typer.testing import CliRunner

from lagnh_pyg.baselines import (
    ITQ,
    PCAH,
    SGH,
    SH,
    SHALLOW,
    SKLSH,
    fit_run,
    load_model,
    make_baseline,
)
from lagnh_pyg.baselines.pca import principal_components
from lagnh_pyg.baselines.sgh import RHO, transformed_features, unit_rows
from lagnh_pyg.baselines.sh import enumerate_modes
from lagnh_pyg.cli.main import app
from lagnh_pyg.codes import pack_codes
from lagnh_pyg.data.store import Dataset
from lagnh_pyg.encoders import load_encoder
from lagnh_pyg.errors import InputError
from lagnh_pyg.rundir import Run

METHODS = [cls.name for cls in SHALLOW]  # the deep ones: test_deep_baselines.py
RANDOMISED = ["lsh", "sklsh", "itq", "sgh"]  # the others ignore the seed


@pytest.fixture(scope="module")
def clustered():
    """Non-negative clustered features with a decaying spectrum (like ReLU deep features)."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((6, 48)) * np.linspace(3, 0.5, 48)
    labels = rng.integers(0, 6, size=500)
    X = np.maximum(centres[labels] + 0.7 * rng.standard_normal((500, 48)) + 1.0, 0)
    return X.astype(np.float32)


# -- each method against its definition --------------------------------------------------------
def test_pcah_equals_sign_of_centred_pca_projections(clustered):
    X = clustered.astype(np.float64)
    Xc = X - X.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(X, rowvar=False))
    top = vectors[:, np.argsort(-values)[:16]]
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(16)])  # documented sign convention
    proj = Xc @ top
    codes = PCAH(bits=16).fit(clustered).encode(clustered)
    clear = np.abs(proj) > 1e-4 * np.abs(proj).max()  # float32 vs float64 only differ at ~0
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(codes[clear], np.where(proj > 0, 1, -1)[clear])


def test_randomized_pca_matches_exact():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((600, 12)) * np.linspace(6, 2, 12)) @ rng.standard_normal((12, 200))
    X = np.maximum(X + rng.standard_normal((600, 200)) + 1, 0).astype(np.float32)
    mean, exact, values = principal_components(X, 8, "exact")
    _, approx, approx_values = principal_components(X, 8, "randomized")
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(approx_values, values, rtol=1e-4)
    assert (np.sum(exact * approx, axis=0) > 0.999).all()  # same directions, same signs
    with pytest.raises(InputError, match="PCA solver must be one of"):
        principal_components(X, 8, "fast")


def test_itq_quantization_loss_never_increases(clustered):
    model = ITQ(bits=16, seed=0).fit(clustered)
    loss = model.quantization_loss
    assert len(loss) == 51  # initial rotation + 50 updates
    assert np.all(np.diff(loss) <= 1e-9 * loss[0])
    assert loss[-1] < loss[0]
    np.testing.assert_allclose(model.rotation.T @ model.rotation, np.eye(16), atol=1e-10)
    assert model.fit_info["quantization_loss_last"] == loss[-1]


def test_enumerate_modes_hand_built():
    # box sides 2 and 1: omega0 = (pi/2, pi); frequency of (m0, m1) is (m0^2 + 4 m1^2) (pi/2)^2
    modes, freq = enumerate_modes(np.array([2.0, 1.0]), bits=8)
    expected = [[1, 0], [2, 0], [0, 1], [3, 0], [4, 0], [0, 2], [5, 0], [6, 0]]  # ties: dim 0 first
    np.testing.assert_array_equal(modes, expected)
    np.testing.assert_allclose(freq, np.array([1, 4, 4, 9, 16, 16, 25, 36]) * (np.pi / 2) ** 2)


def test_sh_modes_follow_frequency_ordering(clustered):
    model = SH(bits=24).fit(clustered[:, :8])  # npca = 8 < bits: several modes per direction
    omega0 = np.pi / (model.mx - model.mn)
    assert (np.count_nonzero(model.modes, axis=1) == 1).all()
    freq = ((model.modes * omega0) ** 2).sum(axis=1)
    assert np.all(np.diff(freq) >= 0)
    # no candidate mode left out has a lower frequency than the highest one kept
    chosen = {tuple(m) for m in model.modes}
    for i, w in enumerate(omega0):
        for m in range(1, 30):
            if (m * w) ** 2 < freq[-1]:
                mode = tuple(m if j == i else 0 for j in range(8))
                assert mode in chosen
    # codes: sgn(sin(pi/2 + m omega (y - mn))) on the stored PCA projection
    y = (clustered[:, :8] - model.mean) @ model.projection.astype(np.float64) - model.mn
    dim = model.modes.argmax(axis=1)
    ref = np.sin(np.pi / 2 + y[:, dim] * model.modes.max(axis=1) * omega0[dim])
    clear = np.abs(ref) > 1e-4
    np.testing.assert_array_equal(model.encode(clustered[:, :8])[clear], np.where(ref > 0, 1, -1)[clear])


def test_sklsh_codes_follow_definition(clustered):
    model = SKLSH(bits=32, seed=2).fit(clustered)
    Xc = clustered.astype(np.float64) - model.mean
    d2 = ((Xc[:, None, :] - Xc[None, :, :]) ** 2).sum(-1)[np.triu_indices(len(Xc), 1)]
    assert 0.8 < model.gamma * np.median(d2) < 1.25  # auto: 1 / median squared distance (sampled)
    ref = np.cos(Xc @ model.projection + model.phase) + model.threshold
    clear = np.abs(ref) > 1e-4
    np.testing.assert_array_equal(model.encode(clustered)[clear], np.where(ref > 0, 1, -1)[clear])
    assert SKLSH(bits=8, gamma=0.5).fit(clustered).gamma == 0.5


def test_sgh_feature_transformation_is_the_chord_of_exp():
    rng = np.random.default_rng(0)
    Xn = unit_rows(rng.standard_normal((20, 5)).astype(np.float32), np.zeros(5, np.float32))
    P = transformed_features(Xn).astype(np.float64)
    Q = P * np.r_[np.ones(6), -1]
    cos = Xn.astype(np.float64) @ Xn.T
    chord = 2 * np.exp(-2 / RHO) * (np.sinh(1) * 2 * cos / RHO + np.cosh(1)) - 1
    np.testing.assert_allclose(P @ Q.T, chord, atol=1e-5)
    exact = 2 * np.exp(-(2 - 2 * cos) / RHO) - 1  # Eq. 2
    np.testing.assert_allclose(np.diag(P @ Q.T), np.diag(exact), atol=1e-5)  # exact at x = y


def test_sgh_fits_and_uses_kernel_features(clustered):
    model = SGH(bits=16, seed=0, anchors=40).fit(clustered)
    assert model.weights.shape == (40, 16) and model.anchor_points.shape == (40, 48)
    Xn = unit_rows(clustered, model.mean).astype(np.float64)
    brute = ((Xn[:, None, :] - model.anchor_points[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(model.anchor_distances(clustered), brute, atol=1e-5)
    assert model.delta == pytest.approx(brute.mean(), rel=1e-5)
    K = model.kernel_features(clustered)
    np.testing.assert_allclose(K.mean(axis=0), 0, atol=1e-5)  # centred on the training set
    np.testing.assert_allclose(model.anchor_distances(model.mean[None]), 1, atol=1e-6)  # x = mean: zero row
    codes = model.encode(clustered)
    assert np.abs(codes.mean(axis=0)).max() < 0.9  # no constant bit
    with pytest.raises(InputError, match="anchors=40"):
        SGH(bits=8, anchors=40).fit(clustered[:30])


# -- the interface: determinism, batch independence, persistence -------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_deterministic_batch_independent_and_round_trips(name, clustered, tmp_path):
    params = {"anchors": 50} if name == "sgh" else {}
    a = make_baseline(name, 16, seed=7, **params).fit(clustered)
    b = make_baseline(name, 16, seed=7, **params).fit(clustered)
    codes = a.encode(clustered)
    assert codes.shape == (len(clustered), 16) and codes.dtype == np.int8
    assert set(np.unique(codes)) <= {-1, 1}
    np.testing.assert_array_equal(codes, b.encode(clustered))
    np.testing.assert_array_equal(codes[5:6], a.encode(clustered[5:6]))  # one item, one code
    if name in RANDOMISED:
        c = make_baseline(name, 16, seed=8, **params).fit(clustered)
        assert (c.encode(clustered) != codes).any()
    path = a.save(tmp_path / "model.npz")
    loaded = load_model(path)
    assert type(loaded) is type(a) and repr(loaded) == repr(a)
    np.testing.assert_array_equal(loaded.encode(clustered), codes)
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert str(z["method"]) == name


def test_bad_inputs_raise_input_error(clustered):
    with pytest.raises(InputError, match="unknown baseline 'nope'"):
        make_baseline("nope", 16)
    with pytest.raises(InputError, match="multiple of 8"):
        make_baseline("lsh", 12)
    with pytest.raises(InputError, match="has no parameter gama; its parameters: gamma"):
        make_baseline("sklsh", 16, gama=1)
    with pytest.raises(InputError, match="iterations must be an integer"):
        make_baseline("itq", 16, iterations="many")
    with pytest.raises(InputError, match="gamma must be positive"):
        make_baseline("sklsh", 16, gamma=-1)
    with pytest.raises(InputError, match="cannot exceed the feature dimension 48"):
        make_baseline("itq", 64).fit(clustered)
    bad = clustered.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN or inf .first at row 3, column 4"):
        make_baseline("lsh", 8).fit(bad)
    model = make_baseline("lsh", 8).fit(clustered)
    with pytest.raises(InputError, match="48-d features"):
        model.encode(clustered[:, :10])
    with pytest.raises(InputError, match="not fitted"):
        make_baseline("lsh", 8).encode(clustered)


# -- quality: the expected ordering on clustered data ------------------------------------------
def test_itq_at_least_pcah_at_64_bits(tmp_path):
    from lagnh_pyg.data.synthetic import SyntheticSpec, generate

    ds = Dataset.open(generate(SyntheticSpec(n=3000, dim=128, classes=12, n_train=1000, n_query=200, seed=5),
                               tmp_path / "syn"))
    train, query, db = (ds.split(s) for s in ("train", "query", "database"))
    scores = {}
    for name in ("pcah", "itq", "lsh"):
        model = make_baseline(name, 64, seed=0).fit(ds.feature_rows(train))
        scores[name] = ref_map(model.encode(ds.feature_rows(query)), model.encode(ds.feature_rows(db)),
                                ds.label_rows(query), ds.label_rows(db), topk=1000)
    assert scores["itq"] >= scores["pcah"], scores
    assert scores["itq"] > scores["lsh"], scores


# -- library entry point and CLI ---------------------------------------------------------------
def test_fit_run_writes_a_run_every_stage_reads(small_synthetic, tmp_path):
    run_dir = fit_run("sgh", small_synthetic, 16, tmp_path / "run", seed=3, anchors=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left behind
    run = Run.open(run_dir)
    assert run.method == "sgh" and run.bits == 16 and run.model_path.name == "model.npz"
    assert run.meta["config"] == {"seed": 3, "anchors": 64, "reg": 1e-6, "refine_passes": 1}
    assert run.meta["fit"]["train_items"] == len(Dataset.open(small_synthetic).split("train"))
    encoder = load_encoder(run)  # through the method registry of lagnh_pyg.encoders
    assert encoder.bits == 16 and encoder.batch_independent
    with pytest.raises(InputError, match="already exists"):
        fit_run("lsh", small_synthetic, 16, run_dir)


def test_cli_baseline_then_encode(small_synthetic, tmp_path):
    runner = CliRunner()
    run_dir = tmp_path / "itq16"
    res = runner.invoke(app, ["baseline", "itq", str(small_synthetic), "--bits", "16", "--out", str(run_dir),
                              "--set", "iterations=20"])
    assert res.exit_code == 0, res.output
    assert json.loads((run_dir / "run.json").read_text())["config"] == {"seed": 0, "iterations": 20, "pca": "auto"}
    res = runner.invoke(app, ["encode", str(run_dir), "--split", "all", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ds = Dataset.open(small_synthetic)
    model = load_model(run_dir / "model.npz")
    for split in ("query", "database"):
        codes = np.load(run_dir / "codes" / f"{split}.npy")
        np.testing.assert_array_equal(codes, pack_codes(model.encode(ds.feature_rows(ds.split(split)))))


@pytest.fixture
def nan_dataset(small_synthetic, tmp_path):
    out = tmp_path / "nan"
    shutil.copytree(small_synthetic, out)
    train = np.load(out / "splits" / "train.npy")
    feats = np.load(out / "features.npy", mmap_mode="r+")
    feats[train[2], 1] = np.nan
    feats.flush()
    del feats
    return out


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "{data}", "--bits", "16"], "unknown baseline 'nope'; choose one of lsh, sklsh, sh, pcah, itq, sgh, uhbdnn"),
        (["lsh", "{data}", "--bits", "12"], "multiple of 8"),
        (["pcah", "{data}", "--bits", "128"], "cannot exceed the feature dimension 64"),
        (["itq", "{nan}", "--bits", "16"], "NaN or inf"),
        (["lsh", "{data}", "--bits", "16", "--out", "{existing}"], "already exists"),
        (["sgh", "{data}", "--bits", "16", "--set", "anchor=5"], "sgh has no parameter anchor"),
        (["sgh", "{data}", "--bits", "16", "--set", "anchors"], "--set expects key=value"),
        (["lsh", "{tmp}/missing", "--bits", "16"], "does not exist"),
    ],
)
def test_cli_bad_input_one_line_exit_2(args, message, small_synthetic, nan_dataset, tmp_path):
    existing = tmp_path / "exists"
    existing.mkdir()
    fill = {"data": small_synthetic, "nan": nan_dataset, "existing": existing, "tmp": tmp_path}
    argv = ["baseline"] + [a.format(**fill) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert message in res.stderr
    assert not (tmp_path / "run").exists()


def test_cli_help_lists_methods_and_parameters():
    res = CliRunner().invoke(app, ["baseline", "--help"], terminal_width=100)
    assert res.exit_code == 0
    for name in METHODS:
        assert name in res.output
    for param in ("gamma=auto", "iterations=50", "anchors=300", "reg=1e-06", "refine_passes=1"):
        assert param in res.output
