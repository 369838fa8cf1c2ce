import numpy as np

from lagnh_pyg.demo.pipeline import run_demo


def test_demo_pipeline_on_small_data(small_synthetic, tmp_path):
    res = run_demo(tmp_path / "out", data_dir=small_synthetic, methods=("lagnh", "itq"), bits=(16,),
                   overrides=("train.epochs=2", "model.hidden=32", "model.att_dim=32", "model.anchors=64"),
                   faithful_bits=16, device="cpu", log=lambda m: None)
    lines = res.table_md.splitlines()
    assert "protocol lagnh" in lines[0] and "16 bits" in lines[0]
    rows = {ln.split("|")[1].strip(): float(ln.split("|")[2]) for ln in lines[2:]}
    assert set(rows) == {"lagnh", "itq", "lagnh-faithful"} and all(0 < v <= 1 for v in rows.values())
    page = res.html.read_text()
    assert page.count('class="grid"') == 8 and "lagnh" in page
    assert (res.report_dir / "pk-16bits.png").is_file()
    assert np.isfinite(res.seconds)
    # the run the demo's closing line tells the user to serve: indexed, and the service opens it
    assert res.serve_run == res.report_dir / "runs" / "lagnh-16bits-seed0"
    assert (res.serve_run / "index" / "meta.json").is_file()
    try:
        from lagnh_pyg.serve import create_app
    except ImportError:  # the serve extra is not installed
        return
    assert create_app(res.serve_run).state.collection.info()["method"] == "lagnh"


def test_demo_trains_its_lagnh_runs_side_by_side(small_synthetic, tmp_path):
    """jobs=2: the LAGNH runs are fitted in two spawned processes, then the report reuses those
    finished runs instead of fitting them again; a bad count is one clear error."""
    import json

    import pytest

    from lagnh_pyg.errors import InputError

    said = []
    res = run_demo(tmp_path / "out", data_dir=small_synthetic, methods=("lagnh", "itq"), bits=(16,),
                   overrides=("train.epochs=2", "model.hidden=32", "model.att_dim=32", "model.anchors=64"),
                   faithful_bits=16, device="cpu", log=said.append, jobs=2)
    assert any("2 LAGNH runs in 2 processes at once" in m for m in said)
    rows = {ln.split("|")[1].strip(): float(ln.split("|")[2]) for ln in res.table_md.splitlines()[2:]}
    assert set(rows) == {"lagnh", "itq", "lagnh-faithful"} and all(0 < v <= 1 for v in rows.values())
    cell = json.loads((res.report_dir / "runs" / "lagnh-16bits-seed0" / "cell.json").read_text())["result"]
    assert round(cell["map"], 4) == rows["lagnh"]
    assert cell["train_seconds"] > 0  # the fit's own time, kept when the report reused the run
    reported = {c["name"]: c for c in json.loads(res.files["json"].read_text())["cells"]}
    assert reported["lagnh-16bits-seed0"]["reused"] is True  # fitted by a worker, not fitted again
    with pytest.raises(InputError, match="jobs must be"):
        run_demo(tmp_path / "bad", data_dir=small_synthetic, methods=("lagnh",), bits=(16,), device="cpu",
                 log=said.append, jobs=-1, faithful_bits=None)


def test_the_cli_thread_budget_bounds_the_side_by_side_runs(monkeypatch):
    """`lagnh --threads N`: the demo's default jobs (one per core) share N threads, not every
    core: with N = 1 it trains one run after the other (no worker processes), with N = 2 on
    what the OS reports as 8 cores it starts 2 processes of one thread each."""
    from typer.testing import CliRunner

    from cli.main import app
    from lagnh_pyg import runtime
    from lagnh_pyg.demo import pipeline

    monkeypatch.setattr(runtime, "usable_cores", lambda: 8)
    monkeypatch.setattr(runtime, "_BUDGET", None)
    started = []

    class Pool:  # records what would be started, runs nothing
        def __init__(self, workers, mp_context=None):
            started.append(workers)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, base, method, bits, name, threads):
            started.append(threads)
            import concurrent.futures as cf

            f = cf.Future()
            f.set_result(None)
            return f

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", Pool)
    cells = [("lagnh", b, f"lagnh-{b}bits-seed0") for b in (16, 32, 64)]
    spec = type("Spec", (), dict.fromkeys(("data_dir", "out_dir", "config", "overrides", "topk", "protocol",
                                           "device", "reuse")))()
    try:
        assert CliRunner().invoke(app, ["--threads", "1", "demo", "--help"]).exit_code == 0
        assert runtime.thread_budget() == 1
        pipeline._fit_side_by_side(spec, cells, 0, lambda m: None)
        assert started == []  # one process: the runs are fitted one after the other
        runtime.set_thread_budget(2)
        pipeline._fit_side_by_side(spec, cells, 0, lambda m: None)
        assert started == [2, 1, 1, 1]  # 2 workers, one thread each
        runtime.set_thread_budget(None)
        started.clear()
        pipeline._fit_side_by_side(spec, cells, 0, lambda m: None)
        assert started == [3, 2, 2, 2]  # no budget: the cores (8) shared by the 3 runs
    finally:
        runtime.set_thread_budget(None)
