"""The dataset directory: round trips, storage kinds, memory-mapped reads and bad input."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from lagnh_pyg.data.store import Dataset, DatasetWriter, write_dataset
from lagnh_pyg.errors import InputError


def _arrays(n=20, d=6, c=5, m=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    A = (rng.random((n, c)) < 0.4).astype(np.float32)
    L = (rng.random((n, m)) < 0.5).astype(np.uint8)
    splits = {"train": np.arange(0, 8), "query": np.arange(8, 12), "database": np.arange(4, 20)}
    return X, A, L, splits


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.tmp")]


def test_round_trip(tmp_path):
    X, A, L, splits = _arrays()
    ids = [f"img{i}" for i in range(20)]
    paths = [f"/images/{i}.jpg" for i in range(20)]
    out = write_dataset(tmp_path / "ds", X, A, labels=L, splits=splits, ids=ids, paths=paths,
                        aux_names=list("abcde"), label_names=["x", "y", "z"], provenance={"source": "test"})
    ds = Dataset.open(out)
    assert ds.n == 20 and ds.feature_dim == 6 and ds.aux_dim == 5 and ds.label_dim == 3
    np.testing.assert_array_equal(ds.feature_rows(), X)
    np.testing.assert_array_equal(ds.aux_rows(), A)
    np.testing.assert_array_equal(ds.label_rows(), L)
    for s, idx in splits.items():
        np.testing.assert_array_equal(ds.split(s), idx)
    assert ds.ids == ids and ds.paths == paths
    assert ds.aux_names == list("abcde") and ds.label_names == ["x", "y", "z"]
    assert ds.verify() == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "lagnh-dataset" and manifest["provenance"]["source"] == "test"
    assert set(manifest["checksums"]) >= {"features.npy", "aux.npy", "labels.npy", "splits/train.npy", "ids.txt"}
    # rows in the order asked, not sorted
    np.testing.assert_array_equal(ds.feature_rows(np.array([5, 2, 9])), X[[5, 2, 9]])


def test_float16_stays_float16_and_reads_are_memory_mapped(tmp_path):
    X, A, L, splits = _arrays()
    out = write_dataset(tmp_path / "ds", X.astype(np.float16), A, splits=splits)
    ds = Dataset.open(out)
    assert ds.manifest["features"]["dtype"] == "float16"
    assert isinstance(ds.features, np.memmap) and ds.features.dtype == np.float16
    assert isinstance(ds.aux, np.memmap)
    assert not ds.features.flags.writeable
    assert ds.feature_rows(np.arange(3)).dtype == np.float32  # copies of selected rows are float32
    np.testing.assert_array_equal(ds.features, X.astype(np.float16))
    assert ds.labels is None and not ds.has_labels
    with pytest.raises(InputError, match="needs ground-truth labels"):
        ds.require_labels()


def test_float64_and_int_features_become_float32(tmp_path):
    X, A, _, splits = _arrays()
    ds = Dataset.open(write_dataset(tmp_path / "ds", X.astype(np.float64), A, splits=splits))
    assert ds.features.dtype == np.float32


def test_sparse_aux(tmp_path):
    X, A, L, splits = _arrays()
    out = write_dataset(tmp_path / "ds", X, sp.csr_matrix(A), labels=L, splits=splits)
    ds = Dataset.open(out)
    assert ds.manifest["aux"]["storage"] == "sparse" and (out / "aux.npz").is_file()
    assert sp.issparse(ds.aux)
    np.testing.assert_array_equal(ds.aux_rows([3, 1]), A[[3, 1]])
    # dense input stored sparse on request
    ds2 = Dataset.open(write_dataset(tmp_path / "ds2", X, A, splits=splits, aux_sparse=True))
    np.testing.assert_array_equal(ds2.aux_rows(), A)


def test_streaming_writer_matches_write_dataset(tmp_path):
    X, A, L, splits = _arrays(n=50)
    splits = {"train": np.arange(10), "query": np.arange(10, 20), "database": np.arange(20, 50)}
    with DatasetWriter(tmp_path / "ds", n=50, feature_dim=6, aux_dim=5, label_dim=3) as w:
        for s in range(0, 50, 16):
            w.write_rows(s, X[s : s + 16], A[s : s + 16], L[s : s + 16])
        w.set_splits(**splits)
    ds = Dataset.open(tmp_path / "ds")
    np.testing.assert_array_equal(ds.feature_rows(), X)
    np.testing.assert_array_equal(ds.label_rows(), L)


def test_rows_never_written_is_an_error(tmp_path):
    X, A, _, splits = _arrays()
    with pytest.raises(InputError, match="row 10 of 20 was never written"):
        with DatasetWriter(tmp_path / "ds", n=20, feature_dim=6, aux_dim=5) as w:
            w.write_rows(0, X[:10], A[:10])
            w.set_splits(**splits)
    assert not (tmp_path / "ds").exists() and not _leftovers(tmp_path, "ds")


def _bad_cases():
    X, A, L, splits = _arrays()
    nan = X.copy()
    nan[3, 2] = np.nan
    inf = X.copy()
    inf[7, 0] = np.inf
    return {
        "rows": (dict(features=X, aux=A[:-1]), "row counts must match"),
        "label rows": (dict(features=X, aux=A, labels=L[:5]), "row counts must match"),
        "nan": (dict(features=nan, aux=A), r"NaN or inf \(first at row 3, column 2\)"),
        "inf": (dict(features=inf, aux=A), r"NaN or inf \(first at row 7"),
        "split range": (dict(features=X, aux=A, splits={**splits, "query": np.array([3, 20])}), "out of range"),
        "split negative": (dict(features=X, aux=A, splits={**splits, "train": np.array([-1, 2])}), "out of range"),
        "split repeats": (dict(features=X, aux=A, splits={**splits, "train": np.array([1, 1])}), "repeats"),
        "split mask": (dict(features=X, aux=A, splits={**splits, "train": np.ones(20, bool)}), "boolean mask"),
        "split empty": (dict(features=X, aux=A, splits={**splits, "query": np.array([], dtype=np.int64)}), "empty"),
        "split missing": (dict(features=X, aux=A, splits={"train": splits["train"], "query": splits["query"]}),
                          "missing split"),
        "aux 1-D": (dict(features=X, aux=A[:, 0]), "aux must be a 2-D array"),
        "aux 3-D": (dict(features=X, aux=A[:, :, None]), "aux must be a 2-D array"),
        "aux range": (dict(features=X, aux=A * 3), r"aux values must lie in \[0, 1\]"),
        "aux nan": (dict(features=X, aux=np.where(A > 0, np.nan, 0).astype(np.float32)), "aux contain NaN"),
        "labels not 0/1": (dict(features=X, aux=A, labels=L * 2), "multi-hot"),
        "features 1-D": (dict(features=X[:, 0], aux=A), "features must be a 2-D array"),
        "ids": (dict(features=X, aux=A, ids=["a"] * 20), "ids must be unique"),
        "paths count": (dict(features=X, aux=A, paths=["p"] * 3), "3 image paths given for 20 items"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_raises_and_leaves_nothing(tmp_path, case):
    kwargs, match = _bad_cases()[case]
    X, A, L, splits = _arrays()
    kwargs.setdefault("splits", splits)
    features, aux = kwargs.pop("features"), kwargs.pop("aux")
    with pytest.raises(InputError, match=match):
        write_dataset(tmp_path / "ds", features, aux, **kwargs)
    assert not (tmp_path / "ds").exists()
    assert not _leftovers(tmp_path, "ds")


def test_existing_output_is_refused_and_kept(tmp_path):
    X, A, _, splits = _arrays()
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        write_dataset(tmp_path / "ds", X, A, splits=splits)
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"


def test_missing_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Dataset.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest.json"):
        Dataset.open(tmp_path / "empty")
    X, A, _, splits = _arrays()
    out = write_dataset(tmp_path / "ds", X, A, splits=splits)
    (out / "aux.npy").unlink()
    with pytest.raises(InputError, match="aux.npy is missing"):
        Dataset.open(out)


def test_checksum_mismatch_is_reported(tmp_path):
    X, A, _, splits = _arrays()
    out = write_dataset(tmp_path / "ds", X, A, splits=splits)
    np.save(out / "splits" / "train.npy", splits["train"][::-1])  # same shape, other bytes
    assert Dataset.open(out).verify() == ["splits/train.npy"]
    np.save(out / "splits" / "train.npy", np.arange(3))  # another row count: found without checksums
    with pytest.raises(InputError, match=r"train.npy has shape \(3,\).*manifest says"):
        Dataset.open(out)


def test_empty_rows_allowed_and_reported_by_info(tmp_path):
    X, A, L, splits = _arrays()
    A[[1, 4, 6]] = 0
    L[[2, 4]] = 0
    A[:, 3] = 0  # an aux column nobody uses
    ds = Dataset.open(write_dataset(tmp_path / "ds", X, A, labels=L, splits=splits))
    info = ds.info()
    assert info["n_items"] == 20
    assert info["aux"]["empty_rows"] == int((A.sum(1) == 0).sum()) >= 3
    assert info["aux"]["unused_columns"] == 1
    assert info["labels"]["empty_rows"] == int((L.sum(1) == 0).sum()) >= 2
    assert info["splits"] == {"train": 8, "query": 4, "database": 16}
    assert info["overlaps"] == {"train&query": 0, "train&database": 4, "query&database": 4}
    # the same counts through sparse storage
    sinfo = Dataset.open(write_dataset(tmp_path / "sp", X, sp.csr_matrix(A), splits=splits)).info()
    assert sinfo["aux"]["empty_rows"] == info["aux"]["empty_rows"]
    assert sinfo["aux"]["unused_columns"] == 1 and sinfo["labels"] is None


def test_finiteness_is_checked_in_the_stored_dtype(tmp_path):
    """1e39 is finite in float64 but inf in float32: refused, with no numpy RuntimeWarning."""
    import warnings

    X, A, _, splits = _arrays()
    X64 = X.astype(np.float64)
    X64[3, 2] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning would be a second stderr line
        with pytest.raises(InputError, match=r"NaN or inf \(first at row 3, column 2\) when stored as float32"):
            write_dataset(tmp_path / "ds", X64, A, splits=splits)
    assert not (tmp_path / "ds").exists() and not _leftovers(tmp_path, "ds")


def test_check_values_finds_what_an_older_writer_let_through(tmp_path):
    X, A, _, splits = _arrays()
    out = write_dataset(tmp_path / "ds", X, A, splits=splits)
    assert Dataset.open(out).check_values() == []
    X[4, 1], A[2, 0] = np.inf, 3.0
    np.save(out / "features.npy", X)
    np.save(out / "aux.npy", A)
    assert Dataset.open(out).check_values() == ["1 non-finite features values", "1 out-of-range (not in [0, 1]) aux values"]


@pytest.mark.parametrize("damage, match", [
    ("ids", "ids.txt has 17 lines for 20 items"),
    ("paths", "paths.txt has 21 lines for 20 items"),
    ("features", "features.npy is truncated"),
    ("labels", r"labels.npy has shape \(20, 2\)"),
    ("aux", r"aux.npz has shape \(19, 5\)"),
])
def test_open_checks_every_files_rows_against_the_manifest(tmp_path, damage, match):
    X, A, L, splits = _arrays()
    out = write_dataset(tmp_path / "ds", X, sp.csr_matrix(A), labels=L, splits=splits,
                        paths=[f"p{i}.png" for i in range(20)])
    if damage == "ids":
        (out / "ids.txt").write_text("".join(f"{i}\n" for i in range(17)))
    elif damage == "paths":
        (out / "paths.txt").write_text("".join(f"p{i}.png\n" for i in range(21)))
    elif damage == "features":
        (out / "features.npy").write_bytes((out / "features.npy").read_bytes()[:-8])
    elif damage == "labels":
        np.save(out / "labels.npy", L[:, :2])
    else:
        sp.save_npz(out / "aux.npz", sp.csr_matrix(A[:19]))
    with pytest.raises(InputError, match=match):
        Dataset.open(out)


def test_query_split_equal_to_train_is_warned(tmp_path, caplog):
    X, A, _, _ = _arrays()
    same = np.arange(0, 8)
    with caplog.at_level("WARNING"):
        write_dataset(tmp_path / "ds", X, A, splits={"train": same, "query": same, "database": np.arange(8, 20)})
    assert any("query split is identical to the train split" in r.getMessage() for r in caplog.records)


def test_open_checks_the_views_too(tmp_path):
    X, A, _, splits = _arrays()
    rows = np.arange(0, 8)
    with DatasetWriter(tmp_path / "ds", n=20, feature_dim=6, aux_dim=5) as w:
        w.write_rows(0, X, A)
        w.set_splits(**splits)
        w.set_views(rows, np.ones((8, 2, 6), np.float32))
    assert Dataset.open(tmp_path / "ds").has_views
    np.save(tmp_path / "ds" / "views_rows.npy", rows[:5])
    with pytest.raises(InputError, match=r"views_rows.npy has shape \(5,\)"):
        Dataset.open(tmp_path / "ds")
