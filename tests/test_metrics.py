"""Metrics against brute-force references (tests/helpers.py, and P@K / radius ones here), on
random data with many ties."""

import logging

import numpy as np
import pytest
from helpers import ref_map, ref_ranking, ref_relevant

from lagnh_pyg.errors import InputError
from lagnh_pyg.metrics import (
    PROTOCOLS,
    evaluate_retrieval,
    hamming_distances,
    hamming_rank,
    mean_average_precision,
    precision_at_k,
    precision_recall_curve,
    precision_within_radius,
)


# -- references: plain Python loops over the definitions ------------------------------------
def ref_pk(Q, D, QL, DL, K):
    vals = []
    for qc, ql in zip(Q, QL):
        order, _ = ref_ranking(qc, D)
        rel = ref_relevant(ql, DL)
        vals.append(sum(rel[i] for i in order[:K]) / K)
    return float(np.mean(vals))


def ref_radius(Q, D, QL, DL, r):
    per_query, pooled_rel, pooled_all = [], 0, 0
    recalls = []
    for qc, ql in zip(Q, QL):
        _, dist = ref_ranking(qc, D)
        rel = ref_relevant(ql, DL)
        inside = [i for i in range(len(D)) if dist[i] <= r]
        nrel = sum(rel[i] for i in inside)
        per_query.append(nrel / len(inside) if inside else 0.0)
        pooled_rel += nrel
        pooled_all += len(inside)
        if any(rel):
            recalls.append(nrel / sum(rel))
    return float(np.mean(per_query)), (pooled_rel / pooled_all if pooled_all else 0.0), float(np.mean(recalls))


def random_problem(seed, nq=12, ndb=60, bits=16, classes=5, label_p=0.25):
    """Short codes over few distinct patterns: many exact ties; some queries without relevance."""
    rng = np.random.default_rng(seed)
    patterns = rng.choice([-1, 1], size=(6, bits)).astype(np.int8)
    flip = lambda x: np.where(rng.random(x.shape) < 0.08, -x, x)
    Q = flip(patterns[rng.integers(0, 6, nq)])
    D = flip(patterns[rng.integers(0, 6, ndb)])
    QL = (rng.random((nq, classes)) < label_p).astype(np.uint8)
    DL = (rng.random((ndb, classes)) < label_p).astype(np.uint8)
    DL[:, -1] = 0  # class nobody in the database has: queries with only it have no relevant item
    QL[0] = 0
    QL[0, -1] = 1
    return Q, D, QL, DL


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("topk", [1, 7, 25, 60, None])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_map_matches_reference(protocol, topk, packed, seed):
    Q, D, QL, DL = random_problem(seed)
    ref = ref_map(Q, D, QL, DL, topk, protocol)
    q, d = (np.packbits(Q > 0, axis=1), np.packbits(D > 0, axis=1)) if packed else (Q, D)
    got = mean_average_precision(q, d, QL, DL, topk=topk, protocol=protocol)
    assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_chunking_and_curves_do_not_change_map(protocol):
    Q, D, QL, DL = random_problem(3, nq=30, ndb=80, bits=24)
    ref = ref_map(Q, D, QL, DL, 10, protocol)
    tiny = evaluate_retrieval(Q, D, QL, DL, topk=10, protocol=protocol, memory_bytes=1)  # one query a chunk
    assert tiny.map == pytest.approx(ref, abs=1e-12)
    fast = evaluate_retrieval(Q, D, QL, DL, topk=10, protocol=protocol, curves=False)
    assert fast.map == pytest.approx(ref, abs=1e-12)
    assert np.array_equal(tiny.counted, fast.counted)


def test_protocols_differ_and_order():
    Q, D, QL, DL = random_problem(0)
    m = {p: mean_average_precision(Q, D, QL, DL, topk=5, protocol=p) for p in PROTOCOLS}
    # same per-query AP, means over nested query sets: all >= lagnh subset >= hit subset
    assert m["calctopmap"] <= m["lagnh"] <= m["hit"]
    assert m["calctopmap"] < m["hit"]


def test_ties_broken_by_database_order():
    q = np.ones((1, 8), np.int8)
    D = np.ones((4, 8), np.int8)  # all at distance 0
    DL = np.array([[0], [1], [0], [1]])
    QL = np.array([[1]])
    # ranking must be 0,1,2,3 -> rel 0,1,0,1 -> AP = (1/2 + 2/4) / 2
    assert mean_average_precision(q, D, QL, DL, topk=None) == pytest.approx(0.5)
    # reversing the database order changes the answer: ties really are by database order
    assert mean_average_precision(q, D[::-1], QL, DL[::-1], topk=None) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_full_ranking_counts_the_last_item():
    q = np.ones((1, 8), np.int8)
    D = np.ones((5, 8), np.int8)
    D[-1, :4] = -1  # the only relevant item is last
    DL = np.array([[0]] * 4 + [[1]])
    assert mean_average_precision(q, D, [[1]], DL, topk=None) == pytest.approx(1 / 5)
    assert mean_average_precision(q, D, [[1]], DL, topk=4) == 0.0


