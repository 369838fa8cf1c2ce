"""HammingIndex against brute force, with ties; persistence and refusals."""

import json
import logging

import numpy as np
import pytest

from lagnh_pyg.errors import InputError
from lagnh_pyg.index import HammingIndex


def brute_force(q, db, k):
    """Packed codes -> per query the k (distance, position) pairs sorted by distance then position."""
    d = np.unpackbits(q[:, None, :] ^ db[None, :, :], axis=2).sum(2)
    out = []
    for row in d:
        order = sorted(range(len(db)), key=lambda j: (row[j], j))[:k]
        out.append(([int(row[j]) for j in order], order))
    return out, d


def tied_codes(seed, n=300, bits=32, patterns=12):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (patterns, bits // 8), dtype=np.uint8)
    codes = base[rng.integers(0, patterns, n)]
    noise = (rng.random((n, bits // 8, 8)) < 0.03)
    return codes ^ np.packbits(noise, axis=2)[..., 0]


@pytest.mark.parametrize("k", [1, 5, 37, 300])
@pytest.mark.parametrize("bits", [16, 64])
def test_flat_is_exact_with_ties_by_position(k, bits):
    db = tied_codes(bits, bits=bits)
    q = tied_codes(bits + 1, n=9, bits=bits)
    ix = HammingIndex(bits)
    ix.add(db, [f"item{i}" for i in range(len(db))])
    r = ix.search(q, k)
    ref, _ = brute_force(q, db, k)
    for row, (dist, pos) in enumerate(ref):
        assert r.positions[row].tolist() == pos
        assert r.distances[row].tolist() == dist
        assert r.ids[row] == [f"item{p}" for p in pos]


def test_incremental_add_equals_one_add(tmp_path):
    db = tied_codes(3)
    ids = [str(i) for i in range(len(db))]
    one = HammingIndex(32)
    one.add(db, ids)
    inc = HammingIndex(32)
    for s in range(0, len(db), 70):
        inc.add(db[s : s + 70], ids[s : s + 70])
    q = db[:5]
    a, b = one.search(q, 20), inc.search(q, 20)
    assert np.array_equal(a.positions, b.positions) and a.ids == b.ids
    assert inc.position("42") == 42 and np.array_equal(inc.code(42), db[42])


@pytest.mark.parametrize("kind,params", [("hash", {"hash_bits": 16, "nflip": 2}),
                                         ("multihash", {"nhash": 4, "hash_bits": 8, "nflip": 1})])
def test_hash_indexes_return_true_distances_in_order(kind, params):
    db = tied_codes(5)
    ix = HammingIndex(32, kind, **params)
    ix.add(db, [str(i) for i in range(len(db))])
    q = db[:6]
    r = ix.search(q, 10)
    _, d = brute_force(q, db, 10)
    for row in range(len(q)):
        found = r.positions[row][r.positions[row] >= 0]
        assert len(found) >= 1 and found[0] == np.flatnonzero(d[row] == 0)[0]  # an exact copy is in its own bucket
        assert r.distances[row][: len(found)].tolist() == d[row][found].tolist()
        keys = list(zip(d[row][found], found))
        assert keys == sorted(keys)  # ordered by (distance, position)
        assert (r.distances[row][len(found):] == -1).all()


@pytest.mark.parametrize("kind", ["flat", "hash", "multihash"])
def test_save_load_roundtrip(tmp_path, kind):
    db = tied_codes(7)
    ix = HammingIndex(32, kind, model_fingerprint="abc", method="itq")
    ix.add(db, [f"x{i}" for i in range(len(db))])
    ix.save(tmp_path / "index")
    back = HammingIndex.load(tmp_path / "index", expect_fingerprint="abc")
    assert (back.bits, back.kind, back.params, back.method, back.ids) == (ix.bits, ix.kind, ix.params, ix.method, ix.ids)
    a, b = ix.search(db[:4], 8), back.search(db[:4], 8)
    assert np.array_equal(a.positions, b.positions) and np.array_equal(a.distances, b.distances)
    back.add(db[:2], ["new0", "new1"], model_fingerprint="abc")
    assert len(back) == len(db) + 2


def test_refuses_codes_of_another_model(tmp_path):
    ix = HammingIndex(16, model_fingerprint="model-a")
    ix.add(tied_codes(0, bits=16), [str(i) for i in range(300)], model_fingerprint="model-a")
    with pytest.raises(InputError, match="model-b"):
        ix.add(tied_codes(1, n=3, bits=16), ["a", "b", "c"], model_fingerprint="model-b")
    ix.save(tmp_path / "ix")
    with pytest.raises(InputError, match="not of this run's model model-b"):
        HammingIndex.load(tmp_path / "ix", expect_fingerprint="model-b")


def test_bad_input(tmp_path, caplog):
    ix = HammingIndex(16)
    with pytest.raises(InputError, match="empty"):
        ix.search(np.zeros((1, 2), np.uint8), 3)
    ix.add(np.zeros((3, 2), np.uint8), ["a", "b", "c"])
    with pytest.raises(InputError, match="32 bits but the index holds 16-bit"):
        ix.search(np.zeros((1, 4), np.uint8), 3)
    with pytest.raises(InputError, match="already in the index"):
        ix.add(np.zeros((1, 2), np.uint8), ["a"])
    with pytest.raises(InputError, match="2 ids given for 1 codes"):
        ix.add(np.zeros((1, 2), np.uint8), ["x", "y"])
    with pytest.raises(InputError, match="packed uint8"):
        ix.add(np.ones((1, 16)), ["z"])
    with pytest.raises(InputError, match="not in the index"):
        ix.position("nope")
    with pytest.raises(InputError, match="unknown index kind"):
        HammingIndex(16, "ivf")
    with pytest.raises(InputError, match="do not fit"):
        HammingIndex(16, "multihash", nhash=4, hash_bits=8)
    with pytest.raises(InputError, match="not an index directory"):
        HammingIndex.load(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lagnh_pyg.index"):
        r = ix.search(np.zeros((1, 2), np.uint8), 10)
    assert "clamped" in caplog.text and r.ids == [["a", "b", "c"]]


@pytest.mark.parametrize("kind, params, match", [
    ("hash", {"nflip": -1}, r"--nflip must lie in \[0, 24\]"),
    ("hash", {"nflip": 100}, r"--nflip must lie in \[0, 24\]"),
    ("multihash", {"nflip": -2}, r"--nflip must lie in \[0, 8\]"),
    ("hash", {"hash_bits": 0}, "do not fit"),
    ("hash", {"hash_bits": 65}, "do not fit"),
    ("multihash", {"nhash": 0}, "--nhash must be at least 1"),
    ("multihash", {"nhash": 4, "hash_bits": 9}, "do not fit 32-bit codes"),
    ("hash", {"nhash": 2}, "--nhash applies to multihash"),
    ("flat", {"nflip": 1}, "apply to hash and multihash"),
])
def test_index_parameters_are_checked_against_the_code_length(kind, params, match):
    """A negative or too large nflip made FAISS's probe loop spin forever; 0 meant 'default'."""
    with pytest.raises(InputError, match=match):
        HammingIndex(32, kind, **params)


def test_every_valid_nflip_search_terminates(tmp_path):
    codes = np.random.default_rng(0).integers(0, 256, (480, 2), dtype=np.uint8)
    for nflip in (0, 8, 16):  # nflip = hash_bits probes every bucket: bounded, finds everything
        idx = HammingIndex(16, "hash", hash_bits=16, nflip=nflip)
        idx.add(codes, [str(i) for i in range(480)])
        r = idx.search(codes[:2], k=3)
        assert (r.positions >= 0).all() if nflip == 16 else r.positions.shape == (2, 3)
    idx.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    meta["params"]["nflip"] = -1  # a hand-edited index must not hang the search either
    (tmp_path / "ix" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="--nflip must lie"):
        HammingIndex.load(tmp_path / "ix")


def test_truncated_faiss_file_says_rerun_index(tmp_path):
    idx = HammingIndex(16)
    idx.add(np.zeros((5, 2), np.uint8), list("abcde"))
    idx.save(tmp_path / "ix")
    f = tmp_path / "ix" / "codes.faiss"
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(InputError, match="rerun `lagnh index`"):
        HammingIndex.load(tmp_path / "ix")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="refusing to replace"):  # save replaces only an index of ours
        idx.save(tmp_path / "mine")


@pytest.mark.parametrize("bits,n", [(16, 2000), (32, 3000), (64, 1500)])
def test_flat_one_scan_and_range_fallback_agree_with_brute_force(bits, n):
    """Uniform codes: the k-th distance's ties mostly fit in FAISS's top-(k + TIE_MARGIN) (one
    scan), sometimes not (the range-search fallback); both must give the exact order."""
    rng = np.random.default_rng(bits)
    db = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    q = rng.integers(0, 256, (25, bits // 8), dtype=np.uint8)
    ix = HammingIndex(bits)
    ix.add(db, [str(i) for i in range(n)])
    for k in (1, 10, 40):
        r = ix.search(q, k)
        ref, _ = brute_force(q, db, k)
        assert [p.tolist() for p in r.positions] == [pos for _, pos in ref]



def test_search_without_ids_gives_the_same_positions():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (500, 2), dtype=np.uint8)
    codes[10:60] = codes[0]
    ix = HammingIndex(16)
    ix.add(codes, [str(i) for i in range(len(codes))])
    full, bare = ix.search(codes[[0, 5]], 300), ix.search(codes[[0, 5]], 300, with_ids=False)
    assert np.array_equal(full.positions, bare.positions) and np.array_equal(full.distances, bare.distances)
    assert bare.ids == [] and full.ids[0][:2] == ["0", "10"]


@pytest.mark.parametrize("bits", [16, 64, 72])
def test_counting_search_of_large_k_matches_the_ranking(bits):
    """From COUNTING_K on, a flat index searches by counting: the same top-k, ties by database
    order, as the metrics' brute-force ranking."""
    from lagnh_pyg.index import COUNTING_K
    from lagnh_pyg.metrics import hamming_rank

    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 256, (3000, bits // 8), dtype=np.uint8)
    codes[100:400] = codes[0]  # a large tie at distance 0
    ix = HammingIndex(bits)
    ix.add(codes, [str(i) for i in range(len(codes))])
    q = codes[[0, 7, 2999]]
    for k in (COUNTING_K - 1, COUNTING_K, 1000, 3000):
        r = ix.search(q, k)
        d, i = hamming_rank(q, codes, k)
        assert np.array_equal(r.positions, i) and np.array_equal(r.distances, d)
        assert r.ids[1][:3] == [str(p) for p in i[1, :3]]
