import os

# Small torch ops on a 2-core CI machine: oversubscription costs more than it gains.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import serve_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory):
    """A 1,200-item synthetic dataset (64-d, 8 classes) shared by the session's tests."""
    from lagnh_pyg.data.synthetic import SyntheticSpec, generate

    out = tmp_path_factory.mktemp("data") / "syn"
    spec = SyntheticSpec(n=1200, dim=64, classes=8, junk_tags=8, n_train=400, n_query=100, seed=1)
    return generate(spec, out)


@pytest.fixture(scope="session")
def tiny_runs(small_synthetic, tmp_path_factory):
    """A 16-bit LAGNH run of ``TINY_LAGNH`` (4 epochs, checkpoints every 2) on
    ``small_synthetic`` in each training mode: ``{"full": RUN_DIR, "faithful": ..., "sampled": ...}``.
    Tests that change a run copy it first; encoding into it is deterministic."""
    from helpers import MODES, TINY_LAGNH

    from lagnh_pyg.training import train_run

    root = tmp_path_factory.mktemp("tiny-runs")
    return {m: train_run(small_synthetic, TINY_LAGNH, 16, root / m, overrides=[f"train.mode={m}"], progress=False)
            for m in MODES}


# the runs the service tests (test_serve, test_serve_browser, test_dedup) search: built once a session
@pytest.fixture(scope="session")
def syn_run(small_synthetic, tmp_path_factory):
    return serve_fixtures.synthetic_run(small_synthetic, tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="session")
def pic_run(tmp_path_factory):
    pytest.importorskip("torchvision")
    return serve_fixtures.photo_run(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def fresh_syn_run(syn_run, tmp_path):
    """A private copy of the synthetic run (tests that add or delete items change it)."""
    return Path(shutil.copytree(syn_run, tmp_path / "run"))


@pytest.fixture
def fresh_pic_run(pic_run, tmp_path):
    return Path(shutil.copytree(pic_run, tmp_path / "run"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread per test (CI has 2 cores; some tests set their own)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