@pytest.mark.parametrize("packed", [False, True])
def test_precision_at_k_matches_reference(packed):
    Q, D, QL, DL = random_problem(5, bits=32)
    q, d = (np.packbits(Q > 0, axis=1), np.packbits(D > 0, axis=1)) if packed else (Q, D)
    ks, pk = precision_at_k(q, d, QL, DL, cutoffs=[1, 5, 20, 60, 100])
    assert ks.tolist() == [1, 5, 20, 60]  # 100 clamped to the database (60) and deduplicated
    for K, v in zip(ks, pk):
        assert v == pytest.approx(ref_pk(Q, D, QL, DL, int(K)), abs=1e-12)


@pytest.mark.parametrize("packed", [False, True])
def test_pr_curve_and_radius_match_reference(packed):
    Q, D, QL, DL = random_problem(7, bits=16)
    q, d = (np.packbits(Q > 0, axis=1), np.packbits(D > 0, axis=1)) if packed else (Q, D)
    curve = precision_recall_curve(q, d, QL, DL)
    assert curve["radius"].tolist() == list(range(17))
    for r in (0, 1, 2, 5, 16):
        per_query, pooled, recall = ref_radius(Q, D, QL, DL, r)
        assert curve["precision"][r] == pytest.approx(per_query, abs=1e-12)
        assert curve["pooled_precision"][r] == pytest.approx(pooled, abs=1e-12)
        assert curve["recall"][r] == pytest.approx(recall, abs=1e-12)
        assert precision_within_radius(q, d, QL, DL, radius=r) == pytest.approx((per_query, pooled), abs=1e-12)
    assert curve["recall"][-1] == pytest.approx(1.0)


def test_empty_ball_counts_zero():
    q = np.ones((2, 8), np.int8)
    D = -np.ones((3, 8), np.int8)  # every item at distance 8
    L = np.ones((3, 1))
    per_query, pooled = precision_within_radius(q, D, np.ones((2, 1)), L, radius=2)
    assert (per_query, pooled) == (0.0, 0.0)


@pytest.mark.parametrize("bits", [8, 12, 64, 72, 128, 264])
def test_hamming_distances_and_rank(bits):
    rng = np.random.default_rng(bits)
    Q = rng.choice([-1, 1], size=(7, bits))
    D = rng.choice([-1, 1], size=(40, bits))
    D[10:20] = D[0]  # ties
    ref = (bits - Q @ D.T) // 2
    assert np.array_equal(hamming_distances(Q, D), ref)
    if bits % 8 == 0:
        assert np.array_equal(hamming_distances(np.packbits(Q > 0, 1), np.packbits(D > 0, 1)), ref)
    dist, idx = hamming_rank(Q, D, k=15)
    for i in range(len(Q)):
        order = sorted(range(len(D)), key=lambda j: (ref[i, j], j))[:15]
        assert idx[i].tolist() == order
        assert dist[i].tolist() == [ref[i, j] for j in order]


def test_bad_input():
    Q, D, QL, DL = random_problem(0)
    with pytest.raises(InputError, match="query codes have 16 bits but database codes have 8"):
        mean_average_precision(Q, D[:, :8], QL, DL)
    with pytest.raises(InputError, match="database is empty"):
        mean_average_precision(Q, D[:0], QL, DL[:0])
    with pytest.raises(InputError, match="unknown protocol"):
        mean_average_precision(Q, D, QL, DL, protocol="nope")
    with pytest.raises(InputError, match="labels"):
        evaluate_retrieval(Q, D, None, None)
    with pytest.raises(InputError, match="database labels have 5 rows"):
        mean_average_precision(Q, D, QL, DL[:5])
    with pytest.raises(InputError, match="classes"):
        mean_average_precision(Q, D, QL, DL[:, :3])
    with pytest.raises(InputError, match="topk"):
        mean_average_precision(Q, D, QL, DL, topk=0)
    with pytest.raises(InputError, match="radius"):
        precision_within_radius(Q, D, QL, DL, radius=-1)


def test_topk_beyond_database_is_clamped_with_warning(caplog):
    Q, D, QL, DL = random_problem(2)
    with caplog.at_level(logging.WARNING, logger="lagnh_pyg.metrics"):
        got = mean_average_precision(Q, D, QL, DL, topk=10_000)
    assert "clamped" in caplog.text
    assert got == mean_average_precision(Q, D, QL, DL, topk=None)
