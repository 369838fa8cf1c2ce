"""Deep baselines: each loss/update against a hand-computed case, determinism, persistence,
views (format v2) and the CLI from fit to evaluation."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from lagnh_pyg.baselines import BASELINES, DEEP, config_file, fit_run, load_model, make_baseline
from lagnh_pyg.baselines.bihalf import bihalf, bihalf_codes, bihalf_loss
from lagnh_pyg.baselines.cibhash import bernoulli_kl, cib_loss, nt_xent
from lagnh_pyg.baselines.deep import Views
from lagnh_pyg.baselines.deepbit import even_distribution_loss, invariance_loss, quantization_loss
from lagnh_pyg.baselines.sadh import anchor_graph, discrete_codes, graph_objective, spectral_codes
from lagnh_pyg.baselines.ssdh import half_gaussian_thresholds, semantic_structure, ssdh_loss
from lagnh_pyg.baselines.tbh import adversarial_loss, gcn_propagate, hamming_adjacency
from lagnh_pyg.baselines.uhbdnn import code_step, decoder_step, encoder_objective
from lagnh_pyg.cli.main import app
from lagnh_pyg.codes import pack_codes
from lagnh_pyg.data.store import Dataset, DatasetWriter, write_dataset
from lagnh_pyg.errors import InputError
from lagnh_pyg.experiments.common import check_methods

T = torch.tensor
DEEP_NAMES = [c.name for c in DEEP]
#: settings small enough for a test, per method
TINY = {
    "uhbdnn": {"hidden": 16, "iterations": 2, "lbfgs_steps": 3},
    "deepbit": {"epochs": 2, "invariance_epochs": 2, "batch_size": 32},
    "ssdh": {"epochs": 3, "batch_size": 32},
    "sadh": {"outer": 2, "epochs": 2, "anchors": 40, "hidden": 32},
    "tbh": {"epochs": 2, "middle": 32, "cbn": 16, "batch_size": 32},
    "cibhash": {"epochs": 2, "hidden": 32, "batch_size": 32},
    "bihalf": {"epochs": 3},
}


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((6, 48)) * 3
    labels = rng.integers(0, 6, size=300)
    return np.maximum(centres[labels] + rng.standard_normal((300, 48)) + 1.0, 0).astype(np.float32)


# -- CIBHash ---------------------------------------------------------------------------------
def test_nt_xent_hand_computed():
    # two items, orthogonal codes; each row's positive is its other view
    z1, z2 = T([[1.0, 0.0], [0.0, 1.0]]), T([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # row 0 of [z1; z2]: sims to rows 1, 2, 3 are 0, 1, 0 -> / t: 0, 2, 0; positive = row 2
    expected = -math.log(math.exp(2) / (math.exp(0) + math.exp(2) + math.exp(0)))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(expected, rel=1e-6)  # all 4 rows alike by symmetry


def test_bernoulli_kl_and_cib_loss_hand_computed():
    p, q = T([[0.5, 0.9]]), T([[0.5, 0.5]])
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert float(bernoulli_kl(p, q)) == pytest.approx(kl, rel=1e-5)
    p2 = p.clone().requires_grad_(True)
    bernoulli_kl(p2, q.clone().requires_grad_(True)).backward()
    assert p2.grad is not None  # q is a fixed target (detached), p learns
    z = T([[1.0, 1.0]])
    kl_qp = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    # one item: NT-Xent of a single pair is 0 (the positive is the only other row)
    assert float(cib_loss(p, q, z, z, 0.3, 0.5)) == pytest.approx(0.5 * (kl + kl_qp) / 2, rel=1e-5)


# -- Bi-half ---------------------------------------------------------------------------------
def test_bihalf_forward_backward_hand_computed():
    u = T([[3.0, -1.0], [1.0, 2.0], [2.0, 0.5], [0.0, 1.0]], requires_grad=True)
    b = bihalf(u, 6.0)
    np.testing.assert_array_equal(b.detach().numpy(), [[1, -1], [-1, 1], [1, -1], [-1, 1]])
    b.sum().backward()
    expected = 1 + 6.0 * (u.detach() - b.detach()) / 8
    np.testing.assert_allclose(u.grad.numpy(), expected.numpy(), rtol=1e-6)
    odd = bihalf_codes(T([[1.0], [3.0], [2.0]]))  # B // 2 = 1 plus, 2 minus
    np.testing.assert_array_equal(odd.numpy().ravel(), [-1, 1, -1])


def test_bihalf_loss_hand_computed():
    b = T([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [1.0, 1.0]])
    x = T([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # pairs (0, 2): cos b = 1, cos x = 1; (1, 3): cos b = 0, cos x = 1/sqrt(2)
    assert float(bihalf_loss(b, x)) == pytest.approx((0 + 0.5) / 2, rel=1e-6)


# -- TBH -------------------------------------------------------------------------------------
def test_tbh_graph_and_adversarial_hand_computed():
    b = T([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    A = hamming_adjacency(b)
    np.testing.assert_allclose(A.numpy(), [[1, 0.5 ** 1.4, 0], [0.5 ** 1.4, 1, 0.5 ** 1.4], [0, 0.5 ** 1.4, 1]], atol=1e-6)
    Adj = T([[1.0, 1.0], [1.0, 1.0]])
    v = T([[2.0], [4.0]])
    np.testing.assert_allclose(gcn_propagate(Adj, v).numpy(), [[3.0], [3.0]], rtol=1e-6)  # D = 2: (2 + 4) / 2
    half = T([[0.5]])
    assert float(adversarial_loss(half, half)) == pytest.approx(2 * math.log(2), rel=1e-6)


# -- SSDH ------------------------------------------------------------------------------------
def test_ssdh_thresholds_structure_and_loss():
    d = np.array([0.305, 0.305, 0.305, 0.295, 0.315, 0.5])  # mode bin: (0.30, 0.31)
    lo, hi, info = half_gaussian_thresholds(d, alpha=1.0, beta=1.0)
    assert info["mode"] == pytest.approx(0.30)
    left = np.array([0.295, 0.305])  # <= mode: only 0.295; mirrored: 0.295, 0.305
    assert info["left_mean"] == pytest.approx(0.30) and info["left_std"] == pytest.approx(left.std())
    right = d[d > 0.30]
    right = np.concatenate([0.6 - right, right])
    assert hi == pytest.approx(right.mean() + right.std())
    assert lo == pytest.approx(0.30 - left.std())
    S = semantic_structure(T([[0.0, 0.2], [0.9, 0.5]]), 0.1, 0.6)
    np.testing.assert_array_equal(S.numpy(), [[1, 0], [-1, 0]])
    v = T([[1.0, 1.0], [1.0, -1.0]])  # H = [[1, 0], [0, 1]]
    S = T([[1.0, -1.0], [0.0, 1.0]])
    assert float(ssdh_loss(v, S)) == pytest.approx((0 + 1 + 0 + 0) / 4)


# -- DeepBit ---------------------------------------------------------------------------------
def test_deepbit_losses_hand_computed():
    F = T([[0.8, 0.3], [0.6, 0.1]])
    # b = [[1, 0], [1, 0]]: squared errors 0.04 + 0.09 + 0.16 + 0.01 = 0.30, / (2 * 2)
    assert float(quantization_loss(F)) == pytest.approx(0.30 / 4)
    # bit means 0.7, 0.2: ((0.2)^2 + (0.3)^2) / 2
    assert float(even_distribution_loss(F)) == pytest.approx((0.04 + 0.09) / 2)
    assert float(invariance_loss(F + 0.1, F)) == pytest.approx(4 * 0.01 / 2)


# -- UH-BDNN ---------------------------------------------------------------------------------
def test_uhbdnn_code_step_is_exact_per_bit_and_decoder_is_ridge():
    g = torch.Generator().manual_seed(0)
    X, H = torch.randn(6, 3, generator=g), torch.randn(6, 1, generator=g)
    W, c = torch.randn(3, 1, generator=g), torch.randn(3, generator=g)
    B = code_step(X, torch.ones(6, 1), W, c, H, lam2=0.7)
    for i in range(6):  # one bit: each item's best of {-1, +1}, by brute force
        cost = [float(((X[i] - b * W[:, 0] - c) ** 2).sum() + 0.7 * (H[i, 0] - b) ** 2) for b in (-1.0, 1.0)]
        assert B[i, 0] == (-1.0, 1.0)[int(np.argmin(cost))]
    B2 = torch.where(torch.randn(6, 2, generator=g) > 0, 1.0, -1.0)
    W2, c2 = decoder_step(X, B2, lam1=0.1)
    # normal equations of min ||X - B W^T - c||^2 / (2m) + lam1/2 ||W||^2 (c free)
    m = 6
    Bc, Xc = B2 - B2.mean(0), X - X.mean(0)
    grad = -(Xc - Bc @ W2.T).T @ Bc / m + 0.1 * W2
    np.testing.assert_allclose(grad.numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(c2.numpy(), (X.mean(0) - W2 @ B2.mean(0)).numpy(), atol=1e-6)
    Hh = T([[1.0, 0.0], [1.0, 2.0]])
    Bb = T([[1.0, -1.0], [1.0, 1.0]])
    # lam2/(2m) ||H-B||^2 = 1/4 * (0 + 1 + 0 + 1); H^T H / 2 = [[1, 1], [1, 2]] - I -> 1 + 1 + 1 = 3, / 2;
    # column sums [2, 2] -> 8, lam4 / (2m) = 1/4
    assert float(encoder_objective(Hh, Bb, 1.0, 1.0, 1.0)) == pytest.approx(0.5 + 1.5 + 2.0)


# -- SADH ------------------------------------------------------------------------------------
def test_sadh_anchor_graph_and_discrete_codes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(30, 4, generator=g) * 0.1, torch.randn(30, 4, generator=g) * 0.1 + 3
    R = torch.cat([a, b])
    Z, lam_inv = anchor_graph(R, anchors=6, s=2, gen=g)
    np.testing.assert_allclose(Z.sum(1).numpy(), 1, rtol=1e-5)
    assert int((Z > 0).sum(1).max()) <= 2
    B0 = spectral_codes(Z, lam_inv, 1)
    assert len(set(B0[:30, 0].tolist())) == 1 and B0[0, 0] != B0[30, 0]  # the two clusters split
    rand = torch.where(torch.randn(60, 2, generator=g) > 0, 1.0, -1.0)
    B = discrete_codes(Z, lam_inv, rand, rho=0.1, iters=3)
    assert graph_objective(Z, lam_inv, B) >= graph_objective(Z, lam_inv, rand)
    assert set(B.unique().tolist()) <= {-1.0, 1.0}


# -- the interface ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", DEEP_NAMES)
def test_deterministic_one_item_one_code_and_round_trip(name, clustered, tmp_path):
    a = make_baseline(name, 16, seed=5, **TINY[name]).fit(clustered)
    b = make_baseline(name, 16, seed=5, **TINY[name]).fit(clustered)
    codes = a.encode(clustered)
    assert codes.shape == (len(clustered), 16) and set(np.unique(codes)) <= {-1, 1}
    np.testing.assert_array_equal(codes, b.encode(clustered))
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    np.testing.assert_array_equal(codes[7:8], a.encode(clustered[7:8]))  # one item, one code
    c = make_baseline(name, 16, seed=6, **TINY[name]).fit(clustered)
    assert (c.encode(clustered) != codes).any()
    path = a.save(tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert type(loaded) is type(a) and repr(loaded) == repr(a)
    np.testing.assert_array_equal(loaded.encode(clustered), codes)


def test_deep_bad_inputs(clustered, tmp_path):
    with pytest.raises(InputError, match="cibhash has no parameter tau"):
        make_baseline("cibhash", 16, tau=1)
    with pytest.raises(InputError, match="centre must be one of yes, no"):
        make_baseline("ssdh", 16, centre="maybe")
    with pytest.raises(InputError, match="at least 4 training items"):
        make_baseline("bihalf", 8).fit(clustered[:3])
    with pytest.raises(InputError, match="48-d features"):
        make_baseline("bihalf", 8, epochs=1).fit(clustered).encode(clustered[:, :5])
    with pytest.raises(InputError, match="views must have shape"):
        make_baseline("cibhash", 8, epochs=1).fit(clustered, views=np.zeros((5, 2, 48)))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read baseline model"):
        load_model(bad)


def test_views_sampler_draws_two_distinct_entries():
    X = torch.arange(4.0).view(4, 1).repeat(1, 3)
    V = torch.stack([X + 10, X + 20], dim=1)  # (4, 2, 3)
    views = Views(X, V.numpy(), 0.2, 0.5, torch.Generator().manual_seed(0))
    assert views.variant == "views"
    for _ in range(5):
        v1, v2 = views.pair(torch.arange(4))
        assert not torch.equal(v1, v2)
        assert set((v1[:, 0] - X[:, 0]).tolist()) <= {0.0, 10.0, 20.0}
    fb = Views(X, None, 0.5, 0.0, torch.Generator().manual_seed(0))
    one = fb.one(torch.arange(4))
    assert fb.variant == "fallback" and set(torch.unique(one / X.clamp_min(1e-9)).round().tolist()) <= {0.0, 2.0}


def test_config_files_match_the_defaults():
    for cls in DEEP:
        values = yaml.safe_load(config_file(cls.name).read_text())
        assert values == {p.name: p.default for p in cls.params}, cls.name


def test_methods_all_is_table_3_plus_two():
    names = check_methods(["all"])
    assert names[0] == "lagnh" and set(names[1:]) == set(BASELINES) and len(names) == 14


# -- views in the dataset format (v2) --------------------------------------------------------
def test_views_round_trip_and_version_1_still_read(tmp_path, clustered):
    n = len(clustered)
    rows = np.arange(0, n, 3)[::-1]
    V = np.random.default_rng(0).standard_normal((len(rows), 2, 48)).astype(np.float32)
    with DatasetWriter(tmp_path / "d", n=n, feature_dim=48, aux_dim=2) as w:
        w.write_rows(0, clustered, np.zeros((n, 2), np.float32))
        w.set_splits(train=rows, query=np.array([1]), database=np.array([2, 4]))
        w.set_views(rows, V, {"how": "test"})
    ds = Dataset.open(tmp_path / "d")
    assert ds.manifest["version"] == 2 and ds.has_views and ds.manifest["views"]["k"] == 2
    assert ds.views.dtype == np.float16 and isinstance(ds.views, np.memmap)
    np.testing.assert_array_equal(ds.views_of(rows), V.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(ds.views_of(rows[:2][::-1]), V[:2][::-1].astype(np.float16).astype(np.float32))
    with pytest.raises(InputError, match="no stored views"):
        ds.views_of([1])
    with pytest.raises(InputError, match="views must have shape"):
        with DatasetWriter(tmp_path / "e", n=n, feature_dim=48, aux_dim=2) as w:
            w.set_views(rows, V[:, :, :5])
    assert not (tmp_path / "e").exists()
    old = write_dataset(tmp_path / "v1", clustered, np.zeros((n, 2), np.float32),
                        splits={"train": np.arange(10), "query": [10], "database": [11]})
    m = json.loads((old / "manifest.json").read_text())
    assert "views" not in m
    m["version"] = 1
    (old / "manifest.json").write_text(json.dumps(m))
    v1 = Dataset.open(old)
    assert not v1.has_views and v1.feature_rows([0]).shape == (1, 48)
    m["version"] = 3
    (old / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="reads versions 1, 2"):
        Dataset.open(old)


def test_demo_augmentation_is_seeded():
    from lagnh_pyg.extract.views import augment, view_features

    imgs = (np.random.default_rng(0).random((3, 56, 56)) * 255).astype(np.uint8)
    a = augment(imgs, torch.Generator().manual_seed(1))
    b = augment(imgs, torch.Generator().manual_seed(1))
    assert a.dtype == np.uint8 and a.shape == imgs.shape
    np.testing.assert_array_equal(a, b)
    assert (a != imgs).any()
    f = view_features(imgs, 2, lambda x: x.reshape(len(x), -1)[:, :5].astype(np.float32), seed=3)
    assert f.shape == (3, 2, 5) and (f[:, 0] != f[:, 1]).any()


# -- fit -> encode -> evaluate, through the CLI ----------------------------------------------
@pytest.fixture(scope="module")
def views_dataset(small_synthetic, tmp_path_factory):
    """small_synthetic plus two noisy 'views' of each training item."""
    ds = Dataset.open(small_synthetic)
    train = ds.split("train")
    X = ds.feature_rows()
    rng = np.random.default_rng(0)
    V = X[train][:, None, :] + 0.1 * rng.standard_normal((len(train), 2, X.shape[1])).astype(np.float32)
    out = tmp_path_factory.mktemp("views") / "syn"
    with DatasetWriter(out, n=ds.n, feature_dim=ds.feature_dim, aux_dim=ds.aux_dim, label_dim=ds.label_dim) as w:
        w.write_rows(0, X, ds.aux_rows(), ds.label_rows())
        w.set_splits(**{s: ds.split(s) for s in ("train", "query", "database")})
        w.set_views(train, V)
    return out


@pytest.mark.parametrize("name", DEEP_NAMES)
def test_cli_fit_encode_evaluate(name, views_dataset, tmp_path):
    runner = CliRunner()
    run_dir = tmp_path / name
    sets = [x for k, v in TINY[name].items() for x in ("--set", f"{k}={v}")]
    res = runner.invoke(app, ["baseline", name, str(views_dataset), "--bits", "16", "--out", str(run_dir),
                              "--device", "cpu", *sets])
    assert res.exit_code == 0, res.output
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["model_file"] == "model.safetensors" and meta["config_file"].endswith(f"{name}.yaml")
    if BASELINES[name].uses_views:
        assert meta["fit"]["augmentation"]["variant"] == "views" and "views:" in res.output
    assert runner.invoke(app, ["encode", str(run_dir), "--split", "all", "--device", "cpu"]).exit_code == 0
    model = load_model(run_dir / "model.safetensors")
    ds = Dataset.open(views_dataset)
    codes = np.load(run_dir / "codes" / "query.npy")
    np.testing.assert_array_equal(codes, pack_codes(model.encode(ds.feature_rows(ds.split("query")))))
    res = runner.invoke(app, ["evaluate", str(run_dir), "--no-plots", "--json", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    assert 0 < json.loads((tmp_path / "ev.json").read_text())["map"] <= 1


def test_fit_run_falls_back_without_views(small_synthetic, tmp_path):
    run = fit_run("cibhash", small_synthetic, 16, tmp_path / "r", seed=1, **TINY["cibhash"])
    aug = json.loads((run / "run.json").read_text())["fit"]["augmentation"]
    assert aug == {"variant": "fallback", "view_dropout": 0.2, "view_noise": 0.5}


def test_cli_deep_bad_input_one_line(small_synthetic, tmp_path):
    res = CliRunner().invoke(app, ["baseline", "tbh", str(small_synthetic), "--bits", "16", "--out",
                                   str(tmp_path / "r"), "--set", "epochs=0"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert "epochs must be at least 1" in res.stderr and not (tmp_path / "r").exists()


def test_accuracy_report_has_the_size_time_table(small_synthetic, tmp_path):
    from lagnh_pyg.experiments import ExperimentSpec, run_accuracy
    from lagnh_pyg.experiments.accuracy import stored_numbers

    spec = ExperimentSpec(data_dir=small_synthetic, out_dir=tmp_path / "rep", topk=100, device="cpu")
    files = run_accuracy(spec, ["lsh", "cibhash"], [16])
    md = files["markdown"].read_text()
    assert "## Model size and time (Table 4)" in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| lsh") or line.startswith("| cibhash")}
    assert "fallback" in rows["cibhash"].split("|")[-2] and rows["lsh"].split("|")[-2].strip() == "-"
    # stored numbers: LSH's mean and projection; CIBHash's two layers (d -> 1024 -> 16)
    lsh_run, cib_run = (tmp_path / "rep" / "runs" / f"{m}-16bits-seed0" for m in ("lsh", "cibhash"))
    assert stored_numbers(lsh_run) == 64 + 64 * 16
    assert stored_numbers(cib_run) == 64 * 1024 + 1024 + 1024 * 16 + 16
    assert f"{stored_numbers(cib_run):,}" in rows["cibhash"]
