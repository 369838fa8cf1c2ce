"""Feature and object extraction: image sources, bad files, backbones, resumable shards, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("torchvision")
pytest.importorskip("timm")
from helpers import error_line
from PIL import Image

from lagnh_pyg.cli.main import app
from lagnh_pyg.errors import InputError
from lagnh_pyg.extract.backbones import build_backbone, load_state_dict_in_order
from lagnh_pyg.extract.features import extract_features, load_extraction
from lagnh_pyg.extract.images import list_image_source
from lagnh_pyg.extract.objects import check_threshold, coco_categories, detect_objects, tags_aux

runner = CliRunner()


@pytest.fixture
def image_folder(tmp_path):
    """Five good images (two formats, odd sizes, a sub-folder), a truncated JPEG, a text file named .jpg."""
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(40, 30), (33, 50), (64, 64), (20, 45)]):
        arr = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"good{i}.{'png' if i % 2 else 'jpg'}")
    Image.fromarray(rng.integers(0, 255, size=(30, 30), dtype=np.uint8)).save(root / "sub" / "grey.png")
    full = root / "good0.jpg"
    (root / "truncated.jpg").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 3])
    (root / "notes.jpg").write_text("this is not an image\n")
    (root / "readme.txt").write_text("ignored: not an image extension\n")
    return root


def test_list_sources(image_folder, tmp_path):
    imgs = list_image_source(image_folder)
    assert imgs.ids == sorted(imgs.ids) and len(imgs) == 7  # 5 good + 2 bad named like images
    assert "sub/grey.png" in imgs.ids and "readme.txt" not in imgs.ids
    lst = tmp_path / "list.txt"
    lst.write_text("imgs/good1.png\n# a comment\n\nimgs/good2.jpg\n")
    li = list_image_source(lst)
    assert li.ids == ["imgs/good1.png", "imgs/good2.jpg"] and li.paths[0] == str(tmp_path / "imgs/good1.png")
    # a dataset directory with image paths (e.g. an imported COCO): its ids and paths
    from lagnh_pyg.data.store import write_dataset

    good = [p for p in imgs.paths if "good" in p]
    ds = write_dataset(tmp_path / "ds", np.zeros((len(good), 2), np.float32), np.ones((len(good), 1), np.float32),
                       splits={"train": [0], "query": [1], "database": [2, 3]}, ids=[f"im{i}" for i in range(len(good))],
                       paths=good)
    di = list_image_source(ds)
    assert di.ids == ["im0", "im1", "im2", "im3"] and di.paths == good and di.source["kind"] == "dataset"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        list_image_source(empty)
    with pytest.raises(InputError, match="does not exist"):
        list_image_source(tmp_path / "nowhere")


def test_unknown_backbone_and_bad_state_dict():
    with pytest.raises(InputError, match="unknown backbone 'nosuchnet'"):
        build_backbone("nosuchnet", "none")
    lin = torch.nn.Linear(3, 2)
    with pytest.raises(InputError, match="does not fit"):
        load_state_dict_in_order(lin, {"a": torch.zeros(2, 4), "b": torch.zeros(2)}, "test file")


def test_efficientnet_lite0_offline_weights_classify():
    """The shipped weights, mapped by position onto timm's network, give a sane ImageNet classifier."""
    bb = build_backbone("efficientnet_lite0", "imagenet")
    assert bb.dim == 1280 and bb.mean == (0.5, 0.5, 0.5)
    # a pretrained network's BN running stats are not the default 0/1 of a fresh one
    bn = bb.model.bn2
    assert float(bn.running_var.mean()) != pytest.approx(1.0)
    x = torch.zeros(2, 3, 64, 64)
    with torch.inference_mode():
        f = bb.model(x)
    assert f.shape == (2, 1280) and torch.isfinite(f).all()


