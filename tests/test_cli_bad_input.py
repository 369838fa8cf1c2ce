"""Every CLI command against a table of bad inputs (README "Command line" contract).

Each case builds one bad input in a fresh directory and asserts: exit code 2, exactly one
stderr line, starting with ``error:``, no traceback, and nothing new, changed or removed on
disk (the case's directory and the shared dataset and run). Classes covered: missing, empty,
truncated, wrong dtype/shape, non-finite, wrong encoding, read-only target, existing target,
out-of-range parameters and targets that would destroy inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from retrieval_fakes import make_run
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import Dataset, write_dataset
from lagnh_pyg.files import sha256_file

runner = CliRunner()
N, D, C, M = 60, 8, 6, 4


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A small dataset, a run of the fake method on it with codes and a hash index, and
    good .npy inputs for `data import`; cases copy what they break."""
    root = tmp_path_factory.mktemp("bad-input")
    rng = np.random.default_rng(0)
    labels = (rng.random((N, M)) < 0.4).astype(np.uint8)
    labels[:, 0] = 1
    arrays = {"features": rng.standard_normal((N, D)).astype(np.float32),
              "aux": (rng.random((N, C)) < 0.3).astype(np.float32), "labels": labels,
              "train-idx": np.arange(0, 20), "query-idx": np.arange(20, 30), "database-idx": np.arange(30, N)}
    inputs = root / "inputs"
    inputs.mkdir()
    for k, v in arrays.items():
        np.save(inputs / f"{k}.npy", v)
    (inputs / "ids.txt").write_text("".join(f"item{i}\n" for i in range(N)))
    data = write_dataset(root / "ds", arrays["features"], arrays["aux"], labels=labels,
                         splits={"train": arrays["train-idx"], "query": arrays["query-idx"],
                                 "database": arrays["database-idx"]},
                         ids=[f"item{i}" for i in range(N)])
    run = make_run(data, root / "run", bits=16).root
    assert runner.invoke(app, ["index", str(run)]).exit_code == 0
    return {"root": root, "inputs": inputs, "data": data, "run": run}


@pytest.fixture(scope="module")
def lagnh_run(shared):
    """A tiny trained LAGNH run on the shared dataset (for its encoder cache's cases)."""
    from lagnh_pyg.training import train_run

    tiny = {"graph": {"k": 4}, "model": {"anchors": 8, "att_dim": 8, "hidden": 8},
            "train": {"epochs": 1, "g_steps": 1, "checkpoint_every": 0, "threads": 1}}
    return train_run(shared["data"], tiny, 8, shared["root"] / "lagnh", progress=False)


