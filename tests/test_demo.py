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