def test_extract_skips_bad_files_and_matches_direct_forward(image_folder, tmp_path):
    imgs = list_image_source(image_folder)
    bb = build_backbone("efficientnet_lite0", "none", image_size=32)
    out = tmp_path / "feats"
    res = extract_features(imgs, bb, out, batch_size=2, workers=2, shard_size=3)
    assert (res.n_ok, res.n_skipped) == (5, 2)
    man = load_extraction(out)
    assert man["kind"] == "features" and man["n_skipped"] == 2 and man["features"]["dim"] == 1280
    reasons = {s["id"]: s["reason"] for s in man["skipped"]}
    assert set(reasons) == {"notes.jpg", "truncated.jpg"}
    ids = (out / "ids.txt").read_text().splitlines()
    assert ids == [i for i in imgs.ids if i not in reasons]
    assert len((out / "skipped.tsv").read_text().splitlines()) == 2
    feats = np.load(out / "features.npy")
    assert feats.shape == (5, 1280) and np.isfinite(feats).all()
    # row k is the network applied to image ids[k]
    k = ids.index("sub/grey.png")
    x = bb.transform()(Image.open(image_folder / "sub" / "grey.png"))[None]
    with torch.inference_mode():
        ref = bb.model(x).numpy()[0]
    np.testing.assert_allclose(feats[k], ref, rtol=1e-4, atol=1e-4)
    assert not (tmp_path / ".feats.partial").exists()
    with pytest.raises(InputError, match="already exists"):
        extract_features(imgs, bb, out)


def test_extract_resumes_after_interruption(image_folder, tmp_path):
    imgs = list_image_source(image_folder)
    bb = build_backbone("efficientnet_lite0", "none", image_size=32)
    ref = extract_features(imgs, bb, tmp_path / "ref", workers=0, shard_size=2)
    seen = []

    def stop_in_second_shard(k):
        seen.append(k)
        if sum(seen) > 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(imgs, bb, tmp_path / "out", workers=0, shard_size=2, batch_size=1, progress=stop_in_second_shard)
    assert (tmp_path / ".out.partial" / "shard-00000.npz").is_file() and not (tmp_path / "out").exists()
    extract_features(imgs, bb, tmp_path / "out", workers=0, shard_size=2)
    man = load_extraction(tmp_path / "out")
    assert man["resumed_images"] == 2
    np.testing.assert_allclose(np.load(tmp_path / "out" / "features.npy"), np.load(ref.out / "features.npy"), atol=1e-5)


