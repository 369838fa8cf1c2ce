"""Importers of real dataset formats (MS COCO, NUS-WIDE, .mat/.h5, image folders) on tiny files."""

import json

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import error_line
from typer.testing import CliRunner

from lagnh_pyg.cli.main import app
from lagnh_pyg.data import coco, folder, mat, nuswide
from lagnh_pyg.data.sources import Catalog, read_ids, seeded_splits, write_catalog
from lagnh_pyg.data.store import Dataset
from lagnh_pyg.errors import InputError
from lagnh_pyg.extract.images import list_images
from lagnh_pyg.extract.tags import split_terms

runner = CliRunner()


# --------------------------------------------------------------------------- MS COCO
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]


def _coco_labels(image_id):
    """Categories of a synthetic image: none for 105 and 203, else 1-2 of {1, 5, 90}."""
    if image_id in (105, 203):
        return []
    cats = [[1], [5], [90], [1, 90]][image_id % 4]
    return cats


def _write_coco(tmp_path):
    for name, ids in (("train", range(101, 113)), ("val", range(201, 205))):
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 4, "width": 4} for i in reversed(ids)]
        anns = [{"id": 10 * i + k, "image_id": i, "category_id": c, "iscrowd": 0}
                for i in ids for k, c in enumerate(_coco_labels(i))]
        anns.append({"id": 99999, "image_id": ids[0], "category_id": _coco_labels(ids[0])[0], "iscrowd": 1})  # repeat
        doc = {"images": images, "annotations": anns, "categories": CATEGORIES}
        (tmp_path / f"instances_{name}2017.json").write_text(json.dumps(doc))
    all_ids = list(range(101, 113)) + list(range(201, 205))
    order = np.random.default_rng(3).permutation(len(all_ids))
    ids = [all_ids[i] for i in order]
    # rows of the given arrays are shuffled and named partly by id, partly by file name
    (tmp_path / "ids.txt").write_text("\n".join(str(i) if k % 2 else f"{i:012d}.jpg" for k, i in enumerate(ids)) + "\n")
    np.save(tmp_path / "X.npy", np.array([[i, 2 * i, 0.5] for i in ids], dtype=np.float32))
    np.save(tmp_path / "A.npy", np.array([[1.0, 0.0, (i % 7) / 7] for i in ids], dtype=np.float32))
    return tmp_path / "instances_train2017.json", tmp_path / "instances_val2017.json"


def test_coco_catalog_drop(tmp_path):
    tr, va = _write_coco(tmp_path)
    cat = coco.build_catalog(tr, va, n_train=5, seed=1)
    assert cat.label_names == ["person", "airplane", "toothbrush"]  # sorted category ids 1, 5, 90
    assert cat.ids == [str(i) for i in range(101, 113) if i != 105] + ["201", "202", "204"]
    s = cat.splits
    assert len(s["train"]) == 5 and len(s["database"]) == 6 and s["query"].tolist() == [11, 12, 13]
    assert np.intersect1d(s["train"], s["database"]).size == 0
    assert sorted(np.concatenate([s["train"], s["database"]]).tolist()) == list(range(11))
    col = {1: 0, 5: 1, 90: 2}
    for r, i in enumerate(cat.ids):
        expected = np.zeros(3, np.uint8)
        expected[[col[c] for c in _coco_labels(int(i))]] = 1
        np.testing.assert_array_equal(cat.labels[r], expected)
    assert any("1 without annotations (dropped)" in n for n in cat.notes)
    # the sample depends on the seed only
    np.testing.assert_array_equal(coco.build_catalog(tr, va, n_train=5, seed=1).splits["train"], s["train"])


