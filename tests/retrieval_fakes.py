"""A tiny registered hashing method for retrieval tests: sign of a fixed random projection
of the features (and of aux, so that codes carry the labels' signal), saved as .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lagnh_pyg.data.store import Dataset
from lagnh_pyg.encoders import encode_splits, register_method
from lagnh_pyg.rundir import Run, write_run_meta

METHOD = "fakeproj"


class FakeEncoder:
    batch_independent = True

    def __init__(self, W: np.ndarray, V: np.ndarray):
        self.W, self.V = W, V
        self.bits = W.shape[1]

    def encode(self, features, aux):
        x = features - features.mean(1, keepdims=True)
        return np.where(x @ self.W + 4 * (aux - 0.2) @ self.V > 0, 1, -1).astype(np.int8)


def load_fake(run: Run, device: str = "cpu") -> FakeEncoder:
    z = np.load(run.model_path)
    return FakeEncoder(z["W"], z["V"])


register_method(METHOD, "retrieval_fakes:load_fake")


def make_run(data_dir, run_dir, bits: int = 32, seed: int = 0, encode: bool = True) -> Run:
    """Fit (draw) the fake model on ``data_dir``, write a run directory, encode its splits."""
    ds = Dataset.open(data_dir)
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / "model.npz", W=rng.standard_normal((ds.feature_dim, bits)).astype(np.float32),
             V=rng.standard_normal((ds.aux_dim, bits)).astype(np.float32))
    write_run_meta(run_dir, method=METHOD, bits=bits, data=ds, model_file="model.npz", config={"seed": seed})
    run = Run.open(run_dir)
    if encode:
        encode_splits(run, ["query", "database"])
    return run
