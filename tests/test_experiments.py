"""Experiments: reports with provenance, numbers equal to the metric, reuse, LAGNH wiring.

Baselines are real (fast). LAGNH training is replaced by a recording fake in the fast tests
(the wiring: overrides, resume, seeds); one slow test trains a tiny real LAGNH.
"""

import json
import zlib

import numpy as np
import pytest
from retrieval_fakes import make_run
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import write_dataset
from lagnh_pyg.errors import InputError
from lagnh_pyg.experiments import (
    ExperimentSpec,
    run_ablation,
    run_accuracy,
    run_epochs,
    run_sensitivity,
    run_timing,
)
from lagnh_pyg.metrics import mean_average_precision
from lagnh_pyg.retrieval import codes_dataset
from lagnh_pyg.rundir import Run

runner = CliRunner()


def map_of_run(run_dir, topk):
    run = Run.open(run_dir)
    ds = codes_dataset(run)
    return mean_average_precision(run.load_codes("query"), run.load_codes("database"),
                                  ds.label_rows(ds.split("query")), ds.label_rows(ds.split("database")), topk=topk)


@pytest.fixture
def fake_lagnh(monkeypatch):
    """Replace train_run by a fake that writes a fake run and records its calls."""
    calls = []

    def train_run(data_dir, config, bits, out_dir, overrides=(), resume=False, device="auto", progress=True):
        calls.append({"overrides": list(overrides), "resume": resume, "bits": bits, "out": str(out_dir)})
        make_run(data_dir, out_dir, bits=bits, seed=zlib.crc32(repr(overrides).encode()), encode=False)
        return out_dir

    import lagnh_pyg.training

    monkeypatch.setattr(lagnh_pyg.training, "train_run", train_run)
    return calls


def test_accuracy_report_matches_metric_and_is_reused(small_synthetic, tmp_path):
    spec = ExperimentSpec(small_synthetic, tmp_path / "rep", topk=50, seeds=(0, 1))
    files = run_accuracy(spec, ["itq", "lsh"], [16, 32])
    out = tmp_path / "rep"
    md = (out / "accuracy.md").read_text()
    assert "protocol **lagnh**" in md and "| itq |" in md and "| 16 bits | 32 bits |" in md
    assert "±" in md  # two seeds: mean ± std
    rows = (out / "accuracy.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2 and all(",lagnh,50," in r for r in rows[1:])
    rep = json.loads((out / "accuracy.json").read_text())
    prov = rep["provenance"]
    assert prov["protocol"] == "lagnh" and prov["seeds"] == [0, 1] and prov["topk"] == 50
    assert set(prov["split_sizes"]) == {"train", "query", "database"}
    assert {"software", "machine", "dataset", "model_selection"} <= set(prov)
    for c in rep["cells"]:
        assert c["map"] == pytest.approx(map_of_run(c["run_dir"], 50), abs=1e-12)
    assert files["pk_16"].is_file() and files["pk_32"].is_file()
    # a second call reuses every finished run and reports the same numbers
    spec2 = ExperimentSpec(small_synthetic, out, topk=50, seeds=(0, 1))
    run_accuracy(spec2, ["itq", "lsh"], [16, 32])
    rep2 = json.loads((out / "accuracy.json").read_text())
    assert all(c["reused"] for c in rep2["cells"])
    assert [c["map"] for c in rep2["cells"]] == [c["map"] for c in rep["cells"]]
    # another protocol changes the spec's evaluation but the runs' fits are still reused
    spec3 = ExperimentSpec(small_synthetic, out, topk=50, seeds=(0,), protocol="calctopmap")
    run_accuracy(spec3, ["itq"], [16])
    assert "protocol **calctopmap**" in (out / "accuracy.md").read_text()
    (c,) = json.loads((out / "accuracy.json").read_text())["cells"]
    assert c["reused"] and c["extra"]["evaluation"] == {"protocol": "calctopmap", "topk": 50}
    run = Run.open(c["run_dir"])
    ds = codes_dataset(run)
    ref = mean_average_precision(run.load_codes("query"), run.load_codes("database"), ds.label_rows(ds.split("query")),
                                 ds.label_rows(ds.split("database")), topk=50, protocol="calctopmap")
    assert c["map"] == pytest.approx(ref, abs=1e-12)


def test_timing_measures_afresh(small_synthetic, tmp_path):
    spec = ExperimentSpec(small_synthetic, tmp_path / "rep", topk=20)
    run_timing(spec, ["pcah"], [16])
    run_timing(spec, ["pcah"], [16])
    rep = json.loads((tmp_path / "rep" / "timing.json").read_text())
    assert not rep["cells"][0]["reused"] and rep["cells"][0]["train_seconds"] > 0
    assert "encoding µs/item" in (tmp_path / "rep" / "timing.md").read_text()


def test_ablation_wiring(small_synthetic, tmp_path, fake_lagnh):
    spec = ExperimentSpec(small_synthetic, tmp_path / "rep", topk=20, overrides=("train.epochs=3",))
    run_ablation(spec, ["no-aux", "recons-Sa"], [16])
    assert [c["overrides"] for c in fake_lagnh] == [
        ["train.epochs=3", "train.seed=0", "variant=no-aux"], ["train.epochs=3", "train.seed=0", "variant=recons-Sa"]]
    md = (tmp_path / "rep" / "ablation.md").read_text()
    assert "| no-aux |" in md and "| recons-Sa |" in md
    with pytest.raises(InputError, match="unknown variant"):
        run_ablation(spec, ["no-such"], [16])


def test_sensitivity_wiring(small_synthetic, tmp_path, fake_lagnh):
    spec = ExperimentSpec(small_synthetic, tmp_path / "rep", topk=20)
    files = run_sensitivity(spec, {"alpha": [0.1, 10.0], "eta": [0.0, 1.0]}, [16])
    assert [c["overrides"][-1] for c in fake_lagnh] == ["loss.alpha=0.1", "loss.alpha=10.0", "graph.eta=0.0",
                                                       "graph.eta=1.0"]
    assert files["fig_alpha"].is_file() and files["fig_eta"].is_file()
    csv = (tmp_path / "rep" / "sensitivity.csv").read_text().splitlines()
    assert csv[0].startswith("method,bits,seed,parameter,value,protocol")
    with pytest.raises(InputError, match="unknown parameter"):
        run_sensitivity(spec, {"gamma": [1.0]}, [16])


def test_epochs_resumes_between_points(small_synthetic, tmp_path, fake_lagnh):
    spec = ExperimentSpec(small_synthetic, tmp_path / "rep", topk=20)
    files = run_epochs(spec, [1, 2, 4], [16])
    assert [c["resume"] for c in fake_lagnh] == [False, True, True]
    assert [c["overrides"][-1] for c in fake_lagnh] == ["train.epochs=1", "train.epochs=2", "train.epochs=4"]
    rep = json.loads((tmp_path / "rep" / "epochs.json").read_text())
    secs = [c["train_seconds"] for c in rep["cells"]]
    assert secs == sorted(secs)  # cumulative
    assert files["figure"].is_file()
    with pytest.raises(InputError, match="increasing"):
        run_epochs(spec, [4, 2], [16])


def test_spec_and_method_refusals(small_synthetic, tmp_path):
    with pytest.raises(InputError, match="unknown method"):
        run_accuracy(ExperimentSpec(small_synthetic, tmp_path / "r"), ["itq", "nope"], [16])
    with pytest.raises(InputError, match="multiple of 8"):
        run_accuracy(ExperimentSpec(small_synthetic, tmp_path / "r"), ["itq"], [12])
    with pytest.raises(InputError, match="unknown protocol"):
        ExperimentSpec(small_synthetic, tmp_path / "r", protocol="x")
    rng = np.random.default_rng(0)
    nolab = write_dataset(tmp_path / "nolab", rng.standard_normal((30, 4)).astype(np.float32),
                          (rng.random((30, 3)) < 0.5).astype(np.float32),
                          splits={"train": np.arange(10), "query": np.arange(10, 15), "database": np.arange(15, 30)})
    with pytest.raises(InputError, match="needs ground-truth labels"):
        ExperimentSpec(nolab, tmp_path / "r")


def test_cli_accuracy_and_bad_input(small_synthetic, tmp_path):
    res = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out", str(tmp_path / "rep"),
                              "--methods", "pcah,lsh", "--bits", "16", "--topk", "30"])
    assert res.exit_code == 0, res.stderr
    assert "| pcah |" in res.stdout and "wrote" in res.stdout and "protocol **lagnh**" in res.stdout
    for args, msg in ((["--methods", "foo"], "unknown method"), (["--bits", "16,x"], "--bits"),
                      (["--seeds", ""], "--seeds"), (["--protocol", "bad"], "unknown protocol")):
        res = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out",
                                  str(tmp_path / "rep2"), "--methods", "lsh", "--bits", "16", *args])
        assert res.exit_code == 2 and res.stderr.startswith("error: ") and msg in res.stderr, res.stderr
    res = runner.invoke(app, ["experiment", "sensitivity", "--data", str(small_synthetic), "--out", str(tmp_path / "r3"),
                              "--param", "gamma=1"])
    assert res.exit_code == 2 and "unknown parameter" in res.stderr


