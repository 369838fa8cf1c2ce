"""Two CPU processes (gloo) under torchrun train one sampled run data-parallel."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lagnh_pyg.distributed import DistContext

CFG = {
    "graph": {"k": 5},
    "model": {"anchors": 32, "att_dim": 16, "hidden": 32},
    "train": {"mode": "sampled", "epochs": 6, "lr": 2e-3, "g_steps": 2, "checkpoint_every": 0, "threads": 1,
              "num_neighbors": [4, 3], "seed_batch_size": 50},
    "encode": {"k": 5},
}

WORKER = textwrap.dedent("""
    import os, sys, torch
    import lagnh_pyg.training.runner as R
    seen = {}
    real = R.fit
    def spy(trainer, *a, **kw):
        seen["trainer"] = trainer
        return real(trainer, *a, **kw)
    R.fit = spy
    from lagnh_pyg.config import load_config
    cfg = load_config(sys.argv[3])
    R.train_run(sys.argv[1], cfg, 16, sys.argv[2], device="cpu", progress=False, distributed=True)
    t = seen["trainer"]
    torch.save({"model": t.model.state_dict(), "disc": t.disc.state_dict()},
               os.path.join(sys.argv[4], f"rank{os.environ['RANK']}.pt"))
""")


def test_shard_is_equal_length_and_disjoint():
    nodes = torch.arange(11)
    parts = [DistContext(rank=r, world_size=3).shard(nodes) for r in range(3)]
    assert all(p.numel() == 3 for p in parts)
    assert len(set(torch.cat(parts).tolist())) == 9


def test_two_gloo_ranks_end_identical_and_loss_falls(small_synthetic, tmp_path):
    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CFG))
    (tmp_path / "worker.py").write_text(WORKER)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", str(tmp_path / "worker.py"), str(small_synthetic),
           str(run), str(tmp_path / "cfg.yaml"), str(tmp_path)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("model", "disc"):
        for k, v in w0[part].items():
            if k == "sigma2":  # a buffer each rank sets from its own last batch
                continue
            assert torch.equal(v, w1[part][k]), f"{part}.{k} differs between ranks"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 7))
    assert log[-1]["loss_g"] < log[0]["loss_g"]
    assert (run / "checkpoint.pt").is_file() and (run / "run.json").is_file()


def _torchrun_train(data, cfg, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", "-m", "lagnh_pyg", "train", str(data), "--config", str(cfg), "--bits", "16",
           "--out", str(out), "--device", "cpu", "--distributed", "--no-progress", *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_ddp_resume_raising_epochs_equals_uninterrupted(small_synthetic, tmp_path):
    """Under DDP every rank's RNG and sampler states are checkpointed: 2 epochs, then
    --resume with 4, gives rank 0's model of 4 epochs at once."""
    import yaml

    from lagnh_pyg.checkpoint import load_checkpoint

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "train": {**CFG["train"], "epochs": 4}}))
    _torchrun_train(small_synthetic, cfg, tmp_path / "a")
    _torchrun_train(small_synthetic, cfg, tmp_path / "b", "--set", "train.epochs=2")
    _torchrun_train(small_synthetic, cfg, tmp_path / "b", "--resume")
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4 and len(b["ranks"]) == 2
    for part in ("model", "disc"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), f"{part}.{k}"
