"""The command line against hostile folders and options (issue 22): FIFOs, dangling links,
file names that are not UTF-8 or hold a newline, pictures that explode when resized,
re-runs of index-folder with other options or pictures, and options refused only after
work was done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from serve_fixtures import write_photos
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app

pytest.importorskip("torchvision")
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def ok(r):
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r


def error_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.stderr
    return lines[0]


def strip_png(w: int, h: int) -> bytes:
    from test_serve_hostile import png

    return png(w, h)


def hostile_folder(root: Path, n: int = 11) -> Path:
    """n good pictures, a FIFO, a dangling link, a corrupt file, a name that is not UTF-8 and
    a name with a newline (the last two are good pictures)."""
    rels = write_photos(root, n, seed=5)
    good = (root / rels[0]).read_bytes()
    os.mkfifo(root / "fifo.png")
    os.symlink(root / "gone.png", root / "dangling.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as f:  # Latin-1 "cafe"
        f.write(good)
    (root / "two\nlines.png").write_bytes(good)
    return root


# -- 7, 8: FIFOs, dangling links, file names -------------------------------------------------------
def test_extract_skips_a_fifo_and_a_dangling_link_instead_of_hanging(tmp_path):
    """A FIFO blocked the decoder forever (workers=0) or until its 300 s timeout; a name that
    is not UTF-8 aborted with UnicodeEncodeError; a name with a newline split ids.txt."""
    photos = hostile_folder(tmp_path / "photos")
    cmd = [sys.executable, "-m", "lagnh_pyg.cli.main", "extract", "features", str(photos), "--backbone", "resnet18", "--weights",
           "none", "--image-size", "32", "--device", "cpu", "--workers", "0", "--out", str(tmp_path / "feats")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "two\\nlines.png" in r.stderr or "U+000A" in r.stderr  # the skipped name is named
    ids = (tmp_path / "feats" / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(ids) == 12 and "caf\\xe9.png" in ids and not any("lines" in i for i in ids)
    skipped = {ln.split("\t")[0]: ln.split("\t")[2] for ln in
               (tmp_path / "feats" / "skipped.tsv").read_text(encoding="utf-8", errors="surrogateescape").splitlines()}
    assert "not a regular file (a FIFO)" in skipped["fifo.png"]
    assert "FileNotFoundError" in skipped["dangling.png"] and "corrupt.png" in skipped
    # the escaped id's path is the real file: paths.txt keeps the OS's bytes, and reads back to it
    from lagnh_pyg.files import read_lines

    paths = read_lines(tmp_path / "feats" / "paths.txt")
    assert len(paths) == 12
    path = paths[ids.index("caf\\xe9.png")]
    assert os.path.isfile(path) and os.fsencode(path).endswith(b"caf\xe9.png")


def test_a_list_file_names_pictures_as_a_folder_does(tmp_path):
    """A list file was read with undecodable bytes replaced (a Latin-1 name became U+FFFD: no
    such file, skipped) and split with str.splitlines (a name holding U+0085 became two).
    Now its paths keep the OS's bytes and get the folder's ids; a control character is refused
    with its line."""
    from lagnh_pyg.extract.images import list_image_source, read_image

    photos = hostile_folder(tmp_path / "p", 2)
    lst = tmp_path / "list.txt"
    (photos / "x").mkdir()
    (photos / "x" / "good.png").write_bytes((photos / "two\nlines.png").read_bytes())
    lst.write_bytes(b"# pictures\n" + os.fsencode(photos) + b"/caf\xe9.png\r\n" + b"p/x/good.png\n")
    got = list_image_source(lst)
    assert got.ids == [str(photos) + "/caf\\xe9.png", "p/x/good.png"]
    assert all(read_image(p).size == (48, 48) for p in got.paths)  # both name the real files
    lst.write_bytes(b"p/a/red_000.png\n" + "p/a/x\x85y.png\n".encode())
    line = error_line(runner.invoke(app, ["extract", "objects", str(lst), "--out", str(tmp_path / "o")]))
    assert "line 2" in line and "U+0085" in line


def test_add_skips_what_it_cannot_read_and_says_so(fresh_pic_run, tmp_path):
    photos = hostile_folder(tmp_path / "new", 3)
    r = ok(runner.invoke(app, ["add", str(fresh_pic_run), str(photos), "--prefix", "new/"]))
    assert "added 4 picture(s)" in r.stdout and "3 unreadable" in r.stdout, r.stdout
    said = r.stderr
    assert "fifo.png" in said and "not a regular file" in said and "dangling.png" in said and "corrupt.png" in said
    from lagnh_pyg.collection import Collection

    coll = Collection(fresh_pic_run)
    assert "new/caf\\xe9.png" in coll and not any("lines" in i for i in coll.added)
    # the API answers for it (a lone surrogate in the id made every search that returned it fail)
    from fastapi.testclient import TestClient

    from lagnh_pyg.serve import create_app

    c = TestClient(create_app(fresh_pic_run), base_url="http://127.0.0.1")
    res = c.get("/api/search", params={"id": "new/caf\\xe9.png", "k": 5})
    assert res.status_code == 200 and res.json()["results"][0]["id"] in coll.added


def test_a_fifo_named_like_a_picture_is_refused_not_read(fresh_pic_run, tmp_path):
    """A FIFO given as the one picture (or the image source): `lagnh add` took it for a list
    file and blocked reading it forever, `extract` too; `search --image` said it did not exist.
    A thread stands by to open the FIFO's other end, so a command that reads it ends (with
    another message) instead of hanging the test."""
    import threading

    fifo = tmp_path / "new.png"
    os.mkfifo(fifo)

    def unblock():  # a reader of the FIFO waits for a writer: be one, then close (end of file)
        try:
            os.close(os.open(fifo, os.O_WRONLY))
        except OSError:
            pass

    writer = threading.Thread(target=unblock, daemon=True)
    writer.start()
    try:
        for argv in (["add", str(fresh_pic_run), str(fifo)], ["search", str(fresh_pic_run), "--image", str(fifo)],
                     ["extract", "features", str(fifo), "--out", str(tmp_path / "f"), "--backbone", "resnet18",
                      "--weights", "none", "--device", "cpu"]):
            assert "not a regular file" in error_line(runner.invoke(app, argv)), argv
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # frees the writer when nothing read the FIFO
        writer.join(10)
    assert not (fresh_pic_run / "added").exists() and not (tmp_path / "f").exists()


def test_a_long_strip_is_refused_by_add_and_search(fresh_pic_run, tmp_path):
    """1000 x 2 pixels: the short side scaled up to the input size would make it 128000 x 256
    (a 100000 x 1 strip: 20 GB, and `lagnh add` exited 1 'out of memory')."""
    (tmp_path / "strip.png").write_bytes(strip_png(1000, 2))
    assert "aspect-ratio limit" in error_line(runner.invoke(app, ["add", str(fresh_pic_run), str(tmp_path / "strip.png")]))
    assert "aspect-ratio limit" in error_line(runner.invoke(app, ["search", str(fresh_pic_run), "--image",
                                                                  str(tmp_path / "strip.png")]))
    folder = tmp_path / "f"
    write_photos(folder, 2, seed=9)
    (folder / "strip.png").write_bytes(strip_png(2, 1000))
    r = ok(runner.invoke(app, ["add", str(fresh_pic_run), str(folder), "--prefix", "f/"]))
    assert "added 2 picture(s)" in r.stdout and "1 unreadable" in r.stdout


# -- 9: refused before any work ----------------------------------------------------------------------
def test_add_prefix_with_a_newline_is_refused_before_any_work(fresh_pic_run, tmp_path, monkeypatch):
    from lagnh_pyg import collection

    monkeypatch.setattr(collection.Collection, "encode_pictures", lambda *a, **k: pytest.fail("a picture was encoded"))
    write_photos(tmp_path / "p", 3)
    for prefix in ("a\nb/", "x\u2028", "t\x85"):
        assert "--prefix" in error_line(runner.invoke(app, ["add", str(fresh_pic_run), str(tmp_path / "p"),
                                                            "--prefix", prefix]))
    assert not (fresh_pic_run / "added").exists()


def test_tune_with_a_nan_in_its_grid_fits_nothing(small_synthetic, tmp_path, monkeypatch):
    from lagnh_pyg.baselines import baseline_class

    monkeypatch.setattr(baseline_class("ssdh"), "fit", lambda *a, **k: pytest.fail("a grid point was fitted"))
    line = error_line(runner.invoke(app, ["experiment", "tune", "--data", str(small_synthetic), "--out", str(tmp_path / "t"),
                                          "--method", "ssdh", "--grid", "alpha=0.5,nan", "--bits", "16"]))
    assert "alpha" in line and "nan" in line.lower()
    assert not list((tmp_path / "t").glob("tune-*"))


def test_sensitivity_and_config_values_must_be_finite_before_training(small_synthetic, tmp_path, monkeypatch):
    import lagnh_pyg.training as training

    monkeypatch.setattr(training, "train_run", lambda *a, **k: pytest.fail("trained"))
    line = error_line(runner.invoke(app, ["experiment", "sensitivity", "--data", str(small_synthetic), "--out",
                                          str(tmp_path / "s"), "--param", "alpha=0.5,nan"]))
    assert "finite" in line
    line = error_line(runner.invoke(app, ["experiment", "accuracy", "--data", str(small_synthetic), "--out",
                                          str(tmp_path / "a"), "--methods", "lagnh", "--set", "loss.alpha=.nan"]))
    assert "finite" in line


def test_deeply_nested_config_and_json_files_are_bad_input(small_synthetic, tmp_path):
    """A RecursionError was an internal error (exit 1)."""
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("[" * 5000 + "]" * 5000)
    assert "nested too deeply" in error_line(runner.invoke(app, ["train", str(small_synthetic), "--config", str(cfg),
                                                                 "--bits", "8", "--out", str(tmp_path / "r")]))
    ds = tmp_path / "ds"
    import shutil

    shutil.copytree(small_synthetic, ds)
    (ds / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in error_line(runner.invoke(app, ["data", "info", str(ds)]))


def test_deeply_nested_json_inputs_are_bad_input_everywhere(tmp_path):
    """The siblings of the nested config: a COCO annotation file, an image source's manifest,
    and a marker file met by the output-ownership walk were internal errors (RecursionError,
    exit 1)."""
    from lagnh_pyg.ownership import check_output_file, project_format

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    assert "nested too deeply" in error_line(runner.invoke(app, ["data", "import", "coco", str(tmp_path / "deep.json"),
                                                                 str(tmp_path / "deep.json"), "--out", str(tmp_path / "c")]))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text(deep)
    (tmp_path / "ds" / "paths.txt").write_text("")
    assert "nested too deeply" in error_line(runner.invoke(app, ["extract", "objects", str(tmp_path / "ds"), "--out",
                                                                 str(tmp_path / "o")]))
    # a directory whose meta.json is not a lagnh marker: not ours, and its files are the user's
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "meta.json").write_text(deep)
    (tmp_path / "mine" / "out.json").write_text("{}")
    assert project_format(tmp_path / "mine") is None
    assert check_output_file(tmp_path / "mine" / "out.json", "--out") == tmp_path / "mine" / "out.json"
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_index_folder_refuses_its_input_as_output_before_any_work(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 12)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for out in (photos, photos / "run"):
        assert "input" in error_line(runner.invoke(app, ["index-folder", str(photos), "--out", str(out)]))
    assert "input" in error_line(runner.invoke(app, ["index-folder", str(photos), "--out", str(tmp_path / "r"),
                                                     "--work", str(photos / "w")]))
    assert "train.epochs" in error_line(runner.invoke(app, ["index-folder", str(photos), "--out", str(tmp_path / "r"),
                                                            "--set", "train.epochs=-3"]))
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no X.work, no run, nothing in the photos


# -- 6: re-runs of index-folder ------------------------------------------------------------------------
def test_index_folder_reruns_check_their_options_and_pictures(tmp_path):
    from lagnh_pyg.collection import Collection

    photos = tmp_path / "photos"
    write_photos(photos, 20)
    base = ["index-folder", str(photos), "--out", str(tmp_path / "run"), "--image-size", "32", "--device", "cpu",
            "--workers", "0", "--topk", "3"]
    ok(runner.invoke(app, base + ["--method", "itq", "--bits", "16"]))
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    # other options: refused without --overwrite (the run stays a 16-bit ITQ run) ...
    line = error_line(runner.invoke(app, base + ["--method", "lsh", "--bits", "64"]))
    assert "--overwrite" in line
    assert json.loads((tmp_path / "run" / "run.json").read_text()) == meta
    # ... redone with it; the features and aux, made alike, are kept
    r = ok(runner.invoke(app, base + ["--method", "lsh", "--bits", "64", "--overwrite"]))
    assert "[features] done before; skipped" in r.stdout and "[train] ..." in r.stdout
    coll = Collection(tmp_path / "run")
    assert (coll.run.method, coll.run.bits, len(coll)) == ("lsh", 64, 20)
    # new pictures: every stage is redone, and all 30 are searchable
    write_photos(photos / "more", 10, seed=21)
    assert "--overwrite" in error_line(runner.invoke(app, base + ["--method", "lsh", "--bits", "64"]))
    r = ok(runner.invoke(app, base + ["--method", "lsh", "--bits", "64", "--overwrite"]))
    assert "[features] ..." in r.stdout and "30 pictures searchable" in r.stdout
    # the same command again: everything is done
    r = ok(runner.invoke(app, base + ["--method", "lsh", "--bits", "64"]))
    assert all(f"[{s}] done before; skipped" in r.stdout for s in ("features", "aux", "import", "train", "encode", "index"))


def test_a_changed_tag_csv_redoes_aux_and_what_follows(tmp_path):
    photos = tmp_path / "photos"
    rels = write_photos(photos, 12)
    csv = tmp_path / "tags.csv"
    csv.write_text("path,tags\n" + "".join(f"{r},{r.split('/')[1].split('_')[0]}\n" for r in rels))
    base = ["index-folder", str(photos), "--out", str(tmp_path / "run"), "--image-size", "32", "--device", "cpu",
            "--workers", "0", "--method", "itq", "--bits", "8", "--tags", str(csv)]
    ok(runner.invoke(app, base))
    csv.write_text("path,tags\n" + "".join(f"{r},sky\n" for r in rels))
    assert "--overwrite" in error_line(runner.invoke(app, base))
    r = ok(runner.invoke(app, base + ["--overwrite"]))
    assert "[features] done before; skipped" in r.stdout and "[aux] ..." in r.stdout and "[import] ..." in r.stdout
    assert json.loads((tmp_path / "run.work" / "aux" / "manifest.json").read_text())["aux"]["dim"] == 1


def test_tag_csv_terms_must_be_text(tmp_path):
    photos = tmp_path / "photos"
    rels = write_photos(photos, 3)
    csv = tmp_path / "tags.csv"
    csv.write_text("path,tags\n" + f'{rels[0]},"a\u2028b"\n', encoding="utf-8")
    line = error_line(runner.invoke(app, ["extract", "objects", str(photos), "--tags", str(csv), "--out", str(tmp_path / "o")]))
    assert "line 2" in line and "U+2028" in line


def test_ids_of_an_import_must_be_text(tmp_path, small_synthetic):
    """An id holding U+0085 was split in two by str.splitlines (every later id shifted by one)."""
    from lagnh_pyg.data.store import Dataset

    ds = Dataset.open(small_synthetic)
    ids = [f"i{k}" for k in range(ds.n)]
    ids[7] = "bad\x85id"
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in ids[:-1]), encoding="utf-8")  # one line short
    arrays = {}
    for name in ("features", "aux"):
        arrays[name] = tmp_path / f"{name}.npy"
        np.save(arrays[name], np.asarray(getattr(ds, name)[:]) if name == "features" else ds.aux_rows(np.arange(ds.n)))
    args = ["data", "import", "--features", str(arrays["features"]), "--aux", str(arrays["aux"]),
            "--train-idx", str(small_synthetic / "splits" / "train.npy"), "--query-idx",
            str(small_synthetic / "splits" / "query.npy"), "--database-idx", str(small_synthetic / "splits" / "database.npy"),
            "--ids", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "d")]
    line = error_line(runner.invoke(app, args))
    assert "ids" in line and not (tmp_path / "d").exists()
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    assert "U+0085" in error_line(runner.invoke(app, args))
