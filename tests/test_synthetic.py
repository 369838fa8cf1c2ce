import numpy as np
import pytest

from lagnh_pyg.data.store import Dataset
from lagnh_pyg.data.synthetic import SyntheticSpec, generate
from lagnh_pyg.errors import InputError


def test_synthetic_is_deterministic_and_well_formed(tmp_path):
    spec = SyntheticSpec(n=700, dim=32, classes=6, junk_tags=5, n_train=200, n_query=50, seed=3)
    a = Dataset.open(generate(spec, tmp_path / "a"))
    b = Dataset.open(generate(spec, tmp_path / "b"))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.aux, b.aux)
    np.testing.assert_array_equal(a.labels, b.labels)
    for s in ("train", "query", "database"):
        np.testing.assert_array_equal(a.split(s), b.split(s))
    lab = np.asarray(a.labels)
    assert lab.shape == (700, 6) and lab.sum(1).min() >= 1 and lab.sum(1).max() <= 3
    assert a.aux_dim == 6 + 5 and (np.asarray(a.features) >= 0).all()
    sizes = {s: len(a.split(s)) for s in ("train", "query", "database")}
    assert sizes == {"train": 200, "query": 50, "database": 450}
    assert a.info()["overlaps"] == {"train&query": 0, "train&database": 0, "query&database": 0}


def test_aux_is_informative_but_noisy(tmp_path):
    spec = SyntheticSpec(n=2000, dim=16, classes=5, junk_tags=3, aux_drop=0.3, aux_add=0.0, seed=0)
    ds = Dataset.open(generate(spec, tmp_path / "d"))
    lab, aux = np.asarray(ds.labels, bool), np.asarray(ds.aux)[:, :5] > 0
    recall = (aux & lab).sum() / lab.sum()
    assert 0.6 < recall < 0.8  # about 1 - aux_drop of the true labels survive
    assert not (aux & ~lab).any()  # aux_add = 0: no spurious label tags


def test_bad_spec(tmp_path):
    with pytest.raises(InputError, match="probability"):
        generate(SyntheticSpec(n=100, aux_drop=1.5), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_given_split_sizes_are_honoured_or_refused(tmp_path):
    """--n 800 --n-train 300 --n-query 100 used to give 240/80 silently."""
    out = generate(SyntheticSpec(n=800, dim=8, n_train=300, n_query=100, seed=0), tmp_path / "a")
    ds = Dataset.open(out)
    assert (len(ds.split("train")), len(ds.split("query")), len(ds.split("database"))) == (300, 100, 400)
    with pytest.raises(InputError, match="cannot hold 500 training and 400 query"):
        generate(SyntheticSpec(n=800, dim=8, n_train=500, n_query=400), tmp_path / "b")
    with pytest.raises(InputError, match="at least 1"):
        generate(SyntheticSpec(n=800, dim=8, n_query=0), tmp_path / "c")
    ds = Dataset.open(generate(SyntheticSpec(n=800, dim=8), tmp_path / "d"))  # defaults still fit small N
    assert (len(ds.split("train")), len(ds.split("query"))) == (240, 80)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
