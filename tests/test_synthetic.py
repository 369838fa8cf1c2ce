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
