import json

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_LAGNH, ref_map
from typer.testing import CliRunner

from lagnh_pyg.checkpoint import load_checkpoint
from lagnh_pyg.config import load_config
from lagnh_pyg.encoders import encode_splits
from lagnh_pyg.errors import InputError
from lagnh_pyg.rundir import Run
from lagnh_pyg.training import Trainer, train_run

TINY = TINY_LAGNH


def _codes(run_dir):
    run = Run.open(run_dir)
    encode_splits(run, ["query", "database"])
    return run.load_codes("query"), run.load_codes("database")


@pytest.fixture(scope="module")
def tiny_run(tiny_runs):
    return tiny_runs["full"]


def test_run_directory(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"run.json", "checkpoint.pt", "encoder.safetensors", "config.yaml", "log.jsonl"} <= names
    meta = json.loads((tiny_run / "run.json").read_text())
    assert meta["method"] == "lagnh" and meta["bits"] == 16 and meta["model_file"] == "checkpoint.pt"
    log = [json.loads(line) for line in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert {"loss_d", "loss_g", "adv", "quant", "recon", "sem", "seconds"} <= set(log[0])
    assert all(np.isfinite(r["loss_g"]) for r in log)
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["graph"]["k"] == 5 and cfg["variant"] == "lagnh"
    ck = load_checkpoint(tiny_run / "checkpoint.pt")  # weights_only=True
    assert ck["epoch"] == 4 and ck["complete"]


def test_resume_equals_uninterrupted(small_synthetic, tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    calls = {"n": 0}
    real = Trainer.step

    def dying(self, step):  # full mode: one step per epoch
        calls["n"] += 1
        if calls["n"] == 3:  # after the epoch-2 checkpoint
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(Trainer, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        train_run(small_synthetic, TINY, 16, out, progress=False)
    assert not (out / "run.json").exists() and load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    monkeypatch.setattr(Trainer, "step", real)
    with pytest.raises(InputError, match="already exists"):
        train_run(small_synthetic, TINY, 16, out, progress=False)
    train_run(small_synthetic, TINY, 16, out, resume=True, progress=False)
    a = load_checkpoint(tiny_run / "checkpoint.pt")["model"]
    b = load_checkpoint(out / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    qa, da = _codes(tiny_run)
    qb, db = _codes(out)
    assert np.array_equal(qa, qb) and np.array_equal(da, db)
    assert len((out / "log.jsonl").read_text().splitlines()) == 4


def test_resume_rejects_other_config_and_bad_checkpoints(small_synthetic, tiny_run, tmp_path):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(tiny_run, out)
    with pytest.raises(InputError, match="another config"):
        train_run(small_synthetic, TINY, 16, out, overrides=["graph.eta=3"], resume=True, progress=False)
    with pytest.raises(InputError, match="16-bit"):
        train_run(small_synthetic, TINY, 32, out, resume=True, progress=False)
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="corrupt"):
        train_run(small_synthetic, TINY, 16, out, resume=True, progress=False)
    torch.save({"weights": torch.zeros(2)}, out / "checkpoint.pt")
    with pytest.raises(InputError, match="not a lagnh checkpoint"):
        train_run(small_synthetic, TINY, 16, out, resume=True, progress=False)
    torch.save({"format": "lagnh-checkpoint", "version": 0}, out / "checkpoint.pt")
    with pytest.raises(InputError, match="version 0"):
        train_run(small_synthetic, TINY, 16, out, resume=True, progress=False)


def test_bad_inputs_are_one_clear_error(small_synthetic, tmp_path):
    with pytest.raises(InputError, match="multiple of 8"):
        train_run(small_synthetic, TINY, 12, tmp_path / "a", progress=False)
    with pytest.raises(InputError, match="graph.k=400"):
        train_run(small_synthetic, TINY, 16, tmp_path / "b", overrides=["graph.k=400"], progress=False)
    with pytest.raises(InputError, match="unknown config key 'train.epoch'"):
        load_config(TINY, ["train.epoch=3"])
    with pytest.raises(InputError, match="train.epochs must be an integer"):
        load_config(TINY, ["train.epochs=many"])
    with pytest.raises(InputError, match="model.attention must be one of"):
        load_config(TINY, ["model.attention=softmax"])
    with pytest.raises(InputError, match="unknown section"):
        load_config({"optim": {}})
    assert load_config(TINY, ["train.lr=1e-3", "graph.sigma=2"]).graph.sigma == 2.0


def test_variants_and_faithful_config():
    cfg = load_config(TINY, ["variant=no-aux"])
    assert cfg.model.attention == "none" and cfg.graph.weights == "visual" and cfg.loss.alpha == 0
    assert load_config(TINY, ["variant=recons-feat"]).loss.reconstruct == "feat"
    f = load_config(TINY, ["train.mode=faithful"])
    assert (f.model.attention, f.graph.sigma, f.model.normalization, f.encode.mode) == ("batch", 1.0, "row", "faithful")


@pytest.mark.parametrize("variant", ["no-aux", "only-Sa", "recons-ZZ", "recons-feat", "recons-S"])
def test_variants_train(small_synthetic, tmp_path, variant):
    sets = [f"variant={variant}", "train.epochs=1", "train.checkpoint_every=0"]
    run = train_run(small_synthetic, TINY, 8, tmp_path / variant, overrides=sets, progress=False)
    q, _ = _codes(run)
    assert q.shape[1] == 1 and len(q) > 0


def test_faithful_mode_trains_and_encodes(small_synthetic, tmp_path):
    sets = ["train.mode=faithful", "train.epochs=2", "train.batch_size=128", "encode.batch_size=64"]
    run = train_run(small_synthetic, TINY, 16, tmp_path / "f", overrides=sets, progress=False)
    assert not (run / "encoder.safetensors").exists()
    q, d = _codes(run)
    from lagnh_pyg.data.store import Dataset

    ds = Dataset.open(small_synthetic)
    assert q.shape == (len(ds.split("query")), 2) and d.shape == (len(ds.split("database")), 2)
    assert json.loads((run / "codes" / "meta.json").read_text())["encoding"] == "faithful"


def test_cli_train_exit_codes(small_synthetic, tmp_path):
    from lagnh_pyg.cli.main import app

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "12",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "multiple of 8" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "8",
                                 "--out", str(tmp_path / "y"), "--set", "nope=1"])
    assert r.exit_code == 2 and "unknown config key" in r.output
    r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "8",
                                 "--out", str(tmp_path / "z"), "--set", "train.epochs=1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "z" / "run.json").is_file()


def test_an_unread_key_warns_when_set_and_the_shipped_configs_do_not_set_it(small_synthetic, tmp_path):
    """encode.k loads (old configs and runs carry it) but nothing reads it: an override warns,
    and no shipped config sets it."""
    import warnings

    from lagnh_pyg.cli.main import app
    from lagnh_pyg.config import UNREAD, find_config, load_yaml, shipped_configs

    with pytest.warns(UserWarning, match="encode.k is no longer read"):
        assert load_config(TINY, ["encode.k=40"]).encode.k == 40
    for name in shipped_configs():
        body = load_yaml(find_config(name), "config")
        for key in UNREAD:
            sec, field = key.split(".")
            assert field not in (body.get(sec) or {}), f"{name}.yaml sets {key}"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_config(name)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    with pytest.warns(UserWarning, match="encode.k is no longer read.*set graph.k"):  # shown once the command succeeds
        r = CliRunner().invoke(app, ["train", str(small_synthetic), "--config", str(cfg), "--bits", "8",
                                     "--out", str(tmp_path / "w"), "--set", "train.epochs=1", "--set", "encode.k=3",
                                     "--no-progress"])
    assert r.exit_code == 0, r.output


def test_lagnh_beats_sign_of_pca(small_synthetic, tmp_path):
    """On synthetic data with informative aux, LAGNH's MAP@1000 clearly beats PCA signs."""
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.encode import load_lagnh_encoder

    ds = Dataset.open(small_synthetic)
    cfg = {**TINY, "train": {**TINY["train"], "epochs": 15, "checkpoint_every": 0}}
    run = train_run(small_synthetic, cfg, 16, tmp_path / "acc", progress=False)
    enc = load_lagnh_encoder(Run.open(run))
    q, d = ds.split("query"), ds.split("database")
    ql, dl = ds.label_rows(q), ds.label_rows(d)
    ours = ref_map(enc.encode(ds.feature_rows(q), ds.aux_rows(q)), enc.encode(ds.feature_rows(d), ds.aux_rows(d)), ql, dl, 1000)
    X = ds.feature_rows(ds.split("train"))
    mean = X.mean(0)
    w = np.linalg.svd(X - mean, full_matrices=False)[2][:16].T
    pca = ref_map((ds.feature_rows(q) - mean) @ w, (ds.feature_rows(d) - mean) @ w, ql, dl, 1000)
    print(f"MAP@1000 lagnh {ours:.4f} vs sign-of-PCA {pca:.4f}")
    assert ours > pca + 0.05, (ours, pca)


def test_all_zero_aux_trains_without_nan(tmp_path):
    """A dataset without any aux semantics: no NaN in losses or codes."""
    from lagnh_pyg.data.store import write_dataset
    from lagnh_pyg.encode import load_lagnh_encoder

    rng = np.random.default_rng(0)
    X = rng.random((120, 16), dtype=np.float32)
    data = write_dataset(tmp_path / "noaux", X, np.zeros((120, 5), np.float32),
                         splits={"train": np.arange(80), "query": np.arange(80, 100), "database": np.arange(100, 120)})
    run = train_run(data, TINY, 8, tmp_path / "run", overrides=["train.epochs=2"], progress=False)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(v) for r in log for v in r.values())
    z = load_lagnh_encoder(Run.open(run)).encode(X[80:], np.zeros((40, 5), np.float32))
    assert np.isfinite(z).all()