def test_all_images_bad(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.jpg").write_text("nope")
    bb = build_backbone("efficientnet_lite0", "none", image_size=32)
    with pytest.raises(InputError, match="none of the 1 images could be decoded"):
        extract_features(list_image_source(root), bb, tmp_path / "o", workers=0)


def test_vgg16_fc7_and_named_backbones():
    vgg = build_backbone("vgg16", "none", image_size=32)
    assert vgg.dim == 4096
    with torch.inference_mode():
        f = vgg.model(torch.zeros(1, 3, 32, 32))
    assert f.shape == (1, 4096) and (f >= 0).all()  # fc7 after its ReLU
    tv = build_backbone("torchvision:mobilenet_v3_small", "none")
    assert tv.dim == 1024  # the input of its last linear layer (after the 576 -> 1024 hidden one)
    tm = build_backbone("timm:resnet18", "none")
    assert tm.dim == 512


def test_detector_threshold_and_categories():
    names, column = coco_categories()
    assert len(names) == 80 and names[0] == "person" and column.max() == 79
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(InputError, match="strictly between 0 and 1"):
            check_threshold(bad)


def test_detect_objects_random_weights(image_folder, tmp_path):
    imgs = list_image_source(image_folder)
    res = detect_objects(imgs, tmp_path / "objs", detector="fasterrcnn_mobilenet", weights="none", threshold=0.5,
                         min_size=64, workers=0, batch_size=2)
    assert res["n_items"] == 5 and res["n_skipped"] == 2
    aux = np.load(tmp_path / "objs" / "aux.npy")
    scores = np.load(tmp_path / "objs" / "scores.npy")
    assert aux.shape == scores.shape == (5, 80)
    np.testing.assert_array_equal(aux, (scores >= 0.5).astype(np.float32))
    assert len((tmp_path / "objs" / "names.txt").read_text().splitlines()) == 80


def test_tags_aux(image_folder, tmp_path):
    imgs = list_image_source(image_folder)
    csv = tmp_path / "tags.csv"
    csv.write_text("path,tags\ngood0.jpg,dog;beach\ngood1.png,dog|sky\nsub/grey.png,cat\n")
    res = tags_aux(imgs, csv, tmp_path / "tags", min_count=2)
    assert res["vocabulary"] == 1
    aux = np.load(tmp_path / "tags" / "aux.npy")
    assert aux.shape == (7, 1) and aux.sum() == 2
    assert (tmp_path / "tags" / "names.txt").read_text() == "dog\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("path,tags\nmissing.jpg,dog\n")
    with pytest.raises(InputError, match="not in the folder"):
        tags_aux(imgs, bad, tmp_path / "tags2")


def test_cli_bad_input(image_folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = error_line(runner.invoke(app, ["extract", "features", str(empty), "--backbone", "efficientnet_lite0", "--out", str(tmp_path / "o")]))
    assert "no images" in line
    line = error_line(runner.invoke(app, ["extract", "features", str(image_folder), "--backbone", "nosuchnet", "--out", str(tmp_path / "o")]))
    assert "unknown backbone" in line
    line = error_line(runner.invoke(app, ["extract", "objects", str(image_folder), "--threshold", "1.5", "--out", str(tmp_path / "o")]))
    assert "threshold" in line
    bad = tmp_path / "bad.csv"
    bad.write_text("path,tags\nmissing.jpg,dog\n")
    line = error_line(runner.invoke(app, ["extract", "objects", str(image_folder), "--tags", str(bad), "--out", str(tmp_path / "o")]))
    assert "missing.jpg" in line


def test_cli_features(image_folder, tmp_path):
    out = tmp_path / "feats"
    r = runner.invoke(app, ["extract", "features", str(image_folder), "--backbone", "efficientnet_lite0", "--weights", "none",
                            "--image-size", "32", "--workers", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "skipped 2 unreadable" in r.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["n_items"] == 5 and man["extractor"]["backbone"] == "efficientnet_lite0"


def test_overwrite_replaces_only_its_own_extraction(image_folder, tmp_path):
    """--overwrite replaces an earlier extraction, never the images or a user's folder."""
    imgs = list_image_source(image_folder)
    csv = tmp_path / "tags.csv"
    csv.write_text("path,tags\ngood0.jpg,dog\ngood1.png,dog\n")
    out = tmp_path / "tags"
    tags_aux(imgs, csv, out)
    (out / "stale.txt").write_text("from the first run\n")
    tags_aux(imgs, csv, out, overwrite=True)  # our own output: replaced whole
    assert load_extraction(out)["kind"] == "tags" and not (out / "stale.txt").exists()
    before = sorted(p.name for p in image_folder.rglob("*"))
    for target in (image_folder, tmp_path, image_folder / "sub"):  # the input, its parent, a folder inside it
        with pytest.raises(InputError, match="refusing to replace"):
            tags_aux(imgs, csv, target, overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    with pytest.raises(InputError, match="not a lagnh-extract directory"):
        tags_aux(imgs, csv, mine, overwrite=True)
    assert sorted(p.name for p in image_folder.rglob("*")) == before and (mine / "notes.txt").is_file()


def _bn(c, seed):
    g = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.2)
    return bn


def test_fold_batch_norms_keeps_the_output():
    """Folding each batch norm into the convolution before it leaves the network's output as
    it was (timm's EfficientNet-Lite0: every batch norm folds; a plain conv/bn stack too)."""
    from lagnh_pyg.extract.features import fold_batch_norms

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), _bn(8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1, bias=True),
                              _bn(4, 2)).eval()
    folded, n = fold_batch_norms(net)
    x = torch.randn(2, 3, 9, 9)
    assert n == 2 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original untouched
    bb = build_backbone("efficientnet_lite0", "none", image_size=32)
    folded, n = fold_batch_norms(bb.model)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        want, got = bb.model(x), folded(x)
    assert n == 49
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class _OutOfOrder(torch.nn.Module):
    """A batch norm registered after one convolution but applied to another's output: the
    fold by registration order would be wrong, and the check must catch it."""

    def __init__(self):
        super().__init__()
        self.conv_a = torch.nn.Conv2d(3, 4, 1)
        self.bn = _bn(4, 3)
        self.conv_b = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return (self.bn(self.conv_b(x)) + self.conv_a(x)).mean((2, 3))


def test_embed_checks_the_folded_network_and_falls_back():
    from lagnh_pyg.extract.backbones import Backbone
    from lagnh_pyg.extract.features import embed, fold_batch_norms

    torch.manual_seed(0)
    net = _OutOfOrder().eval()
    folded, n = fold_batch_norms(net)
    x = torch.randn(5, 3, 6, 6)
    assert n == 1 and not torch.allclose(folded(x), net(x), atol=1e-3)  # wrong, as expected
    bb = Backbone("toy", net, 4)
    got = np.concatenate([f for _, f in embed(bb, [(0, x[:3]), (1, x[3:])])])
    with torch.inference_mode():
        want = net(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert bb._folded is None and bb._folded_checked  # decided once: run as given
