"""The one training loop: resume in every mode, divergence, the run directory's life cycle,
the lock, thread counts, and the update rules' DDP-relevant properties."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers import MODES, TINY_LAGNH
from typer.testing import CliRunner

from lagnh_pyg.checkpoint import load_checkpoint
from lagnh_pyg.config import load_config
from lagnh_pyg.encoders import encode_splits
from lagnh_pyg.errors import InputError
from lagnh_pyg.rundir import Run, RunWriter, fingerprint
from lagnh_pyg.training import Trainer, TrainingDiverged, train_run

TINY = TINY_LAGNH


def _state(run_dir):
    ck = load_checkpoint(run_dir / "checkpoint.pt")
    return ck


def _same_model(a, b):
    for part in ("model", "disc", "opt_g"):
        x, y = a[part], b[part]
        if part == "opt_g":
            x, y = x["state"], y["state"]
            assert x.keys() == y.keys()
            for k in x:
                assert all(torch.equal(x[k][n], y[k][n]) for n in x[k] if isinstance(x[k][n], torch.Tensor)), part
            continue
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), f"{part}.{k}"


def _codes(run_dir):
    run = Run.open(run_dir)
    encode_splits(run, ["query"])
    return run.load_codes("query")


@pytest.fixture(scope="module")
def four_epochs(tiny_runs):
    return tiny_runs


@pytest.mark.parametrize("mode", MODES)
def test_resume_raising_epochs_equals_uninterrupted(small_synthetic, four_epochs, tmp_path, mode):
    """2 epochs, then --resume with train.epochs=4, gives the model and codes of 4 at once."""
    out = tmp_path / mode
    train_run(small_synthetic, TINY, 16, out, overrides=[f"train.mode={mode}", "train.epochs=2"], progress=False)
    assert _state(out)["complete"] and _state(out)["epoch"] == 2
    train_run(small_synthetic, TINY, 16, out, overrides=[f"train.mode={mode}", "train.epochs=4"], resume=True,
              progress=False)
    _same_model(_state(four_epochs[mode]), _state(out))
    assert np.array_equal(_codes(four_epochs[mode]), _codes(out))
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.parametrize("mode", ["faithful", "sampled"])
def test_resume_after_interruption_equals_uninterrupted(small_synthetic, four_epochs, tmp_path, monkeypatch, mode):
    """Killed during epoch 3 (after the epoch-2 checkpoint), then --resume: the same model.
    The batches of epochs 3-4 come from the generators' checkpointed states."""
    out = tmp_path / mode
    steps_per_epoch = {"faithful": 4, "sampled": 4}[mode]  # 400 nodes in batches of 128 / 100
    calls = {"n": 0}
    real = Trainer.step

    def dying(self, step):
        calls["n"] += 1
        if calls["n"] == 2 * steps_per_epoch + 2:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(Trainer, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(small_synthetic, TINY, 16, out, overrides=[f"train.mode={mode}"], progress=False)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    monkeypatch.setattr(Trainer, "step", real)
    train_run(small_synthetic, TINY, 16, out, overrides=[f"train.mode={mode}"], resume=True, progress=False)
    _same_model(_state(four_epochs[mode]), _state(out))


# -- divergence -----------------------------------------------------------------------------------
def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_last_checkpoint(small_synthetic, tmp_path,
                                                                                   monkeypatch):
    real = Trainer.step
    calls = {"n": 0}

    def nan_at_epoch_3(self, step):
        calls["n"] += 1
        terms = real(self, step)
        return {**terms, "recon": float("nan")} if calls["n"] == 3 else terms

    monkeypatch.setattr(Trainer, "step", nan_at_epoch_3)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"epoch 3: loss term 'recon' is nan; the last good checkpoint "
                                               r"\(epoch 2\)"):
        train_run(small_synthetic, TINY, 16, out, progress=False)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2 and not (out / "run.json").exists()
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_cli_train_that_diverges_exits_1_with_one_line(small_synthetic, tmp_path):
    from lagnh_pyg.cli.main import app

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "16", "--out",
                                 str(tmp_path / "run"), "--set", "train.lr=1e20", "--no-progress"])
    assert r.exit_code == 1, r.output
    lines = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "training diverged at epoch 1" in lines[0] and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()  # nothing was good enough to keep