def _snapshot(*dirs: Path) -> dict[str, tuple]:
    """Every path under ``dirs`` with its kind, size and content digest (files)."""
    snap = {}
    for d in dirs:
        for dirpath, dirnames, filenames in os.walk(d):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                if p.is_file() and not p.is_symlink():
                    snap[str(p)] = ("file", p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                else:
                    snap[str(p)] = ("dir" if p.is_dir() else "other",)
    return snap


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _import_args(inputs: Path, out: Path, **replace: Path) -> list[str]:
    args = ["data", "import"]
    for k in ("features", "aux", "labels", "train-idx", "query-idx", "database-idx"):
        args += [f"--{k}", str(replace.get(k.replace("-", "_"), inputs / f"{k}.npy"))]
    return args + ["--out", str(out)]


def _read_only_dir(tmp: Path) -> Path:
    """A directory nobody can write into, root included: chmod 555 is no obstacle to root,
    so it is made immutable (chattr +i; the test undoes it). Skips where that is impossible."""
    ro = tmp / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    if os.geteuid() == 0 and (shutil.which("chattr") is None
                              or subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode):
        pytest.skip("chattr +i is not available: no read-only directory for root")
    return ro


# -- the cases: name -> build(tmp, shared) -> argv ---------------------------------------------
def _npy_bad(kind):
    def build(tmp, s):
        f = tmp / "features.npy"
        if kind == "missing":
            pass
        elif kind == "empty":
            f.write_bytes(b"")
        elif kind == "truncated":
            shutil.copy(s["inputs"] / "features.npy", f)
            _truncate(f)
        elif kind == "strings":
            np.save(f, np.array([["a"] * D] * N))
        elif kind == "1-d":
            np.save(f, np.zeros(N, np.float32))
        elif kind == "overflow":  # finite as float64, inf once stored as float32
            x = np.ones((N, D))
            x[3, 2] = 1e39
            np.save(f, x)
        elif kind == "nan":
            x = np.ones((N, D), np.float32)
            x[5, 1] = np.nan
            np.save(f, x)
        return _import_args(s["inputs"], tmp / "out", features=f)
    return build


def _import_aux_npz(kind):
    def build(tmp, s):
        import scipy.sparse as sp

        f = tmp / "aux.npz"
        if kind == "not-zip":
            f.write_bytes(b"this is not a zip archive\n" * 4)
        else:  # a real sparse .npz cut short: a zip header, then nothing readable
            sp.save_npz(f, sp.csr_matrix(np.load(s["inputs"] / "aux.npy")))
            _truncate(f, 0.5)
        return _import_args(s["inputs"], tmp / "out", aux=f)
    return build


def _import_ids(encoding):
    def build(tmp, s):
        text = "".join(f"itém{i}\n" for i in range(N))
        (tmp / "ids.txt").write_bytes(text.encode(encoding))
        return _import_args(s["inputs"], tmp / "out") + ["--ids", str(tmp / "ids.txt")]
    return build


def _import_float_split(tmp, s):
    np.save(tmp / "q.npy", np.linspace(20, 30, 10) + 0.5)
    return _import_args(s["inputs"], tmp / "out", query_idx=tmp / "q.npy")


def _import_array(name, make):
    """`data import` with one input array replaced by ``make()``."""
    def build(tmp, s):
        np.save(tmp / f"{name}.npy", make())
        return _import_args(s["inputs"], tmp / "out", **{name.replace("-", "_"): tmp / f"{name}.npy"})
    return build


def _import_ids_text(text):
    def build(tmp, s):
        (tmp / "ids.txt").write_text(text)
        return _import_args(s["inputs"], tmp / "out") + ["--ids", str(tmp / "ids.txt")]
    return build


def _import_out(kind):
    def build(tmp, s):
        if kind == "existing":
            (tmp / "out").mkdir()
            (tmp / "out" / "mine.txt").write_text("a user's file\n")
            return _import_args(s["inputs"], tmp / "out")
        if kind == "under-file":
            (tmp / "file").write_text("x\n")
            return _import_args(s["inputs"], tmp / "file" / "out")
        return _import_args(s["inputs"], _read_only_dir(tmp) / "out")
    return build


def _file(tmp: Path) -> Path:
    (tmp / "file").write_text("x\n")
    return tmp / "file"


def _images(tmp: Path, n: int = 11) -> Path:
    from PIL import Image

    root = tmp / "photos"
    root.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(root / f"p{i:02d}.png")
    return root


def _folder_dropped_then_error(tmp, s):
    """Features for 5 of 11 images (6 dropped, once a warning) and then a bad --n-query."""
    root = _images(tmp)
    np.save(tmp / "f.npy", np.ones((5, 4), np.float32))
    (tmp / "ids.txt").write_text("".join(f"p{i:02d}.png\n" for i in range(5)))
    return ["data", "import", "folder", str(root), "--features", str(tmp / "f.npy"), "--ids", str(tmp / "ids.txt"),
            "--n-train", "2", "--n-query", "9", "--out", str(tmp / "out")]


def _folder_unmatched_then_nan(tmp, s):
    """A feature row naming no image (once an INFO line) and then a NaN feature."""
    root = _images(tmp, 4)
    x = np.ones((5, 4), np.float32)
    x[1, 1] = np.nan
    np.save(tmp / "f.npy", x)
    (tmp / "ids.txt").write_text("".join(f"p{i:02d}.png\n" for i in range(4)) + "ghost.png\n")
    (tmp / "tags.csv").write_text("path,tags\np00.png,dog\np01.png,cat\n")
    return ["data", "import", "folder", str(root), "--features", str(tmp / "f.npy"), "--ids", str(tmp / "ids.txt"),
            "--csv", str(tmp / "tags.csv"), "--n-train", "1", "--n-query", "1", "--out", str(tmp / "out")]


def _folder_csv_utf16(tmp, s):
    root = _images(tmp, 4)
    (tmp / "tags.csv").write_bytes("path,tags\n".encode("utf-16") + "".join(
        f"p{i:02d}.png,dog;beach\n" for i in range(4)).encode("utf-16-le"))
    np.save(tmp / "f.npy", np.ones((4, 4), np.float32))
    return ["data", "import", "folder", str(root), "--csv", str(tmp / "tags.csv"), "--features", str(tmp / "f.npy"),
            "--n-train", "1", "--n-query", "1", "--out", str(tmp / "out")]


def _dataset_broken(kind):
    def build(tmp, s):
        ds = _copy(s["data"], tmp / "ds")
        if kind == "ids-short":
            lines = (ds / "ids.txt").read_text().splitlines()
            (ds / "ids.txt").write_text("\n".join(lines[:-3]) + "\n")
        elif kind == "features-truncated":
            _truncate(ds / "features.npy", 0.9)
        elif kind == "missing-split":
            (ds / "splits" / "query.npy").unlink()
        elif kind == "manifest-garbage":
            (ds / "manifest.json").write_text("{not json")
        elif kind == "ids-not-utf8":
            (ds / "ids.txt").write_bytes(b"".join(b"caf\xe9%d\n" % i for i in range(N)))
            m = json.loads((ds / "manifest.json").read_text())
            m["checksums"]["ids.txt"] = sha256_file(ds / "ids.txt")
            (ds / "manifest.json").write_text(json.dumps(m))
            run = _as_own_run(tmp, s, ds)
            meta = json.loads((run / "codes" / "meta.json").read_text())
            meta["data_fingerprint"] = Dataset.open(ds).fingerprint  # codes made from this very dataset
            (run / "codes" / "meta.json").write_text(json.dumps(meta))
            return ["search", str(run), "--id", "item5"]
        elif kind == "manifest-not-utf8":
            (ds / "manifest.json").write_bytes(b"\xff\xfe{" + b"\x00" * 8)
        return ["data", "info", str(ds)]
    return build


def _verify_checksum(tmp, s):
    ds = _copy(s["data"], tmp / "ds")
    q = np.load(ds / "splits" / "query.npy")
    np.save(ds / "splits" / "query.npy", q[::-1])  # same shape, other bytes
    return ["data", "info", str(ds), "--verify"]


def _verify_non_finite(tmp, s):
    """A dataset holding inf whose checksums match (as an older version could write it)."""
    ds = _copy(s["data"], tmp / "ds")
    x = np.load(ds / "features.npy")
    x[7, 3] = np.inf
    np.save(ds / "features.npy", x)
    m = json.loads((ds / "manifest.json").read_text())
    m["checksums"]["features.npy"] = sha256_file(ds / "features.npy")
    (ds / "manifest.json").write_text(json.dumps(m))
    return ["data", "info", str(ds), "--verify"]


def _synthetic(*extra):
    def build(tmp, s):
        return ["data", "synthetic", "--n", "800", "--dim", "8", "--out", str(tmp / "syn"), *extra]
    return build


def _synthetic_existing(tmp, s):
    (tmp / "syn").mkdir()
    return ["data", "synthetic", "--n", "100", "--dim", "8", "--out", str(tmp / "syn")]


def _extract_overwrite(where):
    """`extract features ... --overwrite` aimed at the inputs themselves or a user folder."""
    def build(tmp, s):
        root = _images(tmp, 3)
        out = {"input": root, "parent": tmp, "unrelated": tmp / "mine"}[where]
        if where == "unrelated":
            out.mkdir()
            (out / "notes.txt").write_text("keep me\n")
        return ["extract", "features", str(root), "--out", str(out), "--overwrite", "--backbone", "resnet18",
                "--weights", "none", "--device", "cpu", "--workers", "0"]
    return build


def _extract_tags_utf16(tmp, s):
    root = _images(tmp, 3)
    (tmp / "tags.csv").write_text("path,tags\np00.png,dog\n", encoding="utf-16")
    return ["extract", "objects", str(root), "--tags", str(tmp / "tags.csv"), "--out", str(tmp / "out")]


def _train(kind):
    def build(tmp, s):
        import yaml

        data, bits, out, cfg = s["data"], "8", tmp / "run", tmp / "tiny.yaml"
        cfg.write_text(yaml.safe_dump({"train": {"epochs": 1}}))
        if kind == "missing":
            data = tmp / "nope"
        elif kind == "truncated":
            data = _copy(s["data"], tmp / "ds")
            _truncate(data / "features.npy", 0.8)
        elif kind == "bits":
            bits = "12"
        elif kind == "config":
            cfg = tmp / "missing.yaml"
        elif kind == "read-only":
            out = _read_only_dir(tmp) / "run"
        else:
            (tmp / "file").write_text("x\n")
            out = tmp / "file" / "run"
        return ["train", str(data), "--config", str(cfg), "--bits", bits, "--out", str(out), "--device", "cpu",
                "--no-progress"]
    return build


def _run_copy_with(kind):
    def build(tmp, s):
        run = _copy(s["run"], tmp / "run")
        if kind in ("query", "database"):
            _truncate(run / "codes" / f"{kind}.npy", 0.95)  # the header stays, rows are lost
        elif kind == "faiss":
            _truncate(run / "index" / "codes.faiss", 0.6)
        elif kind == "faiss-garbage":
            (run / "index" / "codes.faiss").write_bytes(b"\0" * 64)
        elif kind == "codes-meta-garbage":
            (run / "codes" / "meta.json").write_text("{truncated")
        elif kind == "run-json-garbage":
            (run / "run.json").write_bytes(b"\x89PNG not json")
        return run
    return build


def _cmd_on_run(cmd, kind, *extra):
    def build(tmp, s):
        run = _run_copy_with(kind)(tmp, s)
        return [cmd, str(run), *extra]
    return build


def _index_params(*params):
    def build(tmp, s):
        run = _copy(s["run"], tmp / "run")
        return ["index", str(run), *params]
    return build


def _target(cmd, kind):
    """`search --html` / `evaluate --json` at an existing directory, under a file, read-only."""
    def build(tmp, s):
        if kind == "dir":
            (tmp / "target").mkdir()
            target = tmp / "target"
        elif kind == "under-file":
            (tmp / "file").write_text("x\n")
            target = tmp / "file" / "page"
        else:
            target = _read_only_dir(tmp) / "page"
        if cmd == "search":
            return ["search", str(s["run"]), "--id", "item25", "-k", "3", "--html", str(target)]
        run = _copy(s["run"], tmp / "run")  # evaluate writes RUN/metrics before --json
        return ["evaluate", str(run), "--no-plots", "--json", str(target)]
    return build


def _encode_other_data(tmp, s):
    other = _copy(s["data"], tmp / "other")
    return ["encode", str(s["run"]), "--data", str(other), "--device", "cpu"]


def _encode_out(kind):
    def build(tmp, s):
        if kind == "under-file":
            (tmp / "file").write_text("x\n")
            out = tmp / "file" / "codes"
        elif kind == "read-only":
            out = _read_only_dir(tmp) / "codes"
        else:  # a user's folder with .npy files of their own
            out = tmp / "mine"
            out.mkdir()
            np.save(out / "query.npy", np.zeros(3))
        return ["encode", str(s["run"]), "--device", "cpu", "--out", str(out)]
    return build


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _malicious_checkpoint(how):
    """A LAGNH run whose checkpoint unpickles os.system (a torch.save file, or a plain pickle
    that makes torch warn about its protocol): refused by weights_only, in one line."""
    def build(tmp, s):
        import pickle

        import torch

        run = _copy(s["run"], tmp / "run")
        ck = {"format": "lagnh-checkpoint", "model": _Evil()}
        if how == "torch":
            torch.save(ck, run / "checkpoint.pt")
        else:
            (run / "checkpoint.pt").write_bytes(pickle.dumps(ck, protocol=4))
        return _as_lagnh_run(run)
    return build


def _as_lagnh_run(run: Path) -> list[str]:
    meta = json.loads((run / "run.json").read_text())
    meta.update(method="lagnh", model_file="checkpoint.pt", model_fingerprint=sha256_file(run / "checkpoint.pt")[:16])
    (run / "run.json").write_text(json.dumps(meta))
    return ["encode", str(run), "--device", "cpu", "--split", "query"]


def _encoder_cache(kind):
    """`lagnh encode` of a LAGNH run whose encoder cache is missing, cut short, garbage, or
    names another model."""
    def build(tmp, s):
        run = _copy(s["lagnh_run"], tmp / "run")
        cache = run / "encoder.safetensors"
        if kind == "missing":
            cache.unlink()
        elif kind == "truncated":
            _truncate(cache, 0.7)
        elif kind == "garbage":
            cache.write_bytes(b"\xff" * 64)
        else:  # another model's: same layout, another checkpoint fingerprint in its header
            fp = json.loads((run / "run.json").read_text())["model_fingerprint"]
            data = cache.read_bytes()
            assert data.count(fp.encode()) == 1
            cache.write_bytes(data.replace(fp.encode(), b"0123456789abcdef"))
        return ["encode", str(run), "--device", "cpu", "--split", "query"]
    return build


def _checkpoint_of_other_version(tmp, s):
    """A LAGNH run whose checkpoint's config has a key this version does not know (trained by
    another version): refused in one line that says so, the run left as it was."""
    import torch

    run = _copy(s["lagnh_run"], tmp / "run")
    path = run / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    ck["config_yaml"] = ck["config_yaml"].replace("loss:\n", "loss:\n  recon_codes: tanh\n", 1)
    assert "recon_codes" in ck["config_yaml"]
    torch.save(ck, path)
    meta = json.loads((run / "run.json").read_text())
    meta["model_fingerprint"] = sha256_file(path)[:16]
    (run / "run.json").write_text(json.dumps(meta))
    return ["encode", str(run), "--device", "cpu", "--split", "query"]


def _as_own_run(tmp: Path, s, ds: Path) -> Path:
    """A copy of the shared run that names the dataset copy ``ds`` (no saved index)."""
    run = _copy(s["run"], tmp / "run")
    for f in ("run.json", "codes/meta.json"):
        m = json.loads((run / f).read_text())
        m["data_dir"] = str(ds.resolve())
        (run / f).write_text(json.dumps(m))
    shutil.rmtree(run / "index")
    return run


def _search_ids_short(tmp, s):
    """A dataset whose ids.txt lost rows after encoding (was an IndexError in search)."""
    ds = _copy(s["data"], tmp / "ds")
    run = _as_own_run(tmp, s, ds)
    lines = (ds / "ids.txt").read_text().splitlines()
    (ds / "ids.txt").write_text("\n".join(lines[:40]) + "\n")
    return ["search", str(run), "--id", "item5", "-k", "3"]


def _baseline_existing(tmp, s):
    (tmp / "out").mkdir()
    return ["baseline", "itq", str(s["data"]), "--bits", "16", "--out", str(tmp / "out")]


def _baseline_under_file(tmp, s):
    (tmp / "file").write_text("x\n")
    return ["baseline", "lsh", str(s["data"]), "--bits", "16", "--out", str(tmp / "file" / "run")]


def _add_views(kind):
    def case(tmp, s):
        ext = tmp / "ext"
        ext.mkdir()
        man = {"format": "lagnh-extract", "version": 1, "kind": "features"}
        if kind != "no-views":
            man["views"] = {"file": "views.npy", "k": 1, "dtype": "float16"}
            views = np.zeros((N, 1, D if kind != "wrong-dim" else D + 1), np.float32)
            views[3, 0, 1] = 1e6 if kind == "overflow" else 0  # finite as float32, inf as the stored float16
            np.save(ext / "views.npy", views if kind == "overflow" else views.astype(np.float16))
            if kind == "truncated":
                _truncate(ext / "views.npy", 0.9)
            (ext / "ids.txt").write_text("".join(f"item{i}\n" for i in range(N)))
        (ext / "manifest.json").write_text(json.dumps(man))
        if kind == "out-existing":
            (tmp / "out").mkdir()
        return ["data", "add-views", str(s["data"]), str(ext), "--out", str(tmp / "out")]

    return case


CASES = {
    # data import (the .npy contract form)
    "import-features-missing": _npy_bad("missing"),
    "import-features-empty": _npy_bad("empty"),
    "import-features-truncated": _npy_bad("truncated"),
    "import-features-strings": _npy_bad("strings"),
    "import-features-1d": _npy_bad("1-d"),
    "import-features-overflow-float32": _npy_bad("overflow"),
    "import-features-nan": _npy_bad("nan"),
    "import-aux-npz-not-zip": _import_aux_npz("not-zip"),
    "import-aux-npz-truncated": _import_aux_npz("truncated"),
    "import-ids-latin1": _import_ids("latin-1"),
    "import-ids-utf16": _import_ids("utf-16"),
    "import-split-not-integer": _import_float_split,
    "import-split-out-of-range": _import_array("query-idx", lambda: np.arange(55, 65)),
    "import-split-2d": _import_array("query-idx", lambda: np.arange(20, 30).reshape(2, 5)),
    "import-features-3d": _import_array("features", lambda: np.zeros((N, 2, 4), np.float32)),
    "import-features-rows-mismatch": _import_array("features", lambda: np.zeros((N - 1, D), np.float32)),
    "import-aux-out-of-range": _import_array("aux", lambda: np.full((N, C), 2.0, np.float32)),
    "import-labels-not-binary": _import_array("labels", lambda: np.full((N, M), 3, np.uint8)),
    "import-ids-empty-file": _import_ids_text(""),
    "import-ids-duplicate": _import_ids_text("a\n" * N),
    "import-ids-too-few": _import_ids_text("".join(f"i{k}\n" for k in range(N - 2))),
    "import-out-existing": _import_out("existing"),
    "import-out-under-file": _import_out("under-file"),
    "import-out-read-only": _import_out("read-only"),
    "import-folder-dropped-then-error": _folder_dropped_then_error,
    "import-folder-csv-utf16": _folder_csv_utf16,
    "import-folder-unmatched-then-nan": _folder_unmatched_then_nan,
    # data info
    "info-ids-short": _dataset_broken("ids-short"),
    "info-features-truncated": _dataset_broken("features-truncated"),
    "info-split-missing": _dataset_broken("missing-split"),
    "info-manifest-garbage": _dataset_broken("manifest-garbage"),
    "info-manifest-not-utf8": _dataset_broken("manifest-not-utf8"),
    "search-dataset-ids-not-utf8": _dataset_broken("ids-not-utf8"),
    "info-verify-checksum": _verify_checksum,
    "info-verify-non-finite": _verify_non_finite,
    # data add-views
    "add-views-extraction-without-views": _add_views("no-views"),
    "add-views-wrong-dim": _add_views("wrong-dim"),
    "add-views-out-existing": _add_views("out-existing"),
    "add-views-truncated": _add_views("truncated"),
    "add-views-overflow-float16": _add_views("overflow"),
    # data synthetic
    "synthetic-split-too-large": _synthetic("--n-train", "700", "--n-query", "200"),
    "synthetic-zero-queries": _synthetic("--n-query", "0"),
    "synthetic-out-existing": _synthetic_existing,
    # extract
    "extract-features-overwrite-input": _extract_overwrite("input"),
    "extract-features-overwrite-parent": _extract_overwrite("parent"),
    "extract-features-overwrite-unrelated": _extract_overwrite("unrelated"),
    "extract-objects-tags-csv-utf16": _extract_tags_utf16,
    # train (the training loop's own failures are tested in test_train.py)
    "train-data-missing": _train("missing"),
    "train-data-truncated": _train("truncated"),
    "train-bits-not-multiple-of-8": _train("bits"),
    "train-config-missing": _train("config"),
    "train-out-under-file": _train("under-file"),
    "train-out-read-only": _train("read-only"),
    # encode
    "encode-other-data-over-own-codes": _encode_other_data,
    "encode-out-under-file": _encode_out("under-file"),
    "encode-out-user-folder": _encode_out("user-folder"),
    "encode-out-read-only": _encode_out("read-only"),
    "encode-malicious-checkpoint": _malicious_checkpoint("torch"),
    "encode-malicious-pickle": _malicious_checkpoint("pickle"),
    "encode-cache-missing": _encoder_cache("missing"),
    "encode-cache-truncated": _encoder_cache("truncated"),
    "encode-cache-garbage": _encoder_cache("garbage"),
    "encode-cache-foreign": _encoder_cache("foreign"),
    "encode-checkpoint-other-version": _checkpoint_of_other_version,
    # index
    "index-nflip-negative": _index_params("--kind", "hash", "--nflip", "-1"),
    "index-nflip-too-large": _index_params("--kind", "hash", "--nflip", "100"),
    "index-multihash-nflip-negative": _index_params("--kind", "multihash", "--nflip", "-2"),
    "index-hash-bits-zero": _index_params("--kind", "hash", "--hash-bits", "0"),
    "index-nhash-zero": _index_params("--kind", "multihash", "--nhash", "0"),
    "index-hash-bits-too-many": _index_params("--kind", "multihash", "--nhash", "4", "--hash-bits", "8"),
    "index-codes-truncated": _cmd_on_run("index", "database"),
    # evaluate
    "evaluate-codes-truncated": _cmd_on_run("evaluate", "query", "--no-plots"),
    "evaluate-json-directory": _target("evaluate", "dir"),
    "evaluate-codes-meta-garbage": _cmd_on_run("evaluate", "codes-meta-garbage", "--no-plots"),
    "evaluate-run-json-garbage": _cmd_on_run("evaluate", "run-json-garbage", "--no-plots"),
    "evaluate-json-under-file": _target("evaluate", "under-file"),
    "evaluate-json-over-run-json": lambda tmp, s: [
        "evaluate", str(_copy(s["run"], tmp / "run")), "--no-plots", "--json", str(tmp / "run" / "run.json")],
    "search-html-over-dataset-file": lambda tmp, s: [
        "search", str(s["run"]), "--id", "item25", "--html", str(s["data"] / "ids.txt")],
    # search
    "search-index-truncated": _cmd_on_run("search", "faiss", "--id", "item25"),
    "search-index-garbage": _cmd_on_run("search", "faiss-garbage", "--id", "item25"),
    "search-codes-truncated": _cmd_on_run("search", "query", "--id", "item25"),
    "search-html-directory": _target("search", "dir"),
    "search-html-under-file": _target("search", "under-file"),
    "search-html-read-only": _target("search", "read-only"),
    "search-ids-short": _search_ids_short,
    # serve (only cases refused before the server would start)
    "serve-run-missing": lambda tmp, s: ["serve", str(tmp / "nope")],
    "serve-port-out-of-range": lambda tmp, s: ["serve", str(s["run"]), "--port", "70000"],
    "serve-index-truncated": _cmd_on_run("serve", "faiss"),
    # add / dedup (a run's collection)
    "add-run-missing": lambda tmp, s: ["add", str(tmp / "nope"), str(_images(tmp, 2))],
    "add-images-missing": lambda tmp, s: ["add", str(_copy(s["run"], tmp / "run")), str(tmp / "nope")],
    "add-batch-zero": lambda tmp, s: ["add", str(_copy(s["run"], tmp / "run")), str(_images(tmp, 2)), "--batch", "0"],
    "dedup-radius-negative": _cmd_on_run("dedup", "none", "--radius", "-1"),
    "dedup-codes-truncated": _cmd_on_run("dedup", "database", "--radius", "1"),
    "dedup-out-directory": lambda tmp, s: ["dedup", str(s["run"]), "--radius", "1", "--out", str(tmp)],
    "dedup-html-under-file": lambda tmp, s: [
        "dedup", str(s["run"]), "--radius", "1", "--html", str(_file(tmp) / "page.html")],
    # index-folder (refused before any stage runs)
    "index-folder-photos-missing": lambda tmp, s: ["index-folder", str(tmp / "nope"), "--out", str(tmp / "r")],
    "index-folder-too-small": lambda tmp, s: ["index-folder", str(_images(tmp, 3)), "--out", str(tmp / "r")],
    "index-folder-topk-zero": lambda tmp, s: ["index-folder", str(_images(tmp)), "--out", str(tmp / "r"), "--topk", "0"],
    "index-folder-method-unknown": lambda tmp, s: ["index-folder", str(_images(tmp)), "--out", str(tmp / "r"),
                                                   "--method", "nope"],
    "index-folder-bits-bad": lambda tmp, s: ["index-folder", str(_images(tmp)), "--out", str(tmp / "r"), "--bits", "12"],
    "index-folder-tags-missing": lambda tmp, s: ["index-folder", str(_images(tmp)), "--out", str(tmp / "r"),
                                                 "--tags", str(tmp / "no.csv")],
    # demo and experiment: refused before any data build or training
    "demo-out-under-file": lambda tmp, s: ["demo", "--out", str(_file(tmp) / "demo")],
    "experiment-accuracy-data-missing": lambda tmp, s: [
        "experiment", "accuracy", "--data", str(tmp / "nope"), "--methods", "itq", "--bits", "16", "--out", str(tmp / "r")],
    "experiment-accuracy-out-under-file": lambda tmp, s: [
        "experiment", "accuracy", "--data", str(s["data"]), "--methods", "itq", "--bits", "16",
        "--out", str(_file(tmp) / "r")],
    "experiment-scaling-out-under-file": lambda tmp, s: [
        "experiment", "scaling", "--sizes", "100", "--out", str(_file(tmp) / "r")],
    # baseline
    "baseline-out-existing": _baseline_existing,
    "baseline-out-under-file": _baseline_under_file,
}

# what the one error line must say, where the wording is part of the fix
EXPECT = {
    "index-folder-too-small": "too small",
    "index-folder-topk-zero": "--topk must lie in 1..1000",
    "index-folder-method-unknown": "--method must be lagnh or a baseline",
    "import-features-overflow-float32": "NaN or inf (first at row 3, column 2)",
    "import-ids-utf16": "UTF-16",
    "import-folder-csv-utf16": "UTF-16",
    "info-ids-short": "lines for 60 items",
    "info-verify-checksum": "checksum mismatch in splits/query.npy",
    "info-verify-non-finite": "1 non-finite features values",
    "synthetic-split-too-large": "cannot hold 700 training and 200 query",
    "extract-features-overwrite-input": "refusing to replace",
    "extract-features-overwrite-parent": "refusing to replace",
    "extract-features-overwrite-unrelated": "refusing to replace",
    "encode-other-data-over-own-codes": "pass --out",
    "encode-malicious-checkpoint": "not a lagnh checkpoint",
    "encode-malicious-pickle": "not a lagnh checkpoint",
    "encode-cache-missing": "encoder.safetensors is missing",
    "encode-cache-truncated": "encoder.safetensors is corrupt",
    "encode-cache-garbage": "encoder.safetensors is corrupt",
    "encode-cache-foreign": "belongs to another model",
    "encode-checkpoint-other-version": "trained by another version of lagnh-pyg: its config does not load here "
                                       "(unknown config key 'loss.recon_codes'",
    "index-nflip-negative": "--nflip must lie in [0, ",
    "index-nflip-too-large": "--nflip must lie in [0, ",
    "index-hash-bits-zero": "do not fit",
    "index-nhash-zero": "--nhash must be at least 1",
    "index-codes-truncated": "truncated",
    "evaluate-codes-truncated": "truncated",
    "evaluate-json-directory": "is a directory",
    "search-index-truncated": "rerun `lagnh index`",
    "search-index-garbage": "rerun `lagnh index`",
    "search-html-directory": "is a directory",
    "search-ids-short": "lines for 60 items",
    "search-dataset-ids-not-utf8": "is not UTF-8 text",
    "info-manifest-not-utf8": "is not UTF-8 text",
    "evaluate-codes-meta-garbage": "is not valid JSON",
    "add-views-truncated": "truncated",
    "add-views-overflow-float16": "NaN or inf as float16",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_error_line_and_no_trace_on_disk(case, shared, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)  # a stray temporary file in the working directory is caught too
    if case.startswith(("encode-cache-", "encode-checkpoint-")):
        shared = {**shared, "lagnh_run": request.getfixturevalue("lagnh_run")}
    argv = CASES[case](tmp_path, shared)
    watched = (tmp_path, shared["data"], shared["run"])
    before = _snapshot(*watched)
    try:
        with warnings.catch_warnings(record=True) as caught:  # a real run prints these on stderr
            warnings.simplefilter("always")
            result = runner.invoke(app, argv)
    finally:
        if (tmp_path / "ro").exists():
            subprocess.run(["chattr", "-i", str(tmp_path / "ro")], capture_output=True)
            os.chmod(tmp_path / "ro", 0o755)
    shown = [f"{w.category.__name__}: {w.message}" for w in caught  # what Python shows by default
             if not issubclass(w.category, (DeprecationWarning, ResourceWarning, ImportWarning))
             and "torch.jit.script" not in str(w.message)]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()] + shown
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    if case in EXPECT:
        assert EXPECT[case] in lines[0], lines[0]
    assert _snapshot(*watched) == before


def test_the_table_walks_every_command():
    """Every command has cases here, named by its command path ("data-import-...",
    "search-..."). demo and the experiment subcommands are not required to: they run
    pipelines of the commands below (a few cases above; their argument checks live in
    test_demo.py / test_experiments.py)."""
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for group in app.registered_groups:
        commands |= {f"{group.name}-{c.name or c.callback.__name__}".replace("_", "-")
                     for c in group.typer_instance.registered_commands}
        commands |= {f"{group.name}-{g.name}" for g in group.typer_instance.registered_groups}
    commands = {c for c in commands if c.split("-")[0] not in ("demo", "experiment") and c != "data-demo"}
    missing = {c for c in commands if not any(case.startswith(c.replace("data-", "") + "-") or case.startswith(c + "-")
                                               for case in CASES)}
    assert not missing, f"commands without bad-input cases: {sorted(missing)}"
