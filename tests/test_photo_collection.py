""""My own photo collection", end to end through the CLI: extract features and tags from a
folder (with a truncated JPEG among the photos), import, hash, index, search by id and by a
new picture (docs/photo-collection.md walks the same path)."""

import json
import shutil

import numpy as np
import pytest
from helpers import error_line
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.data.store import Dataset

pytest.importorskip("torchvision")
pytest.importorskip("timm")

runner = CliRunner()
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 70, 220)}
SHAPES = {"red": "circle", "green": "square", "blue": "triangle"}


def ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def draw(colour: str, rng: np.random.Generator, size: int = 64):
    from PIL import Image, ImageDraw

    bg = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // 4 + 150  # a distinct textured background
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(12, 22))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if SHAPES[colour] == "circle":
        d.ellipse(box, fill=fill)
    elif SHAPES[colour] == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """24 coloured-shape photos in 3 classes (two sub-folders), a truncated JPEG, a tag CSV."""
    root = tmp_path_factory.mktemp("collection")
    rng = np.random.default_rng(7)
    photos = root / "photos"
    rows = ["path,tags,labels"]
    for i in range(24):
        colour = list(COLOURS)[i % 3]
        rel = f"{'holiday' if i < 12 else 'home'}/{colour}_{i:02d}.png"
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        draw(colour, rng).save(photos / rel)
        extra = ";outdoor" if i % 4 == 0 else ""
        rows.append(f"{rel},{colour};{SHAPES[colour]}{extra},{colour}")
    draw("red", rng).save(root / "full.jpg", quality=90)
    data = (root / "full.jpg").read_bytes()
    (photos / "home" / "broken.jpg").write_bytes(data[: len(data) // 3])
    rows.append("home/broken.jpg,red;circle,red")
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def pipeline(photos):
    """extract features -> extract objects --tags -> import folder -> itq -> encode -> index."""
    w = photos
    r = ok(runner.invoke(app, ["extract", "features", str(w / "photos"), "--backbone", "efficientnet_lite0",
                               "--weights", "imagenet", "--image-size", "64", "--device", "cpu", "--workers", "0",
                               "--batch-size", "8", "--out", str(w / "feats")]))
    assert "wrote 24 x 1280 features" in r.stdout and "skipped 1 unreadable" in r.stdout
    assert (w / "feats" / "skipped.tsv").read_text().startswith("home/broken.jpg\t")
    r = ok(runner.invoke(app, ["extract", "objects", str(w / "photos"), "--tags", str(w / "tags.csv"),
                               "--out", str(w / "tags")]))
    assert "wrote tags of 25 images" in r.stdout
    r = runner.invoke(app, ["data", "import", "folder", str(w / "photos"), "--csv", str(w / "tags.csv"),
                            "--features", str(w / "feats" / "features.npy"), "--aux", str(w / "tags" / "aux.npy"),
                            "--n-train", "18", "--n-query", "4", "--out", str(w / "data")])
    ok(r)
    warnings = [ln for ln in r.stderr.splitlines() if "dropped" in ln]
    assert len(warnings) == 1 and "home/broken.jpg" in warnings[0], r.stderr
    ok(runner.invoke(app, ["baseline", "itq", str(w / "data"), "--bits", "16", "--out", str(w / "run")]))
    ok(runner.invoke(app, ["encode", str(w / "run")]))
    ok(runner.invoke(app, ["index", str(w / "run")]))
    return w


def test_import_drops_the_unreadable_photo_and_records_the_recipe(pipeline):
    ds = Dataset.open(pipeline / "data")
    assert ds.n == 24 and "home/broken.jpg" not in ds.ids
    assert sum(len(ds.split(s)) for s in ("query", "database")) == 24  # splits drawn after dropping
    prov = ds.manifest["provenance"]
    assert prov["n_dropped"] == 1 and prov["dropped"][0]["id"] == "home/broken.jpg"
    assert "OSError" in prov["dropped"][0]["reason"] or "rror" in prov["dropped"][0]["reason"]
    ex = prov["extraction"]["features"]["extractor"]
    assert (ex["backbone"], ex["weights"], ex["image_size"], ex["dim"]) == ("efficientnet_lite0", "imagenet", 64, 1280)
    assert "preprocessing" in ex and prov["extraction"]["aux"]["kind"] == "tags"
    assert ds.aux_names == ["blue", "circle", "green", "outdoor", "red", "square", "triangle"]
    feats = np.load(pipeline / "feats" / "features.npy")
    fids = (pipeline / "feats" / "ids.txt").read_text().splitlines()
    np.testing.assert_array_equal(ds.feature_rows(), feats[[fids.index(i) for i in ds.ids]])


def test_search_by_id_and_by_image(pipeline, tmp_path):
    w = pipeline
    ds = Dataset.open(w / "data")
    db_row = int(ds.split("database")[0])
    item = ds.ids[db_row]
    r = ok(runner.invoke(app, ["search", str(w / "run"), "--id", item, "-k", "5", "--json"]))
    res = json.loads(r.stdout)
    assert res["results"][0]["id"] == item and res["results"][0]["distance"] == 0

    query = tmp_path / "my_new_photo.png"
    shutil.copy(ds.paths[db_row], query)  # a picture identical to a database item
    colour = item.split("/")[1].split("_")[0]
    html = tmp_path / "sheet.html"
    r = ok(runner.invoke(app, ["search", str(w / "run"), "--image", str(query), "-k", "5", "--html", str(html),
                               "--tags", f"{colour};{SHAPES[colour]};unheard-of"]))
    lines = r.stdout.splitlines()
    assert lines[0].startswith("query my_new_photo.png")
    rank1 = lines[1].split()
    assert rank1[0] == "1" and rank1[1] == "d=0" and rank1[2] == item, r.stdout
    assert "unheard-of" in r.stderr  # an unknown tag is warned about
    page = html.read_text()
    assert page.count("data:image/jpeg;base64,") == 6  # the query and five results, embedded

    r = ok(runner.invoke(app, ["search", str(w / "run"), "--image", str(query), "-k", "3", "--json"]))
    assert "without auxiliary semantics" in r.stderr
    assert json.loads(r.stdout)["results"][0]["id"] == item


def test_search_image_bad_input(pipeline, tmp_path):
    w = pipeline
    assert "does not exist" in error_line(runner.invoke(app, ["search", str(w / "run"), "--image", str(tmp_path / "no.png")]))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    assert "cannot read image" in error_line(runner.invoke(app, ["search", str(w / "run"), "--image", str(bad)]))
    assert "--tags goes with --image" in error_line(
        runner.invoke(app, ["search", str(w / "run"), "--id", "x", "--tags", "red"]))


def test_search_image_needs_an_extraction_recipe(tmp_path):
    """A dataset imported from plain .npy arrays cannot featurize a new picture."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, arr in {"X": rng.standard_normal((30, 12)).astype(np.float32),
                      "A": (rng.random((30, 4)) > 0.5).astype(np.float32),
                      "T": np.arange(20), "Q": np.arange(20, 25), "D": np.arange(20, 30)}.items():
        np.save(tmp_path / f"{name}.npy", arr)
    ok(runner.invoke(app, ["data", "import", "--features", str(tmp_path / "X.npy"), "--aux", str(tmp_path / "A.npy"),
                           "--train-idx", str(tmp_path / "T.npy"), "--query-idx", str(tmp_path / "Q.npy"),
                           "--database-idx", str(tmp_path / "D.npy"), "--out", str(tmp_path / "data")]))
    ok(runner.invoke(app, ["baseline", "itq", str(tmp_path / "data"), "--bits", "8", "--out", str(tmp_path / "run")]))
    ok(runner.invoke(app, ["encode", str(tmp_path / "run")]))
    Image.new("RGB", (20, 20), (10, 200, 30)).save(tmp_path / "q.png")
    line = error_line(runner.invoke(app, ["search", str(tmp_path / "run"), "--image", str(tmp_path / "q.png")]))
    assert "needs a dataset built from `lagnh extract features`" in line


def test_featurize_like_random_weights_and_detector(photos, tmp_path):
    """Random-weight backbones and detectors are rebuilt from the recorded seed: a dataset item
    featurized again gives its stored features and detections."""
    from lagnh_pyg.data.folder import build_catalog
    from lagnh_pyg.data.sources import find_extraction, write_catalog
    from lagnh_pyg.extract import featurize_like
    from lagnh_pyg.extract.backbones import build_backbone
    from lagnh_pyg.extract.features import extract_features
    from lagnh_pyg.extract.images import list_image_source
    from lagnh_pyg.extract.objects import detect_objects

    src = tmp_path / "few"
    for rel in ("holiday/red_00.png", "holiday/green_01.png", "holiday/blue_02.png", "home/red_12.png",
                "home/green_13.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photos / "photos" / rel, src / rel)
    imgs = list_image_source(src)
    extract_features(imgs, build_backbone("resnet18", "none", image_size=32), tmp_path / "f", workers=0,
                     dtype="float16")
    detect_objects(imgs, tmp_path / "o", weights="none", threshold=0.05, min_size=64, workers=0,
                   detector="fasterrcnn_mobilenet")
    fx, ox = find_extraction(tmp_path / "f" / "features.npy"), find_extraction(tmp_path / "o" / "aux.npy")
    cat = build_catalog(src, n_train=2, n_query=1, feature_ids=fx.ids())
    write_catalog(cat, tmp_path / "ds", np.load(tmp_path / "f" / "features.npy"), feature_ids=fx.ids(),
                  aux=np.load(tmp_path / "o" / "aux.npy"), aux_ids=ox.ids(),
                  provenance={"extraction": {"features": fx.recipe(), "aux": ox.recipe()}})
    ds = Dataset.open(tmp_path / "ds")
    row = 3
    f, a = featurize_like(ds, [ds.paths[row]], "cpu")
    np.testing.assert_allclose(f[0], ds.feature_rows([row])[0], rtol=1e-2, atol=1e-3)
    np.testing.assert_array_equal(a[0], ds.aux_rows([row])[0])
    with pytest.raises(Exception, match="--tags does not apply"):
        featurize_like(ds, [ds.paths[row]], "cpu", tags=["dog"])


def test_lagnh_train_and_search_by_image(pipeline, tmp_path):
    """LAGNH itself (tiny settings): a picture identical to a database item, given that item's
    tags, is encoded out of sample to the item's code (Hamming distance 0)."""
    w = pipeline
    run = tmp_path / "lagnh"
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    ok(runner.invoke(app, ["train", str(w / "data"), "--config", str(config), "--bits", "16", "--out", str(run),
                           "--set", "train.epochs=2", "--set", "model.hidden=32", "--set", "model.att_dim=16",
                           "--set", "model.anchors=8", "--set", "graph.k=3"]))
    ok(runner.invoke(app, ["encode", str(run)]))
    ok(runner.invoke(app, ["index", str(run)]))
    ds = Dataset.open(w / "data")
    row = int(ds.split("database")[0])
    item = ds.ids[row]
    tags = ";".join(n for n, v in zip(ds.aux_names, ds.aux_rows([row])[0]) if v > 0)
    query = tmp_path / "again.png"
    shutil.copy(ds.paths[row], query)
    r = ok(runner.invoke(app, ["search", str(run), "--image", str(query), "--tags", tags, "-k", str(ds.n), "--json"]))
    hits = json.loads(r.stdout)["results"]
    assert hits[0]["distance"] == 0 and {h["id"]: h["distance"] for h in hits}[item] == 0