def test_coco_keep_and_write(tmp_path):
    tr, va = _write_coco(tmp_path)
    cat = coco.build_catalog(tr, va, n_train=4, seed=0, no_annotation="keep")
    assert cat.n == 16 and cat.labels[cat.ids.index("105")].sum() == 0
    X, A = np.load(tmp_path / "X.npy", mmap_mode="r"), np.load(tmp_path / "A.npy")
    ids = read_ids(tmp_path / "ids.txt")
    out = write_catalog(cat, tmp_path / "ds", X, feature_ids=ids, aux=A)
    ds = Dataset.open(out)
    np.testing.assert_array_equal(ds.feature_rows()[:, 0], [float(i) for i in cat.ids])  # aligned by id
    np.testing.assert_allclose(ds.aux_rows()[:, 2], [(int(i) % 7) / 7 for i in cat.ids], rtol=1e-6)
    assert ds.info()["labels"]["empty_rows"] == 2
    assert ds.manifest["provenance"]["source"] == "coco"


def test_coco_errors(tmp_path):
    tr, va = _write_coco(tmp_path)
    cat = coco.build_catalog(tr, va, n_train=5)
    X = np.load(tmp_path / "X.npy")
    ids = read_ids(tmp_path / "ids.txt")
    with pytest.raises(InputError, match="lagnh extract objects"):
        write_catalog(cat, tmp_path / "a", X, feature_ids=ids)
    drop = [k for k, i in enumerate(ids) if i in ("102", "000000000102.jpg")]
    keep_rows = np.setdiff1d(np.arange(len(ids)), drop)
    with pytest.raises(InputError, match=r"lack 1 of the 14 imported items \(first: 102\)"):
        write_catalog(cat, tmp_path / "b", X[keep_rows], feature_ids=[ids[k] for k in keep_rows], aux=X[keep_rows] * 0)
    with pytest.raises(InputError, match="pass --ids"):
        write_catalog(cat, tmp_path / "c", X, aux=X * 0)
    with pytest.raises(InputError, match="--n-train must be between 1 and 10"):
        coco.build_catalog(tr, va, n_train=11)
    with pytest.raises(InputError, match="--no-annotation"):
        coco.build_catalog(tr, va, no_annotation="maybe")
    with pytest.raises(InputError, match="does not exist"):
        coco.build_catalog(tmp_path / "nope.json", va)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        coco.build_catalog(tmp_path / "bad.json", va)
    (tmp_path / "info.json").write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(InputError, match="image_info"):
        coco.build_catalog(tmp_path / "info.json", va)
    doc = json.loads(va.read_text())
    doc["categories"] = doc["categories"][:2]
    doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] != 90]
    (tmp_path / "val_other.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="different categories"):
        coco.build_catalog(tr, tmp_path / "val_other.json")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_coco_cli(tmp_path):
    tr, va = _write_coco(tmp_path)
    for sub in ("train2017", "val2017"):
        (tmp_path / "images" / sub).mkdir(parents=True)
    args = ["data", "import", "coco", str(tr), str(va), "--features", str(tmp_path / "X.npy"), "--ids",
            str(tmp_path / "ids.txt"), "--n-train", "5", "--images", str(tmp_path / "images")]
    result = runner.invoke(app, args + ["--aux", str(tmp_path / "A.npy"), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "without annotations (dropped)" in result.stdout
    ds = Dataset.open(tmp_path / "ds")
    assert ds.n == 14 and ds.paths[0].endswith("train2017/000000000101.jpg")
    assert ds.paths[-1].endswith("val2017/000000000204.jpg")
    result = runner.invoke(app, args + ["--out", str(tmp_path / "noaux")])
    assert result.exit_code == 2 and "lagnh extract objects" in error_line(result)
    assert not (tmp_path / "noaux").exists()


# --------------------------------------------------------------------------- NUS-WIDE
CONCEPTS = ["animal", "beach", "clouds", "sky", "water"]
N_NUS = 40


def _nus_labels():
    i = np.arange(N_NUS)
    return np.stack([i % 10 == 3, i == 7, i % 3 == 0, i % 2 == 0, i % 4 == 1], axis=1).astype(np.uint8)


def _write_nuswide(root):
    labels = _nus_labels()  # counts: animal 4, beach 1, clouds 14, sky 20, water 10
    (root / "Groundtruth" / "AllLabels").mkdir(parents=True)
    (root / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    for j, c in enumerate(CONCEPTS):
        (root / "Groundtruth" / "AllLabels" / f"Labels_{c}.txt").write_text("\n".join(map(str, labels[:, j])) + "\n")
    tags = (np.random.default_rng(0).random((N_NUS, 6)) < 0.35).astype(np.uint8)
    tags[:, 5] = 0
    tags[2, 5] = 1  # tag "rare" is used by exactly one image
    (root / "NUS_WID_Tags").mkdir()
    (root / "NUS_WID_Tags" / "AllTags1k.txt").write_text("".join(" ".join(map(str, r)) + " \r\n" for r in tags))
    (root / "NUS_WID_Tags" / "TagList1k.txt").write_text("\n".join(["sun", "sea", "cat", "blue", "sand", "rare"]) + "\n")
    (root / "ImageList").mkdir()
    entries = [f"C:\\ImageData\\Flickr\\{CONCEPTS[i % 5]}\\{i:04d}_{1000 + i}.jpg" for i in range(N_NUS)]
    (root / "ImageList" / "Imagelist.txt").write_text("\r\n".join(entries) + "\r\n")
    np.save(root / "X.npy", np.arange(N_NUS, dtype=np.float32)[:, None].repeat(3, 1))
    return labels, tags


def test_nuswide_protocol(tmp_path):
    labels, tags = _write_nuswide(tmp_path)
    cat = nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5, seed=0, min_tag_count=2)
    assert cat.label_names == ["clouds", "sky", "water"]  # the 3 most frequent, in Concepts81 order
    kept = np.flatnonzero(labels[:, 2:].any(1))
    np.testing.assert_array_equal(cat.source_rows, kept)
    np.testing.assert_array_equal(cat.labels, labels[kept][:, 2:])
    s = cat.splits
    assert 2 <= len(s["query"]) <= 6 and np.unique(s["query"]).size == len(s["query"])
    for c in range(3):  # every concept has its queries
        assert cat.labels[s["query"], c].sum() >= 2
    assert len(s["train"]) == 5
    assert len(s["query"]) + len(s["train"]) + len(s["database"]) == kept.size
    for a, b in (("train", "query"), ("train", "database"), ("query", "database")):
        assert np.intersect1d(s[a], s[b]).size == 0
    assert cat.aux_names == ["sun", "sea", "cat", "blue", "sand"]  # "rare" filtered by min_tag_count
    np.testing.assert_array_equal(cat.aux.toarray(), tags[kept][:, :5])
    assert cat.ids[0] == "animal/0000_1000.jpg"  # the folder of line 1 of the list
    out = write_catalog(cat, tmp_path / "ds", np.load(tmp_path / "X.npy"))  # rows = the full image list
    ds = Dataset.open(out)
    np.testing.assert_array_equal(ds.feature_rows()[:, 0], kept)
    assert ds.manifest["aux"]["storage"] == "sparse"
    np.testing.assert_array_equal(nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5,
                                                        seed=0).splits["query"], s["query"])


def test_nuswide_cli_with_photo_ids(tmp_path):
    _write_nuswide(tmp_path)
    X = np.load(tmp_path / "X.npy")[::-1].copy()
    np.save(tmp_path / "Xr.npy", X)
    (tmp_path / "ids.txt").write_text("\n".join(str(1000 + i) for i in reversed(range(N_NUS))) + "\n")
    (tmp_path / "Flickr").mkdir()
    result = runner.invoke(app, ["data", "import", "nuswide", str(tmp_path), "--features", str(tmp_path / "Xr.npy"),
                                 "--ids", str(tmp_path / "ids.txt"), "--concepts", "3", "--per-concept", "2",
                                 "--n-train", "5", "--images", str(tmp_path / "Flickr"), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "carry one of the 3 most frequent concepts" in result.stdout
    ds = Dataset.open(tmp_path / "ds")
    ids = ds.ids
    np.testing.assert_array_equal(ds.feature_rows()[:, 0], [int(i.split("_")[1][:-4]) - 1000 for i in ids])
    assert ds.paths[0].endswith("Flickr/animal/0000_1000.jpg")


def test_nuswide_errors(tmp_path):
    _write_nuswide(tmp_path)
    lab = tmp_path / "Groundtruth" / "AllLabels" / "Labels_sky.txt"
    good = lab.read_text()
    lab.write_text("\n".join(good.splitlines()[:-1]) + "\n")
    with pytest.raises(InputError, match="Labels_sky.txt has 39 values, expected 40"):
        nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5)
    lab.write_text(good.replace("1", "2", 1))
    with pytest.raises(InputError, match="0/1"):
        nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5)
    lab.unlink()
    with pytest.raises(InputError, match="label file .*Labels_sky.txt for concept 'sky'"):
        nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5)
    lab.write_text(good)
    tags = tmp_path / "NUS_WID_Tags" / "AllTags1k.txt"
    lines = tags.read_text().splitlines(keepends=True)
    tags.write_text("".join(lines[:4] + ["0 1\n"] + lines[5:]))
    with pytest.raises(InputError, match="line 5 has 2 values, expected 6"):
        nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5)
    tags.write_text("".join(lines[:2] + ["0 1 x 0 0 0\n"] + lines[3:]))
    with pytest.raises(InputError, match="non-numeric value"):
        nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5)
    tags.write_text("".join(lines + lines[:1]))
    with pytest.raises(InputError, match="more than 40 lines"):
        nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5)
    tags.write_text("".join(lines))
    with pytest.raises(InputError, match="--n-train must be between"):
        nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=500)
    with pytest.raises(InputError, match="--concepts must be between 1 and 5"):
        nuswide.build_catalog(tmp_path, n_concepts=9)
    with pytest.raises(InputError, match="cannot find NUS-WIDE Concepts81.txt"):
        nuswide.build_catalog(tmp_path / "Groundtruth")
    cat = nuswide.build_catalog(tmp_path, n_concepts=3, per_concept=2, n_train=5)
    with pytest.raises(InputError, match=r"features have 7 rows but .* are expected"):
        write_catalog(cat, tmp_path / "ds", np.zeros((7, 3), np.float32))
    assert not (tmp_path / "ds").exists()