def test_encode_refuses_a_model_with_non_finite_parameters(small_synthetic, four_epochs, tmp_path):
    from lagnh_pyg.encode import load_lagnh_encoder

    run_dir = tmp_path / "run"
    shutil.copytree(four_epochs["full"], run_dir)
    ck = load_checkpoint(run_dir / "checkpoint.pt")
    ck["model"]["classifier.weight"][0, 0] = float("inf")
    torch.save(ck, run_dir / "checkpoint.pt")
    meta = json.loads((run_dir / "run.json").read_text())
    meta["model_fingerprint"] = fingerprint(run_dir / "checkpoint.pt")
    (run_dir / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="non-finite values in classifier.weight"):
        load_lagnh_encoder(Run.open(run_dir))


# -- the run directory's life cycle ---------------------------------------------------------------
def test_interrupted_before_the_first_checkpoint_leaves_nothing(small_synthetic, tmp_path, monkeypatch):
    def dying(self, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "step", dying)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_run(small_synthetic, TINY, 16, out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sigkill_before_the_first_checkpoint_does_not_leave_the_user_stuck(small_synthetic, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    cfg = tmp_path / "slow.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 10000, "checkpoint_every": 0}}))
    out = tmp_path / "runs" / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "lagnh_pyg", "train", str(small_synthetic), "--config", str(cfg),
                             "--bits", "8", "--out", str(out), "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def started():  # the run's temporary sibling holds its log: the epochs have begun
            return out.parent.is_dir() and any(p.name.startswith(".run.tmp-") and (p / "log.jsonl").is_file()
                                               for p in out.parent.iterdir())

        deadline = time.time() + 120
        while not started():
            assert time.time() < deadline and proc.poll() is None, "training never started"
            time.sleep(0.2)
        time.sleep(1.0)  # inside the epochs
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not out.exists()  # nothing that blocks a rerun
    train_run(small_synthetic, TINY, 8, out, overrides=["train.epochs=1"], progress=False)
    assert (out / "run.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".run.tmp-")]  # the killed one's removed


def test_a_sigkilled_first_epoch_leaves_only_a_hidden_sibling_that_the_next_run_removes(small_synthetic, tmp_path):
    import fcntl
    import os

    stale = tmp_path / ".run.tmp-dead1"  # what SIGKILL in the first epoch leaves now
    stale.mkdir()
    (stale / "log.jsonl").write_text("")
    (stale / ".lock").write_text("")
    live = tmp_path / ".run.tmp-live1"  # another run still in its first epoch
    live.mkdir()
    (live / ".lock").write_text("")
    fd = os.open(live / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    foreign = tmp_path / ".run.tmp-notours"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    try:
        train_run(small_synthetic, TINY, 8, tmp_path / "run", overrides=["train.epochs=1"], progress=False)
    finally:
        os.close(fd)
    assert not stale.exists() and live.exists() and (foreign / "thesis.tex").exists()
    assert (tmp_path / "run" / "run.json").is_file()


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_fresh(small_synthetic, four_epochs, tmp_path,
                                                                        caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text("")  # what a SIGKILL in epoch 1 used to leave
    with caplog.at_level("WARNING"):
        train_run(small_synthetic, TINY, 16, out, resume=True, progress=False)
    assert "starting a fresh run" in caplog.text
    _same_model(_state(four_epochs["full"]), _state(out))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="has no checkpoint.pt"):
        train_run(small_synthetic, TINY, 16, tmp_path / "other", resume=True, progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_failed_train_leaves_no_run_dir(small_synthetic, tmp_path):
    from lagnh_pyg.cli.main import app

    data = tmp_path / "data"
    shutil.copytree(small_synthetic, data)
    feats = data / "features.npy"
    feats.write_bytes(feats.read_bytes()[: feats.stat().st_size // 2])
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    r = CliRunner().invoke(app, ["train", str(data), "--config", str(cfg), "--bits", "16", "--out",
                                 str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]


def test_train_out_an_existing_file_is_exit_2(small_synthetic, tmp_path):
    from lagnh_pyg.cli.main import app

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    target = tmp_path / "a-file"
    target.write_text("keep me")
    r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "16", "--out",
                                 str(target), "--no-progress"])
    assert r.exit_code == 2 and "error:" in r.output and str(target) in r.output
    assert target.read_text() == "keep me"
    with pytest.raises(InputError, match="is an existing file"):  # the library refuses it too
        train_run(small_synthetic, TINY, 16, target, progress=False)
    assert target.read_text() == "keep me"


def test_a_second_resume_of_a_locked_run_is_refused(small_synthetic, four_epochs, tmp_path):
    from lagnh_pyg.cli.main import app

    out = tmp_path / "run"
    shutil.copytree(four_epochs["full"], out)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    holder = RunWriter(out, resume=True)  # another `train --resume` in progress
    try:
        r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "16", "--out",
                                     str(out), "--resume", "--no-progress", "--set", "train.epochs=5"])
        assert r.exit_code == 2 and "being trained by another process" in r.output, r.output
    finally:
        holder.close(ok=True)
    train_run(small_synthetic, TINY, 16, out, overrides=["train.epochs=5"], resume=True, progress=False)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 5


def test_train_leaves_thread_counts_as_they_were(small_synthetic, tmp_path):
    before = torch.get_num_threads()
    train_run(small_synthetic, TINY, 8, tmp_path / "run", overrides=["train.threads=2", "train.epochs=1"],
              progress=False)
    assert torch.get_num_threads() == before


# -- the update rules ------------------------------------------------------------------------------
def test_generator_updates_give_the_discriminator_no_gradients(small_synthetic):
    """Only the discriminator's own update accumulates gradients into it (under DDP its
    all-reduce hooks would otherwise run on every generator step too)."""
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.graph import build_graph

    ds = Dataset.open(small_synthetic)
    rows = ds.split("train")
    graph = build_graph(ds.feature_rows(rows), ds.aux_rows(rows), k=5)
    cfg = load_config(TINY, ["train.g_steps=3"])
    torch.manual_seed(0)
    tr = Trainer(cfg, ds.feature_dim, ds.aux_dim, 16)
    tr.model.set_feature_stats(graph.x)
    hooks = []
    for p in tr.disc.parameters():
        p.register_post_accumulate_grad_hook(lambda p: hooks.append(1))
    tr.graph_step(graph)
    assert len(hooks) == len(list(tr.disc.parameters()))  # one accumulation each, not 1 + g_steps


def test_sampled_step_runs_the_classifier_once_per_forward(small_synthetic):
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.graph import build_graph, topology_of_graph
    from lagnh_pyg.training import SampledSource
    from lagnh_pyg.training.sampled import BatchFetcher, SampledModule

    ds = Dataset.open(small_synthetic)
    rows = ds.split("train")
    x, aux = ds.feature_rows(rows), ds.aux_rows(rows)
    graph = build_graph(x, aux, k=5)
    cfg = load_config(TINY, ["train.g_steps=2"])
    torch.manual_seed(0)
    tr = Trainer(cfg, ds.feature_dim, ds.aux_dim, 16)
    calls = []
    real = tr.model.classifier.forward
    tr.model.classifier.forward = lambda z: calls.append(1) or real(z)
    source = SampledSource(SampledModule(tr.model), topology_of_graph(graph), BatchFetcher(x, aux), [4, 3], None,
                           100, seed=0)
    tr.step(next(iter(source)))
    assert len(calls) == 1 + 2  # the no-grad forward, then one per generator update
