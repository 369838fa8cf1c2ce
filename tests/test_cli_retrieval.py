"""`lagnh evaluate | index | search` through the CLI on a tiny registered fake method."""

import json
import shutil

import numpy as np
import pytest
from helpers import error_line
from retrieval_fakes import make_run
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import write_dataset
from lagnh_pyg.metrics import mean_average_precision
from lagnh_pyg.retrieval import codes_dataset

runner = CliRunner()


def ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def run_dir(small_synthetic, tmp_path_factory):
    return make_run(small_synthetic, tmp_path_factory.mktemp("runs") / "fake32", bits=32).root


@pytest.fixture
def fresh_run(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory):
    """30 items with real PNG files on disk, 4 classes, paths relative to the dataset dir."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imgdata")
    rng = np.random.default_rng(3)
    n = 30
    labels = np.zeros((n, 4), np.uint8)
    labels[np.arange(n), np.arange(n) % 4] = 1
    feats = (labels @ rng.standard_normal((4, 16)) * 3 + rng.standard_normal((n, 16))).astype(np.float32)
    imgdir = root / "images"
    imgdir.mkdir()
    paths = []
    for i in range(n):
        colour = tuple(int(c) for c in (np.array([60, 120, 180, 240])[i % 4], 40 * (i % 5), 90))
        Image.new("RGB", (24, 24), colour).save(imgdir / f"im{i}.png")
        paths.append(str(imgdir / f"im{i}.png"))
    out = root / "ds"
    write_dataset(out, feats, labels.astype(np.float32), labels=labels,
                  splits={"train": np.arange(0, 10), "query": np.arange(10, 14), "database": np.arange(14, n)},
                  ids=[f"img{i}" for i in range(n)], paths=paths)
    return out


def test_evaluate_writes_metrics_and_names_protocol(run_dir, tmp_path):
    out = ok(runner.invoke(app, ["evaluate", str(run_dir), "--topk", "50", "--json", str(tmp_path / "s.json")]))
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0].startswith("MAP@50 (protocol lagnh) = ")
    assert all("protocol lagnh" in ln for ln in lines)
    mdir = run_dir / "metrics"
    for name in ("lagnh-top50.json", "lagnh-top50-pk.csv", "lagnh-top50-pr.csv", "lagnh-top50-pk.png", "lagnh-top50-pr.png"):
        assert (mdir / name).is_file(), name
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary == json.loads((mdir / "lagnh-top50.json").read_text())
    assert summary["protocol"] == "lagnh" and summary["topk"] == 50
    assert set(summary["split_sizes"]) == {"train", "query", "database"}
    assert {"software", "machine", "dataset"} <= set(summary)
    assert all(row.startswith("lagnh,") for row in (mdir / "lagnh-top50-pk.csv").read_text().splitlines()[1:])
    assert (mdir / "lagnh-top50-pk.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("protocol,topk", [("calctopmap", "all"), ("hit", "7"), ("lagnh", "100")])
def test_evaluate_matches_the_metric(run_dir, protocol, topk):
    from lagnh_pyg.rundir import Run

    out = ok(runner.invoke(app, ["evaluate", str(run_dir), "--topk", topk, "--protocol", protocol, "--no-plots"]))
    run = Run.open(run_dir)
    ds = codes_dataset(run)
    ref = mean_average_precision(run.load_codes("query"), run.load_codes("database"),
                                 ds.label_rows(ds.split("query")), ds.label_rows(ds.split("database")),
                                 topk=None if topk == "all" else int(topk), protocol=protocol)
    assert f"MAP@{topk} (protocol {protocol}) = {ref:.4f}" in out


def test_evaluate_bad_input(fresh_run, tmp_path, small_synthetic):
    error_line(runner.invoke(app, ["evaluate", str(fresh_run), "--protocol", "nope"]), "unknown protocol")
    error_line(runner.invoke(app, ["evaluate", str(fresh_run), "--topk", "0"]), "--topk")
    error_line(runner.invoke(app, ["evaluate", str(tmp_path / "nowhere")]), "not a run directory")
    # query and database codes of different lengths
    q = np.load(fresh_run / "codes" / "query.npy")
    np.save(fresh_run / "codes" / "query.npy", q[:, :2])
    error_line(runner.invoke(app, ["evaluate", str(fresh_run)]), "not a packed 32-bit code file")
    # codes not made yet
    shutil.rmtree(fresh_run / "codes")
    error_line(runner.invoke(app, ["evaluate", str(fresh_run)]), "lagnh encode")


def test_evaluate_refuses_dataset_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    data = write_dataset(tmp_path / "nolabels", rng.standard_normal((40, 8)).astype(np.float32),
                         (rng.random((40, 5)) < 0.3).astype(np.float32),
                         splits={"train": np.arange(10), "query": np.arange(10, 15), "database": np.arange(15, 40)})
    run = make_run(data, tmp_path / "run", bits=16)
    error_line(runner.invoke(app, ["evaluate", str(run.root)]), "needs ground-truth labels")


def test_index_then_search(fresh_run):
    out = ok(runner.invoke(app, ["index", str(fresh_run)]))
    assert "kind=flat" in out and (fresh_run / "index" / "meta.json").is_file()
    res = runner.invoke(app, ["search", str(fresh_run), "--id", "3", "-k", "5", "--json"])
    got = json.loads(ok(res))
    assert [r["rank"] for r in got["results"]] == [1, 2, 3, 4, 5]
    d = [r["distance"] for r in got["results"]]
    assert d == sorted(d)
    assert all(r["relevant"] in (True, False) for r in got["results"])
    # the text form lists the same ids
    text = ok(runner.invoke(app, ["search", str(fresh_run), "--id", "3", "-k", "5"]))
    assert [ln.split()[2] for ln in text.splitlines()[1:]] == [r["id"] for r in got["results"]]


def test_hash_index_through_the_cli(fresh_run):
    out = ok(runner.invoke(app, ["index", str(fresh_run), "--kind", "multihash", "--nhash", "2", "--hash-bits", "16"]))
    assert "kind=multihash" in out
    got = json.loads(ok(runner.invoke(app, ["search", str(fresh_run), "--id", "3", "-k", "4", "--json"])))
    assert got["index"] == "multihash" and got["results"][0]["distance"] == 0  # item 3 finds itself
    error_line(runner.invoke(app, ["index", str(fresh_run), "--kind", "ivf"]), "unknown index kind")


def test_search_results_equal_brute_force(fresh_run):
    from lagnh_pyg.metrics import hamming_rank
    from lagnh_pyg.rundir import Run

    run = Run.open(fresh_run)
    ds = codes_dataset(run)
    qrow = int(ds.split("query")[0])
    got = json.loads(ok(runner.invoke(app, ["search", str(fresh_run), "--id", ds.ids[qrow], "-k", "12", "--json"])))
    dist, idx = hamming_rank(run.load_codes("query")[:1], run.load_codes("database"), 12)
    db = ds.split("database")
    assert [r["id"] for r in got["results"]] == [ds.ids[db[i]] for i in idx[0]]
    assert [r["distance"] for r in got["results"]] == dist[0].tolist()


def test_search_k_beyond_database_is_clamped(fresh_run):
    res = runner.invoke(app, ["search", str(fresh_run), "--id", "3", "-k", "100000", "--json"])
    got = json.loads(ok(res))
    n_db = len(np.load(fresh_run / "codes" / "database.npy"))
    assert len(got["results"]) == n_db
    assert "clamped" in res.stderr


def test_search_refuses_index_of_another_model(fresh_run):
    ok(runner.invoke(app, ["index", str(fresh_run)]))
    meta_path = fresh_run / "index" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model_fingerprint"] = "0123456789abcdef"
    meta_path.write_text(json.dumps(meta))
    error_line(runner.invoke(app, ["search", str(fresh_run), "--id", "3"]), "holds codes of model 0123456789abcdef")


def test_search_bad_input(fresh_run, tmp_path):
    error_line(runner.invoke(app, ["search", str(fresh_run)]), "exactly one of --id ITEM or --image PATH")
    error_line(runner.invoke(app, ["search", str(fresh_run), "--id", "3", "--image", "x.png"]), "exactly one")
    error_line(runner.invoke(app, ["search", str(fresh_run), "--id", "no-such-item"]), "is not in dataset")
    error_line(runner.invoke(app, ["search", str(fresh_run), "--id", "3", "-k", "0"]), "-k must be a positive")
    img = tmp_path / "new.png"
    img.write_bytes(b"not really")
    error_line(runner.invoke(app, ["search", str(fresh_run), "--image", str(img)]), "--image needs a dataset built from `lagnh extract features`")


def test_index_of_empty_database_is_refused(fresh_run):
    from lagnh_pyg.errors import InputError
    from lagnh_pyg.index import HammingIndex

    ix = HammingIndex(32)
    with pytest.raises(InputError, match="empty"):
        ix.search(np.zeros((1, 4), np.uint8), 1)
    np.save(fresh_run / "codes" / "database.npy", np.zeros((0, 4), np.uint8))
    error_line(runner.invoke(app, ["index", str(fresh_run)]), "has 0 rows")


def test_search_html_contact_sheet(image_dataset, tmp_path):
    run = make_run(image_dataset, tmp_path / "run", bits=16)
    page = tmp_path / "sheet.html"
    out = ok(runner.invoke(app, ["search", str(run.root), "--id", "img10", "-k", "6", "--html", str(page)]))
    assert "wrote" in out
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/jpeg;base64,") == 7  # the query and six results, embedded
    assert "✓ relevant" in html or "✗ irrelevant" in html
    assert "ties by database order" in html
    assert "src=\"http" not in html and "src=\"/" not in html  # self-contained


def test_search_encodes_items_outside_the_stored_splits(image_dataset, tmp_path):
    run = make_run(image_dataset, tmp_path / "run", bits=16)
    # img0 is a training item: not in the query or database codes, encoded now with the model
    got = json.loads(ok(runner.invoke(app, ["search", str(run.root), "--id", "img0", "-k", "3", "--json"])))
    assert len(got["results"]) == 3


def test_encode_other_dataset_goes_to_out_and_keeps_the_runs_codes(fresh_run, small_synthetic, tmp_path):
    own = {p.name: p.read_bytes() for p in (fresh_run / "codes").iterdir()}
    other = tmp_path / "other"
    shutil.copytree(small_synthetic, other)
    r = runner.invoke(app, ["encode", str(fresh_run), "--data", str(other), "--device", "cpu"])
    error_line(r, "pass --out DIR")
    ok(runner.invoke(app, ["encode", str(fresh_run), "--data", str(other), "--device", "cpu", "--out",
                           str(tmp_path / "codes-other")]))
    meta = json.loads((tmp_path / "codes-other" / "meta.json").read_text())
    assert meta["format"] == "lagnh-codes" and meta["data_dir"] == str(other.resolve())
    np.testing.assert_array_equal(np.load(tmp_path / "codes-other" / "query.npy"), np.load(fresh_run / "codes" / "query.npy"))
    assert {p.name: p.read_bytes() for p in (fresh_run / "codes").iterdir()} == own


def test_encode_warns_when_the_training_dataset_changed(small_synthetic, tmp_path):
    from lagnh_pyg.data.store import Dataset

    data = tmp_path / "data"
    shutil.copytree(small_synthetic, data)
    run = make_run(data, tmp_path / "run", bits=16, encode=False).root
    ok(runner.invoke(app, ["encode", str(run), "--device", "cpu"]))
    ds = Dataset.open(data)
    X = ds.feature_rows() + 1.0  # the same dataset directory, re-imported with other features
    write_dataset(data, X, ds.aux_rows(), labels=ds.label_rows(), splits={s: ds.split(s) for s in ("train", "query", "database")},
                  overwrite=True)
    r = runner.invoke(app, ["encode", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.stderr
    assert "changed since" in r.stderr and "fingerprint" in r.stderr