@pytest.mark.slow
def test_accuracy_with_real_lagnh(small_synthetic, tmp_path):
    tiny = ("train.epochs=2", "model.hidden=64", "model.att_dim=32", "model.anchors=64", "loss.recon_nodes=256")
    spec = ExperimentSpec(small_synthetic, tmp_path / "rep", topk=50, overrides=tiny, device="cpu")
    run_accuracy(spec, ["lagnh", "itq"], [16])
    rep = json.loads((tmp_path / "rep" / "accuracy.json").read_text())
    for c in rep["cells"]:
        assert c["map"] == pytest.approx(map_of_run(c["run_dir"], 50), abs=1e-12)
    assert Run.open(rep["cells"][0]["run_dir"]).method == "lagnh"


def test_cli_accuracy_methods_all_is_table_3_plus_two(small_synthetic, tmp_path, fake_lagnh):
    """--methods all: LAGNH (a recording fake here), the six shallow and seven deep baselines
    with their configs/baselines defaults, one row each in both tables."""
    out = tmp_path / "table3"
    r = runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out", str(out),
                            "--methods", "all", "--bits", "16", "--topk", "100", "--device", "cpu", "--blocks", "visual"])
    assert r.exit_code == 0, r.output
    md = (out / "accuracy.md").read_text()
    names = ["lagnh", "lsh", "sklsh", "sh", "pcah", "itq", "sgh", "uhbdnn", "deepbit", "ssdh", "sadh", "tbh", "cibhash",
             "bihalf"]
    for name in names:
        assert md.count(f"\n| {name} |") == 2, name  # MAP table and size/time table
    cells = json.loads((out / "accuracy.json").read_text())["cells"]
    assert [c["method"] for c in cells] == names and all(0 < c["map"] <= 1 for c in cells)
    assert (out / "pk-16bits.png").is_file() and len(fake_lagnh) == 1
