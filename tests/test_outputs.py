"""No output may land on an input (issue 22): every output option of every command, aimed at
a file inside a lagnh run or dataset, at a picture the command reads, or (directories) at or
inside an input or a lagnh directory, is refused before any work with one error line, and
nothing on disk changes. ``test_the_table_walks_every_output_option`` enumerates the
commands' output options, as the bad-input table enumerates the commands."""

from __future__ import annotations

import hashlib
import os
import typing
from pathlib import Path

import pytest
import typer
from serve_fixtures import photo_run
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app

runner = CliRunner()
OUTPUT_FLAGS = ("--out", "--html", "--json", "--work", "--data-root", "--cache-dir")


def _snapshot(*dirs: Path) -> dict:
    snap = {}
    for d in dirs:
        for dirpath, dirnames, filenames in os.walk(d):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                snap[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
    return snap


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A photo folder, its dataset and a run of its own (cases must change none of them)."""
    pytest.importorskip("torchvision")
    root = tmp_path_factory.mktemp("outputs")
    run = photo_run(root)
    picture = sorted((root / "photos").rglob("*.png"))[0]
    return {"root": root, "run": run, "data": root / "data", "photos": root / "photos", "picture": picture,
            "snapshot": _snapshot(root)}


# -- the table: (command, option) -> cases; a case is (name, build(w, tmp) -> argv) ------------------
def _dedup(opt):
    return lambda target: lambda w, tmp: ["dedup", str(w["run"]), "--radius", "1", opt, str(target(w, tmp))]


def _search_html(target):
    return lambda w, tmp: ["search", str(w["run"]), "--id", _an_id(w), "-k", "3", "--html", str(target(w, tmp))]


def _search_image_html(w, tmp):
    return ["search", str(w["run"]), "--image", str(w["picture"]), "-k", "3", "--html", str(w["picture"])]


def _an_id(w) -> str:
    return (w["data"] / "ids.txt").read_text().splitlines()[0]


RUN_FILE = lambda w, tmp: w["run"] / "run.json"  # noqa: E731
RUN_DEEP = lambda w, tmp: w["run"] / "codes" / "meta.json"  # noqa: E731 - inside the run, one level down
RUN_INDEX = lambda w, tmp: w["run"] / "index" / "meta.json"  # noqa: E731
RUN_MODEL = lambda w, tmp: next(w["run"].glob("model.*"))  # noqa: E731 - the checkpoint of a baseline run
DATA_FILE = lambda w, tmp: w["data"] / "ids.txt"  # noqa: E731
DATA_DEEP = lambda w, tmp: w["data"] / "splits" / "query.npy"  # noqa: E731
PICTURE = lambda w, tmp: w["picture"]  # noqa: E731


def _experiment(sub, target):
    def build(w, tmp):
        extra = {"tune": ["--method", "itq"], "scaling": []}.get(sub, ["--methods", "itq"] if sub in ("accuracy", "timing") else [])
        data = {"scaling": [], "rerank": [str(w["run"])]}.get(sub, ["--data", str(w["data"])])
        return ["experiment", sub, *data, "--out", str(target(w, tmp)), *extra]
    return build


def _index_folder(opt, target):
    def build(w, tmp):
        out = str(target(w, tmp)) if opt == "--out" else str(tmp / "r")
        work = ["--work", str(target(w, tmp))] if opt == "--work" else []
        return ["index-folder", str(w["photos"]), "--out", out, *work, "--method", "itq", "--bits", "16",
                "--image-size", "32", "--device", "cpu", "--workers", "0"]
    return build


def _out_dir(cmd, target):
    """Commands whose --out is a directory they create: aimed at an existing lagnh directory."""
    def build(w, tmp):
        t = str(target(w, tmp))
        return {
            "train": ["train", str(w["data"]), "--config", "configs/demo.yaml", "--bits", "8", "--out", t, "--device", "cpu"],
            "baseline": ["baseline", "itq", str(w["data"]), "--bits", "16", "--out", t],
            "encode": ["encode", str(w["run"]), "--out", t, "--device", "cpu"],
            "data synthetic": ["data", "synthetic", "--n", "300", "--dim", "8", "--out", t],
            "data import": ["data", "import", "--features", str(w["data"] / "features.npy"), "--aux",
                            str(w["data"] / "aux.npy"), "--train-idx", str(w["data"] / "splits" / "train.npy"),
                            "--query-idx", str(w["data"] / "splits" / "query.npy"), "--database-idx",
                            str(w["data"] / "splits" / "database.npy"), "--out", t],
            "data import folder": ["data", "import", "folder", str(w["photos"]), "--features",
                                   str(w["root"] / "feats" / "features.npy"), "--n-train", "20", "--n-query", "3",
                                   "--out", t],
            "data import coco": ["data", "import", "coco", str(tmp / "a.json"), str(tmp / "b.json"), "--out", t],
            "data import nuswide": ["data", "import", "nuswide", str(tmp), "--out", t],
            "data import mat": ["data", "import", "mat", str(tmp / "x.mat"), "--out", t],
            "data add-views": ["data", "add-views", str(w["data"]), str(tmp), "--out", t],
            "data demo": ["data", "demo", "--out", t, "--n-train", "10", "--n-query", "5", "--n-database", "10"],
            "demo": ["demo", "--out", t],
            "extract features": ["extract", "features", str(w["photos"]), "--out", t, "--overwrite", "--backbone",
                                 "resnet18", "--weights", "none", "--device", "cpu", "--workers", "0"],
            "extract objects": ["extract", "objects", str(w["photos"]), "--tags", str(w["root"] / "tags.csv"),
                                "--out", t, "--overwrite"],
        }[cmd]
    return build


TABLE: dict[tuple[str, str], dict] = {
    ("dedup", "--out"): {"run-file": _dedup("--out")(RUN_FILE), "run-deep": _dedup("--out")(RUN_DEEP),
                         "dataset-file": _dedup("--out")(DATA_FILE), "picture": _dedup("--out")(PICTURE),
                         "same-as-html": lambda w, tmp: ["dedup", str(w["run"]), "--radius", "1", "--out",
                                                         str(tmp / "x"), "--html", str(tmp / "x")]},
    ("dedup", "--html"): {"index-file": _dedup("--html")(RUN_INDEX), "model-file": _dedup("--html")(RUN_MODEL), "dataset-deep": _dedup("--html")(DATA_DEEP),
                          "picture": _dedup("--html")(PICTURE)},
    ("search", "--html"): {"run-deep": _search_html(RUN_DEEP), "picture": _search_html(PICTURE),
                           "query-picture": _search_image_html, "dataset-deep": _search_html(DATA_DEEP)},
    ("evaluate", "--json"): {"run-deep": lambda w, tmp: ["evaluate", str(w["run"]), "--no-plots", "--json",
                                                          str(RUN_DEEP(w, tmp))],
                             "dataset-file": lambda w, tmp: ["evaluate", str(w["run"]), "--no-plots", "--json",
                                                             str(DATA_FILE(w, tmp))]},
    **{("experiment " + sub, "--out"): {
        "inside-run": _experiment(sub, lambda w, tmp: w["run"] / "report"),
        "the-run": _experiment(sub, lambda w, tmp: w["run"]),
        **({} if sub == "scaling" else {"the-dataset": _experiment(sub, lambda w, tmp: w["data"]),
                                        "inside-dataset": _experiment(sub, lambda w, tmp: w["data"] / "r")})}
       for sub in ("accuracy", "timing", "ablation", "epochs", "sensitivity", "scaling", "tune", "rerank")},
    ("experiment scaling", "--data-root"): {"the-dataset": lambda w, tmp: [
        "experiment", "scaling", "--sizes", "100", "--out", str(tmp / "r"), "--data-root", str(w["data"])]},
    ("index-folder", "--out"): {"the-photos": _index_folder("--out", lambda w, tmp: w["photos"]),
                                "inside-photos": _index_folder("--out", lambda w, tmp: w["photos"] / "run"),
                                "a-run-not-made-by-it": _index_folder("--out", lambda w, tmp: w["run"]),
                                "inside-a-run": _index_folder("--out", lambda w, tmp: w["run"] / "sub"),
                                "a-dataset": _index_folder("--out", lambda w, tmp: w["data"])},
    ("index-folder", "--work"): {"the-photos": _index_folder("--work", lambda w, tmp: w["photos"]),
                                 "inside-a-dataset": _index_folder("--work", lambda w, tmp: w["data"] / "w"),
                                 "the-run-out": _index_folder("--work", lambda w, tmp: tmp / "r")},
    ("data demo", "--cache-dir"): {"a-run": lambda w, tmp: ["data", "demo", "--out", str(tmp / "d"), "--cache-dir",
                                                            str(w["run"])]},
    **{(cmd, "--out"): {"the-run": _out_dir(cmd, lambda w, tmp: w["run"]),
                        "the-dataset": _out_dir(cmd, lambda w, tmp: w["data"])}
       for cmd in ("train", "baseline", "encode", "data synthetic", "data import", "data import folder",
                   "data import coco", "data import nuswide", "data import mat", "data add-views", "data demo", "demo")},
    ("extract features", "--out"): {"the-photos": _out_dir("extract features", lambda w, tmp: w["photos"]),
                                    "the-dataset": _out_dir("extract features", lambda w, tmp: w["data"])},
    ("extract objects", "--out"): {"the-photos": _out_dir("extract objects", lambda w, tmp: w["photos"]),
                                   "the-run": _out_dir("extract objects", lambda w, tmp: w["run"])},
}
# what a refusal for the output says (a case refused for another reason proves nothing)
REASONS = ("refusing to", "already exists", "is inside the", "is a lagnh-", "lies inside the input", "holds a run",
           "must lie apart", "both name")
CASES = sorted(f"{cmd.replace(' ', '-')}{opt}:{name}" for (cmd, opt), cases in TABLE.items() for name in cases)


def _case(case: str):
    head, name = case.split(":")
    for (cmd, opt), cases in TABLE.items():
        if head == f"{cmd.replace(' ', '-')}{opt}":
            return cases[name]
    raise KeyError(case)


@pytest.mark.parametrize("case", CASES)
def test_no_output_lands_on_an_input(case, world, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # configs/ for train
    assert _snapshot(world["root"]) == world["snapshot"], "an earlier case changed the run, dataset or photos"
    argv = _case(case)(world, tmp_path)
    before = _snapshot(tmp_path)
    result = runner.invoke(app, argv)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (argv, result.exit_code, result.stdout, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert any(w in lines[0] for w in REASONS), lines[0]  # refused for its output, not for something else
    assert _snapshot(world["root"]) == world["snapshot"] and _snapshot(tmp_path) == before


def _output_options() -> set[tuple[str, str]]:
    """Every (command, option) whose option is a path the command writes."""
    found = set()

    def walk(t, prefix=()):
        for c in t.registered_commands:
            yield (*prefix, c.name or c.callback.__name__.replace("_", "-")), c.callback
        for g in t.registered_groups:
            cb = g.typer_instance.registered_callback
            if cb is not None and cb.callback is not None:
                yield (*prefix, g.name), cb.callback
            yield from walk(g.typer_instance, (*prefix, g.name))

    for path, cb in walk(app):
        fn = getattr(cb, "__wrapped__", cb)
        for name, hint in typing.get_type_hints(fn, include_extras=True).items():
            if typing.get_origin(hint) is not typing.Annotated:
                continue
            base, *meta = typing.get_args(hint)
            info = next((m for m in meta if isinstance(m, typer.models.OptionInfo)), None)
            if info is None or Path not in (base, *typing.get_args(base)):
                continue
            decls = [d for d in ((info.default,) if isinstance(info.default, str) else ()) + tuple(info.param_decls or ())
                     if isinstance(d, str) and d.startswith("--")] or ["--" + name.rstrip("_").replace("_", "-")]
            if decls[0] in OUTPUT_FLAGS:
                found.add((" ".join(path), decls[0]))
    return found


def test_the_table_walks_every_output_option():
    options = _output_options()
    assert ("dedup", "--html") in options and ("index-folder", "--work") in options  # the walk itself works
    missing = options - set(TABLE)
    assert not missing, f"output options without cases: {sorted(missing)}"
