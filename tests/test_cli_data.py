"""`lagnh data import | info | synthetic` through the CLI: exit codes, one error line, output."""

import json

import numpy as np
import pytest
from helpers import error_line
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import Dataset

runner = CliRunner()


def _npy_inputs(tmp_path, n=30, d=8, c=6, m=4):
    rng = np.random.default_rng(0)
    files = {
        "features": rng.standard_normal((n, d)).astype(np.float32),
        "aux": (rng.random((n, c)) < 0.3).astype(np.float32),
        "labels": (rng.random((n, m)) < 0.4).astype(np.uint8),
        "train-idx": np.arange(0, 10),
        "query-idx": np.arange(10, 15),
        "database-idx": np.arange(15, n),
    }
    files["labels"][:, 0] = 1
    files["labels"][0] = 0  # an all-zero label row is allowed
    return files


def _run_import(tmp_path, files, out="ds", extra=()):
    args = ["data", "import"]
    for k, v in files.items():
        p = tmp_path / f"{k}.npy"
        if v is not None:
            np.save(p, v)
        args += [f"--{k}", str(p)]
    return runner.invoke(app, args + ["--out", str(tmp_path / out), *extra])


def test_import_npy_contract_form(tmp_path):
    files = _npy_inputs(tmp_path)
    result = _run_import(tmp_path, files)
    assert result.exit_code == 0, result.output
    ds = Dataset.open(tmp_path / "ds")
    np.testing.assert_array_equal(ds.feature_rows(), files["features"])
    np.testing.assert_array_equal(ds.split("database"), files["database-idx"])
    assert "wrote dataset" in result.stdout


def test_import_npy_sparse_aux_and_ids(tmp_path):
    files = _npy_inputs(tmp_path)
    (tmp_path / "ids.txt").write_text("\n".join(f"item{i}" for i in range(30)) + "\n")
    result = _run_import(tmp_path, files, extra=["--sparse-aux", "--ids", str(tmp_path / "ids.txt")])
    assert result.exit_code == 0, result.output
    ds = Dataset.open(tmp_path / "ds")
    assert ds.manifest["aux"]["storage"] == "sparse" and ds.ids[3] == "item3"


def _bad(files, case):
    f = dict(files)
    if case == "rows":
        f["aux"] = f["aux"][:-2]
    elif case == "nan":
        f["features"] = f["features"].copy()
        f["features"][4, 1] = np.nan
    elif case == "inf":
        f["features"] = f["features"].copy()
        f["features"][2, 0] = -np.inf
    elif case == "split range":
        f["query-idx"] = np.array([10, 11, 30])
    elif case == "missing file":
        f["labels"] = None  # path given, file never written
    elif case == "aux shape":
        f["aux"] = f["aux"][:, 0]
    elif case == "aux range":
        f["aux"] = f["aux"] * 2
    return f


@pytest.mark.parametrize("case", ["rows", "nan", "inf", "split range", "missing file", "aux shape", "aux range"])
def test_import_npy_bad_input(tmp_path, case):
    result = _run_import(tmp_path, _bad(_npy_inputs(tmp_path), case))
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert {"rows": "row counts must match", "nan": "NaN or inf", "inf": "NaN or inf", "split range": "out of range",
            "missing file": "does not exist", "aux shape": "2-D", "aux range": "[0, 1]"}[case] in line
    assert not (tmp_path / "ds").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.tmp")]


def test_import_npy_missing_options_and_existing_out(tmp_path):
    result = runner.invoke(app, ["data", "import", "--features", "x.npy"])
    assert result.exit_code == 2
    assert "missing option(s) --aux" in error_line(result)
    files = _npy_inputs(tmp_path)
    assert _run_import(tmp_path, files).exit_code == 0
    again = _run_import(tmp_path, files)
    assert again.exit_code == 2 and "already exists" in error_line(again)


def test_import_options_before_importer_name(tmp_path):
    result = runner.invoke(app, ["data", "import", "--out", str(tmp_path / "x"), "coco", "a.json", "b.json",
                                 "--out", str(tmp_path / "y")])
    assert result.exit_code == 2
    assert "after the importer name" in error_line(result)


@pytest.mark.parametrize("sub", [[], ["coco"], ["nuswide"], ["mat"], ["folder"]])
def test_import_help_teaches_usage(sub):
    result = runner.invoke(app, ["data", "import", *sub, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.stdout and "lagnh data import" in result.stdout


def test_info_text_and_json(tmp_path):
    files = _npy_inputs(tmp_path)
    files["aux"][:, 0] = 1
    files["aux"][[1, 2]] = 0
    assert _run_import(tmp_path, files).exit_code == 0
    result = runner.invoke(app, ["data", "info", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "30 items" in text and "8-d float32" in text
    assert "2 empty rows" in text  # aux
    assert "1 empty rows" in text  # labels
    assert "train 10, query 5, database 15" in text
    assert "train&database 0" in text
    result = runner.invoke(app, ["data", "info", str(tmp_path / "ds"), "--json", "--verify"])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["aux"]["empty_rows"] == 2 and info["labels"]["empty_rows"] == 1 and info["checksums"] == "ok"


def test_info_missing_dir(tmp_path):
    result = runner.invoke(app, ["data", "info", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in error_line(result)


def test_synthetic(tmp_path):
    out = tmp_path / "syn"
    result = runner.invoke(app, ["data", "synthetic", "--n", "300", "--out", str(out), "--dim", "16",
                                 "--classes", "5", "--junk-tags", "3", "--n-train", "60", "--n-query", "20"])
    assert result.exit_code == 0, result.output
    ds = Dataset.open(out)
    assert ds.n == 300 and ds.feature_dim == 16 and ds.aux_dim == 8 and ds.label_dim == 5
    assert len(ds.split("train")) == 60 and len(ds.split("query")) == 20
    assert ds.labels.sum(1).min() >= 1
    bad = runner.invoke(app, ["data", "synthetic", "--n", "300", "--out", str(tmp_path / "b"), "--aux-noise", "2"])
    assert bad.exit_code == 2 and "--aux-noise" in error_line(bad)
    assert not (tmp_path / "b").exists()
