"""`lagnh extract objects --classifier` (offline ImageNet top-k aux) and `lagnh index-folder`
(an untagged folder to a served index, resumable)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from serve_fixtures import write_photos
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app

pytest.importorskip("timm")
pytest.importorskip("torchvision")
runner = CliRunner()


def test_topk_probabilities():
    from lagnh_pyg.extract.classifier import topk_probabilities

    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 5.0, 0.0, -1.0]], np.float32)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = topk_probabilities(logits, 2)
    want = np.zeros_like(p)
    want[0, [1, 3]] = p[0, [1, 3]]
    want[1, [0, 1]] = p[1, [0, 1]]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_classifier_aux_is_sparse_topk_and_named(tmp_path):
    import scipy.sparse as sp

    write_photos(tmp_path / "p", 4)
    (tmp_path / "p" / "bad.png").write_bytes(b"not a png")
    r = runner.invoke(app, ["extract", "objects", str(tmp_path / "p"), "--classifier", "efficientnet_lite0", "--topk", "3",
                            "--image-size", "64", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.stderr
    aux = sp.load_npz(tmp_path / "o" / "aux.npz")
    names = (tmp_path / "o" / "names.txt").read_text().splitlines()
    assert aux.shape == (4, 1000) and np.all(np.diff(aux.indptr) == 3)
    assert np.all(aux.data > 0) and np.all(aux.sum(1) <= 1 + 1e-5)
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
    assert "bad.png" in (tmp_path / "o" / "skipped.tsv").read_text()
    bad = runner.invoke(app, ["extract", "objects", str(tmp_path / "p"), "--classifier", "efficientnet_lite0",
                              "--topk", "0", "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "--topk" in bad.stderr


def test_index_folder_to_a_served_index_and_resume(tmp_path):
    from fastapi.testclient import TestClient

    from lagnh_pyg.serve import create_app

    rels = write_photos(tmp_path / "photos", 24)
    cmd = ["index-folder", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--method", "itq", "--bits", "16",
           "--image-size", "32", "--device", "cpu", "--workers", "0", "--topk", "3"]
    r = runner.invoke(app, cmd)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert "24 pictures searchable" in r.stdout and f"next: lagnh serve {tmp_path / 'run'}" in r.stdout
    c = TestClient(create_app(tmp_path / "run"), base_url="http://127.0.0.1:8000")
    info = c.get("/api/info").json()
    assert info["items"] == 24 and info["upload_search"] is True
    # every picture of the folder is found at distance 0 by its own bytes (query split included)
    for rel in rels[:6]:
        res = c.post("/api/search", files={"image": ("x.png", (tmp_path / "photos" / rel).read_bytes())},
                     data={"k": "3"}).json()
        assert res["results"][0]["distance"] == 0 and rel in [x["id"] for x in res["results"] if x["distance"] == 0]
    # interrupted after training: the next run redoes only what is missing
    shutil.rmtree(tmp_path / "run" / "index")
    (tmp_path / "run" / "codes" / "query.npy").unlink()
    again = runner.invoke(app, cmd)
    assert again.exit_code == 0, again.stderr
    for stage in ("features", "aux", "import", "train"):
        assert f"[{stage}] done before; skipped" in again.stdout
    assert "[encode] ..." in again.stdout and "[index] ..." in again.stdout and "24 pictures searchable" in again.stdout
    small = tmp_path / "few"
    write_photos(small, 5)
    r = runner.invoke(app, ["index-folder", str(small), "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "too small" in r.stderr


def test_index_folder_trains_lagnh_by_default(tmp_path):
    """The default method: LAGNH (tiny settings), small-folder limits applied to its config."""
    write_photos(tmp_path / "photos", 30)
    r = runner.invoke(app, ["index-folder", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--bits", "16",
                            "--image-size", "32", "--device", "cpu", "--workers", "0", "--set", "train.epochs=2",
                            "--set", "model.hidden=32", "--set", "model.att_dim=16"])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    from lagnh_pyg.collection import Collection

    coll = Collection(tmp_path / "run")
    assert coll.run.method == "lagnh" and len(coll) == 30


def test_index_folder_reads_as_one_command(tmp_path):
    """LAGNH end to end: stage lines, one `next:` hint (its own, last), no sub-command chatter,
    held-out queries not counted as added; the progress line fits 80 columns at every stage."""
    import io

    from fastapi.testclient import TestClient
    from rich.console import Console

    from lagnh_pyg.cli.index_folder import Pipeline
    from lagnh_pyg.index_folder import STAGES
    from lagnh_pyg.serve import create_app

    write_photos(tmp_path / "photos", 24)
    r = runner.invoke(app, ["index-folder", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--bits", "16",
                            "--image-size", "32", "--device", "cpu", "--workers", "0", "--topk", "3",
                            "--set", "train.epochs=3"])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert [x for x in lines if "next:" in x] == [f"next: lagnh serve {tmp_path / 'run'}"] == lines[-1:]
    assert [x for x in lines if x.startswith("[")] == [f"[{s}] ..." for s in STAGES]
    assert not any(x.startswith(("wrote", "trained")) for x in lines)
    info = TestClient(create_app(tmp_path / "run"), base_url="http://127.0.0.1:8000").get("/api/info").json()
    assert info["items"] == 24 and info["added_items"] == 0 and info["held_out_items"] == 1
    # the display itself, on an 80-column terminal: one line, never cut
    buf = io.StringIO()
    con = Console(file=buf, width=80, force_terminal=True, color_system=None)
    pipe = Pipeline(console=con)
    with pipe:
        for step, name in enumerate(STAGES, start=1):
            pipe.begin(name, step, len(STAGES), 999_999)
            pipe.advance(123_456)
            rendered = io.StringIO()
            Console(file=rendered, width=80, force_terminal=True, color_system=None).print(pipe.bar.get_renderable())
            shown = rendered.getvalue().rstrip("\n").splitlines()
            assert len(shown) == 1 and len(shown[0]) <= 80 and "…" not in shown[0], shown
            assert f"[{STAGES.index(name) + 1}/7] {name}" in shown[0] and "123456/999999" in shown[0]
