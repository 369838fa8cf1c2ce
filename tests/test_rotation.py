"""The codes' rotation (model.code_rotation: itq), fitted after training."""

import copy

import numpy as np
import pytest
import torch

from lagnh_pyg.codes import itq_rotation
from lagnh_pyg.config import load_config


def _brute_quantisation(V, R):
    Z = V @ R
    return float(np.square(np.where(Z >= 0, 1.0, -1.0) - Z).sum() / len(V))


def test_itq_rotation_is_orthogonal_and_never_worsens():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 8))
    R, losses = itq_rotation(V, 30, np.random.default_rng(1))
    np.testing.assert_allclose(R.T @ R, np.eye(8), atol=1e-10)
    assert len(losses) == 31 and all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))
    assert losses[-1] == pytest.approx(_brute_quantisation(V, R))
    assert losses[-1] < losses[0]


def test_itq_rotation_finds_the_axes_of_a_rotated_hypercube():
    """Points at the corners of a rotated cube: ITQ's rotation brings them back to the corners
    (zero quantisation loss), whatever its random start."""
    rng = np.random.default_rng(2)
    B = np.where(rng.random((400, 6)) < 0.5, -1.0, 1.0)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    R, losses = itq_rotation(B @ Q, 100, np.random.default_rng(3))
    assert losses[-1] < 1e-8


def test_config_of_the_rotation():
    assert load_config().model.code_rotation == "none"  # the paper's sgn(z)
    assert load_config("demo", ["train.mode=faithful"]).model.code_rotation == "none"
    assert load_config("demo", ["model.code_rotation=itq"]).model.code_rotation == "itq"
    with pytest.raises(Exception, match="code_rotation"):
        load_config("demo", ["model.code_rotation=pca"])


@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_a_rotated_run_encodes_sign_of_z_times_r(mode, small_synthetic, tmp_path):
    """A run with model.code_rotation=itq stores an orthogonal R fitted on its training items,
    and its encoding is z R, z the unrotated GCN output of the same model."""
    from helpers import TINY_LAGNH

    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.encode import load_lagnh_encoder
    from lagnh_pyg.rundir import Run
    from lagnh_pyg.training import train_run

    cfg = copy.deepcopy(TINY_LAGNH)
    cfg["model"]["code_rotation"] = "itq"
    out = train_run(small_synthetic, cfg, 16, tmp_path / "run", overrides=[f"train.mode={mode}"], progress=False)
    enc = load_lagnh_encoder(Run.open(out))
    R = enc.model.code_rotation.double().numpy()
    np.testing.assert_allclose(R.T @ R, np.eye(16), atol=1e-5)
    assert not np.allclose(R, np.eye(16), atol=1e-3)  # fitted, not the initial identity
    ds = Dataset.open(small_synthetic)
    q = ds.split("query")[:30]
    z_rot = enc.encode(ds.feature_rows(q), ds.aux_rows(q))
    enc.model.code_rotation.copy_(torch.eye(16))
    z = enc.encode(ds.feature_rows(q), ds.aux_rows(q))
    np.testing.assert_allclose(z_rot, z @ R.astype(np.float32), rtol=1e-4, atol=1e-5)
    # the rotation was fitted on the training items' unit-length z: its quantisation loss there
    # is below that of the unrotated signs
    tr = ds.split("train")
    zt = enc.encode(ds.feature_rows(tr), ds.aux_rows(tr)).astype(np.float64)
    zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    assert _brute_quantisation(zt, R) < _brute_quantisation(zt, np.eye(16))