def test_nuswide_tag_counts_are_binarised(tmp_path):
    (tmp_path / "t.txt").write_text("0 12 1\n3 0 0\n\n")
    m = nuswide.read_tag_matrix(tmp_path / "t.txt", 2, keep=np.array([True, True]))
    np.testing.assert_array_equal(m.toarray(), [[0, 1, 1], [1, 0, 0]])
    with pytest.raises(InputError, match="line 2 has 2 values, expected 3"):
        (tmp_path / "u.txt").write_text("0 12 1\n3 0\n")
        nuswide.read_tag_matrix(tmp_path / "u.txt", 2)


# --------------------------------------------------------------------------- .mat / .h5
def _split_arrays(rng, n=(6, 3, 8), d=4, c=5, m=3):
    out = {}
    for part, k in zip(("tr", "te", "db"), n):
        out[f"I_{part}"] = rng.standard_normal((k, d)).astype(np.float32)
        out[f"T_{part}"] = (rng.random((k, c)) < 0.5).astype(np.float64)
        out[f"L_{part}"] = (rng.random((k, m)) < 0.5).astype(np.float64)
    return out


def _write_v73(path, arrays, sparse=()):
    """A MATLAB v7.3 file: HDF5 with the MATLAB header in its user block, matrices transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            if k in sparse:
                csc = sp.csc_matrix(v)  # MATLAB's own (column-major) layout of the N x c matrix
                g = f.create_group(k)
                g.attrs["MATLAB_sparse"] = np.uint64(v.shape[0])
                g.create_dataset("data", data=csc.data)
                g.create_dataset("ir", data=csc.indices.astype(np.uint64))
                g.create_dataset("jc", data=csc.indptr.astype(np.uint64))
            else:
                f.create_dataset(k, data=np.asarray(v).T)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


def test_mat_v5_split_preset(tmp_path):
    arrays = _split_arrays(np.random.default_rng(0))
    scipy.io.savemat(tmp_path / "f.mat", {**arrays, "T_db": sp.csc_matrix(arrays["T_db"])})
    cat, feats, handle = mat.build(tmp_path / "f.mat")
    handle.close()
    assert cat.provenance["preset"] == "I/T/L split" and cat.provenance["file_kind"] == "v5"
    assert [len(cat.splits[s]) for s in ("train", "query", "database")] == [6, 3, 8]
    np.testing.assert_array_equal(cat.splits["query"], [6, 7, 8])
    out = write_catalog(cat, tmp_path / "ds", feats)
    ds = Dataset.open(out)
    np.testing.assert_allclose(ds.feature_rows(), np.concatenate([arrays[f"I_{p}"] for p in ("tr", "te", "db")]))
    np.testing.assert_array_equal(ds.aux_rows(), np.concatenate([arrays[f"T_{p}"] for p in ("tr", "te", "db")]))
    np.testing.assert_array_equal(ds.label_rows(), np.concatenate([arrays[f"L_{p}"] for p in ("tr", "te", "db")]))


def test_mat_v73_transposed_sparse_and_class_vector(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 7)).astype(np.float32)
    Y = (rng.random((30, 300)) < 0.02).astype(np.float64)
    classes = rng.integers(1, 4, size=(30, 1)).astype(np.float64)  # MATLAB column vector of class ids 1..3
    _write_v73(tmp_path / "f.mat", {"XAll": X, "YAll": Y, "LAll": classes}, sparse=("YAll",))
    assert mat.file_kind(tmp_path / "f.mat") == "v7.3"
    cat, feats, handle = mat.build(tmp_path / "f.mat", n_train=10, n_query=5, seed=2)
    try:
        assert cat.provenance["transposed"] and feats.shape == (30, 7)
        out = write_catalog(cat, tmp_path / "ds", feats)
    finally:
        handle.close()
    ds = Dataset.open(out)
    np.testing.assert_array_equal(ds.feature_rows(), X)
    assert ds.manifest["aux"]["storage"] == "sparse"  # 300 columns: stored sparse
    np.testing.assert_array_equal(ds.aux_rows(), Y)
    np.testing.assert_array_equal(ds.label_rows().argmax(1) + 1, classes[:, 0])
    assert (len(ds.split("train")), len(ds.split("query")), len(ds.split("database"))) == (10, 5, 25)
    np.testing.assert_array_equal(ds.split("query"), seeded_splits(30, 10, 5, 2)["query"])


def test_mat_plain_h5_named_keys_and_cli(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 5)).astype(np.float16)
    counts = rng.integers(0, 4, size=(20, 6)).astype(np.float32)
    with h5py.File(tmp_path / "f.h5", "w") as f:  # written from Python: rows are items, no transpose
        f["feat"], f["tags"], f["lab"] = X, counts, (rng.random((20, 2)) < 0.5).astype(np.uint8)
    base = ["data", "import", "mat", str(tmp_path / "f.h5"), "--features-key", "feat", "--aux-key", "tags",
            "--labels-key", "lab", "--n-train", "8", "--n-query", "4"]
    result = runner.invoke(app, base + ["--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "--binarize-aux" in error_line(result)
    result = runner.invoke(app, base + ["--binarize-aux", "--no-train-in-database", "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    ds = Dataset.open(tmp_path / "ds")
    assert ds.features.dtype == np.float16
    np.testing.assert_array_equal(ds.aux_rows(), (counts > 0).astype(np.float32))
    assert ds.info()["overlaps"]["train&database"] == 0 and len(ds.split("database")) == 8
    result = runner.invoke(app, ["data", "import", "mat", str(tmp_path / "f.h5"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    line = error_line(result)
    assert "no known feature keys" in line and "feat 20x5" in line and "--features-key" in line


def test_mat_errors(tmp_path):
    arrays = _split_arrays(np.random.default_rng(0))
    scipy.io.savemat(tmp_path / "f.mat", arrays)
    with pytest.raises(InputError, match=r"key 'T_xx' \(--aux-key\) is not in .*arrays found: .*I_tr 6x4"):
        mat.build(tmp_path / "f.mat", aux_key="T_tr,T_te,T_xx")
    with pytest.raises(InputError, match="names 1 key"):
        mat.build(tmp_path / "f.mat", aux_key="T_tr")
    with pytest.raises(InputError, match="one key .* or three"):
        mat.build(tmp_path / "f.mat", features_key="I_tr,I_te")
    with pytest.raises(InputError, match="has 6 rows but features 'I_te' have 3.*--transpose"):
        mat.build(tmp_path / "f.mat", labels_key="L_tr,L_tr,L_db")
    scipy.io.savemat(tmp_path / "noaux.mat", {k: v for k, v in arrays.items() if not k.startswith("T")})
    with pytest.raises(InputError, match="no aux .* --aux-key"):
        mat.build(tmp_path / "noaux.mat")
    scipy.io.savemat(tmp_path / "raw.mat", {"XAll": np.zeros((4, 3, 2, 2)), "YAll": np.zeros((4, 2))})
    with pytest.raises(InputError, match="raw images"):
        mat.build(tmp_path / "raw.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(InputError, match="cannot read .* as a MATLAB file"):
        mat.build(tmp_path / "junk.mat")
    with pytest.raises(InputError, match="does not exist"):
        mat.build(tmp_path / "missing.mat")
    with pytest.raises(InputError, match="--transpose"):
        mat.build(tmp_path / "f.mat", transpose="sideways")


# --------------------------------------------------------------------------- image folder
def _write_folder(tmp_path, n=12):
    root = tmp_path / "photos"
    names = []
    for i in range(n):
        p = root / f"d{i % 3}" / f"img{i:02d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\xff\xd8 not decoded here")
        names.append(p.relative_to(root).as_posix())
    (root / ".thumb.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    rows = ["file_name,tags,labels"]
    for i, name in enumerate(sorted(names)):
        key = name if i % 2 else name.split("/")[-1]  # relative path or bare (unique) file name
        tags = ["Dog", "beach", "sky", "dog"][: 1 + i % 4] + (["once"] if i == 3 else [])
        rows.append(f'{key},"{";".join(tags[:2])}|{"|".join(tags[2:])}",{"cat" if i % 2 else "dog|outdoor"}')
    (tmp_path / "tags.csv").write_text("\n".join(rows[:-1]) + "\n")  # the last image has no CSV row
    feats = np.arange(n, dtype=np.float32)[:, None].repeat(4, 1)
    np.save(tmp_path / "X.npy", feats)
    return root, sorted(names)


def test_folder_listing_and_tags(tmp_path):
    root, names = _write_folder(tmp_path)
    assert list_images(root) == names  # hidden files and non-images skipped
    assert split_terms(" Dog; beach|Sky ;dog") == ["dog", "beach", "sky"]
    cat = folder.build_catalog(root, csv_path=tmp_path / "tags.csv", min_tag_count=2, n_train=4, n_query=3, seed=0)
    assert cat.ids == names and cat.paths[0] == str(root / names[0])
    assert cat.aux_names == ["beach", "dog", "sky"]  # "once" is used by one image only
    assert cat.aux[names.index(names[-1])].nnz == 0  # no CSV row: no tags
    assert cat.label_names == ["cat", "dog", "outdoor"]
    np.testing.assert_array_equal(cat.labels[0], [0, 1, 1])
    assert len(cat.splits["train"]) == 4 and len(cat.splits["query"]) == 3 and len(cat.splits["database"]) == 9
    out = write_catalog(cat, tmp_path / "ds", np.load(tmp_path / "X.npy"))
    ds = Dataset.open(out)
    assert ds.info()["aux"]["empty_rows"] == 1 and ds.info()["labels"]["empty_rows"] == 1


def test_folder_cli(tmp_path):
    root, names = _write_folder(tmp_path)
    result = runner.invoke(app, ["data", "import", "folder", str(root), "--print-list"])
    assert result.exit_code == 0 and result.stdout.splitlines() == names
    ids = list(reversed(names))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    np.save(tmp_path / "Xr.npy", np.load(tmp_path / "X.npy")[::-1].copy())
    args = ["data", "import", "folder", str(root), "--csv", str(tmp_path / "tags.csv"), "--n-train", "4",
            "--n-query", "3"]
    result = runner.invoke(app, args + ["--features", str(tmp_path / "Xr.npy"), "--ids", str(tmp_path / "ids.txt"),
                                        "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    ds = Dataset.open(tmp_path / "ds")
    np.testing.assert_array_equal(ds.feature_rows()[:, 0], np.arange(len(names)))
    result = runner.invoke(app, args + ["--out", str(tmp_path / "nofeat")])
    assert result.exit_code == 2 and "--features is required" in error_line(result)
    result = runner.invoke(app, ["data", "import", "folder", str(root), "--features", str(tmp_path / "X.npy"),
                                 "--n-train", "4", "--n-query", "3", "--out", str(tmp_path / "noaux")])
    assert result.exit_code == 2 and "--csv" in error_line(result)
    assert not (tmp_path / "nofeat").exists() and not (tmp_path / "noaux").exists()


def test_folder_errors(tmp_path):
    root, names = _write_folder(tmp_path)
    csv = tmp_path / "bad.csv"
    csv.write_text("file_name,tags\nmissing.jpg,dog\n")
    with pytest.raises(InputError, match=r"names 1 image\(s\) not in the folder \(first: missing.jpg\)"):
        folder.build_catalog(root, csv_path=csv, n_train=2, n_query=2)
    csv.write_text(f"path,tags\n{names[0]},a\n{names[0]},b\n")
    with pytest.raises(InputError, match="appears twice"):
        folder.build_catalog(root, csv_path=csv, n_train=2, n_query=2)
    csv.write_text("name,tags\nx.jpg,a\n")
    with pytest.raises(InputError, match="no image column"):
        folder.build_catalog(root, csv_path=csv, n_train=2, n_query=2)
    with pytest.raises(InputError, match="cannot hold"):
        folder.build_catalog(root, n_train=10, n_query=5)
    with pytest.raises(InputError, match="image folder .* does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_images(tmp_path / "empty")
    cat = folder.build_catalog(root, csv_path=tmp_path / "tags.csv", n_train=2, n_query=2)
    with pytest.raises(InputError, match="features have 5 rows"):
        write_catalog(cat, tmp_path / "ds", np.zeros((5, 2), np.float32))
    bad_ids = names[:-1] + [names[0]]
    with pytest.raises(InputError, match="both name item"):
        write_catalog(cat, tmp_path / "ds", np.zeros((len(names), 2), np.float32), feature_ids=bad_ids)
    assert not (tmp_path / "ds").exists()


def test_read_ids_and_catalog_lookup(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([3, 1, 2]))
    assert read_ids(tmp_path / "ids.npy") == ["3", "1", "2"]
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(InputError, match="repeats id 'a' \\(lines 1 and 3\\)"):
        read_ids(tmp_path / "dup.txt")
    cat = Catalog(ids=["7", "x/y.jpg"], splits={})
    assert cat.row_of("0007.png") == 0 and cat.row_of("y.jpg") is None and cat.row_of("x/y.jpg") == 1


def _fake_extraction(tmp_path, names, skipped, name="feats"):
    """An extraction directory as `lagnh extract features` writes it, with ``skipped`` left out."""
    out = tmp_path / name
    out.mkdir()
    kept = [n for n in names if n not in skipped]
    np.save(out / "features.npy", np.array([[names.index(n)] * 4 for n in kept], np.float32))
    (out / "ids.txt").write_text("".join(f"{n}\n" for n in kept))
    (out / "skipped.tsv").write_text("".join(f"{n}\t/x/{n}\tOSError: image file is truncated\n" for n in skipped))
    manifest = {"format": "lagnh-extract", "version": 1, "kind": "features", "features": {"file": "features.npy", "dim": 4, "dtype": "float32"},
                "extractor": {"backbone": "efficientnet_lite0", "weights": "imagenet", "dim": 4, "image_size": 64}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_folder_drops_images_without_features(tmp_path, caplog):
    root, names = _write_folder(tmp_path)
    gone = [names[2], names[7]]
    kept_ids = [n for n in names if n not in gone]
    with caplog.at_level("WARNING"):
        cat = folder.build_catalog(root, csv_path=tmp_path / "tags.csv", n_train=4, n_query=3, seed=0,
                                   feature_ids=kept_ids, skip_reasons={gone[0]: "OSError: truncated"})
    # nothing on stderr yet (an error later would follow it): the CLI says it after the write
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    warnings = cat.warnings
    assert len(warnings) == 1 and gone[0] in warnings[0] and gone[1] in warnings[0] and "truncated" in warnings[0]
    assert cat.ids == kept_ids and len(cat.paths) == len(cat.labels) == cat.aux.shape[0] == 10
    assert len(cat.splits["query"]) + len(cat.splits["database"]) == 10  # drawn over the 10 kept images
    assert cat.provenance["n_dropped"] == 2
    assert cat.provenance["dropped"] == [{"id": gone[0], "reason": "OSError: truncated"},
                                         {"id": gone[1], "reason": "no feature row"}]
    full = folder.build_catalog(root, csv_path=tmp_path / "tags.csv", n_train=4, n_query=3, seed=0)
    np.testing.assert_array_equal(cat.labels, np.delete(full.labels, [2, 7], axis=0))  # tags/labels follow their images
    with pytest.raises(InputError, match="name none of the 12 images"):
        folder.build_catalog(root, n_train=4, n_query=3, feature_ids=["elsewhere/a.jpg"])


def test_folder_cli_with_extraction_output(tmp_path):
    root, names = _write_folder(tmp_path)
    ex = _fake_extraction(tmp_path, names, [names[5]])
    result = runner.invoke(app, ["data", "import", "folder", str(root), "--csv", str(tmp_path / "tags.csv"),
                                 "--features", str(ex / "features.npy"), "--n-train", "4", "--n-query", "3",
                                 "--out", str(tmp_path / "ds")])  # ids come from the extraction itself
    assert result.exit_code == 0, result.output
    warn = [ln for ln in result.stderr.splitlines() if "dropped" in ln]
    assert len(warn) == 1 and names[5] in warn[0] and "truncated" in warn[0]
    ds = Dataset.open(tmp_path / "ds")
    assert ds.n == 11 and names[5] not in ds.ids
    np.testing.assert_array_equal(ds.feature_rows()[:, 0], [i for i in range(12) if i != 5])
    prov = ds.manifest["provenance"]
    assert prov["dropped"][0]["id"] == names[5]
    assert prov["extraction"]["features"]["extractor"]["backbone"] == "efficientnet_lite0"
    assert prov["extraction"]["aux"]["kind"] == "tags" and prov["extraction"]["aux"]["names"] == ds.aux_names
    # a plain .npy without ids must still cover every image
    np.save(tmp_path / "short.npy", np.zeros((11, 4), np.float32))
    result = runner.invoke(app, ["data", "import", "folder", str(root), "--csv", str(tmp_path / "tags.csv"),
                                 "--features", str(tmp_path / "short.npy"), "--n-train", "4", "--n-query", "3",
                                 "--out", str(tmp_path / "ds2")])
    assert result.exit_code == 2 and "features have 11 rows" in error_line(result)
