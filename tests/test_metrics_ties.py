"""The tie-aware protocol and two-stage ranking in the metrics, against brute force: the
average of AP@K over every order of the tied items (small cases), and over many random orders."""

import itertools
import math

import numpy as np
import pytest

from lagnh_pyg.errors import InputError
from lagnh_pyg.metrics import (
    evaluate_retrieval,
    expected_average_precision,
    mean_average_precision,
)


def ap_at_k(rel_in_order, k):
    hits, s = 0, 0.0
    for j, r in enumerate(rel_in_order[:k], start=1):
        if r:
            hits += 1
            s += hits / j
    return s / hits if hits else 0.0


def brute_expected(keys, rel, k):
    """Mean AP@K over every permutation of the items, ranked by (key, permutation position):
    each order of the tied items equally often. Also the mean relevant count in the top K."""
    n = len(keys)
    aps, hits = [], []
    for perm in itertools.permutations(range(n)):
        pos = {item: i for i, item in enumerate(perm)}
        order = sorted(range(n), key=lambda i: (keys[i], pos[i]))
        r = [rel[i] for i in order]
        aps.append(ap_at_k(r, k))
        hits.append(sum(r[:k]))
    return float(np.mean(aps)), float(np.mean(hits))


def groups_of(keys, rel):
    vals = sorted(set(keys))
    return ([sum(1 for x in keys if x == v) for v in vals],
            [sum(r for x, r in zip(keys, rel) if x == v) for v in vals])


@pytest.mark.parametrize("seed", range(12))
def test_closed_form_equals_the_average_over_all_orders(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 7))
    keys = rng.integers(0, 3, n).tolist()  # few distinct values: large tie groups
    rel = (rng.random(n) < 0.45).astype(int).tolist()
    for k in range(1, n + 1):
        want_ap, want_hits = brute_expected(keys, rel, k)
        sizes, rels = groups_of(keys, rel)
        ap, hits = expected_average_precision([sizes], [rels], k)
        assert ap[0] == pytest.approx(want_ap, abs=1e-12), (keys, rel, k)
        assert hits[0] == pytest.approx(want_hits, abs=1e-12)


def test_closed_form_against_many_random_orders():
    """Larger groups than enumeration allows: 20,000 random orders, within 4 standard errors."""
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 4, 40)
    rel = rng.random(40) < 0.3
    k = 13
    sizes, rels = groups_of(keys.tolist(), rel.astype(int).tolist())
    ap, _ = expected_average_precision([sizes], [rels], k)
    samples = []
    for _ in range(20_000):
        order = np.lexsort((rng.permutation(40), keys))
        samples.append(ap_at_k(rel[order].tolist(), k))
    samples = np.asarray(samples)
    assert abs(ap[0] - samples.mean()) < 4 * samples.std() / math.sqrt(len(samples))


def test_no_ties_is_the_authors_protocol_and_ties_are_not_database_order():
    rng = np.random.default_rng(0)
    Q = np.ones((1, 16), np.int8)
    D = np.ones((12, 16), np.int8)
    for j, flips in enumerate(rng.permutation(12)):  # every item at its own distance
        D[j, :flips] = -1
    QL, DL = np.array([[1, 0, 1]]), rng.integers(0, 2, (12, 3))
    for k in (1, 4, 12):
        assert mean_average_precision(Q, D, QL, DL, k, "ties") == pytest.approx(
            mean_average_precision(Q, D, QL, DL, k, "lagnh"), abs=1e-12)
    # all tied: database order decides the authors' AP; the expectation does not move with it
    q = np.ones((1, 8), np.int8)
    D = np.ones((4, 8), np.int8)
    DL = np.array([[0], [1], [0], [1]])
    a = mean_average_precision(q, D, [[1]], DL, None, "ties")
    b = mean_average_precision(q, D[::-1], [[1]], DL[::-1], None, "ties")
    assert a == b == pytest.approx(brute_expected([0] * 4, [0, 1, 0, 1], 4)[0])
    assert mean_average_precision(q, D, [[1]], DL, None) != mean_average_precision(q, D[::-1], [[1]], DL[::-1], None)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("topk", [1, 3, 6, None])
def test_evaluate_ties_matches_enumeration(seed, topk):
    rng = np.random.default_rng(seed)
    bits = 8
    Q = rng.choice([-1, 1], (4, bits))
    base = rng.choice([-1, 1], (3, bits))
    D = base[rng.integers(0, 3, 6)] * np.where(rng.random((6, bits)) < 0.1, -1, 1)
    QL, DL = rng.integers(0, 2, (4, 2)), rng.integers(0, 2, (6, 2))
    res = evaluate_retrieval(Q, D, QL, DL, topk, "ties", pk_cutoffs=[1, 2, 5, 6])
    dist = (bits - Q @ D.T) // 2
    k = 6 if topk is None else topk
    for i in range(4):
        rel = ((QL[i] & DL).sum(1) > 0).astype(int).tolist()
        want, _ = brute_expected(dist[i].tolist(), rel, k)
        assert res.ap[i] == pytest.approx(want, abs=1e-12)
    counted = [((QL[i] & DL).sum(1) > 0).any() for i in range(4)]
    assert res.counted.tolist() == counted
    for j, kk in enumerate([1, 2, 5, 6]):
        want = np.mean([brute_expected(dist[i].tolist(), ((QL[i] & DL).sum(1) > 0).astype(int).tolist(), kk)[1]
                        for i in range(4)]) / kk
        assert res.pk[j] == pytest.approx(want, abs=1e-12)


def brute_two_stage(dist, score, rel, R, k):
    """Two-stage ranking by definition: the top R by (distance, database index), sorted by
    score (higher first, then distance), then the rest by distance. Returns AP@K with ties by
    database order and its average over all orders of the tied items (equal score and distance
    among the candidates; equal distance beyond R)."""
    n = len(dist)
    cand = sorted(range(n), key=lambda i: (dist[i], i))[:R]
    rest = [i for i in range(n) if i not in cand]

    def rank(pos):
        c = sorted(cand, key=lambda i: (-score[i], dist[i], pos[i]))
        return c + sorted(rest, key=lambda i: (dist[i], pos[i]))

    stable = ap_at_k([rel[i] for i in rank({i: i for i in range(n)})], k)
    aps = []
    for perm in itertools.permutations(range(n)):
        aps.append(ap_at_k([rel[i] for i in rank({item: j for j, item in enumerate(perm)})], k))
    return stable, float(np.mean(aps))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("R,topk", [(3, 2), (3, 5), (6, 4), (1, 6)])
def test_two_stage_ranking_matches_definition(seed, R, topk):
    rng = np.random.default_rng(100 + seed)
    bits = 8
    Q = rng.choice([-1, 1], (3, bits))
    D = rng.choice([-1, 1], (2, bits))[rng.integers(0, 2, 6)] * np.where(rng.random((6, bits)) < 0.15, -1, 1)
    QL, DL = rng.integers(0, 2, (3, 2)), rng.integers(0, 2, (6, 2))
    S = rng.integers(0, 3, (3, 6)).astype(float)  # integer scores: ties among the candidates too

    def scorer(rows, cand):
        return S[rows[:, None], cand]

    dist = (bits - Q @ D.T) // 2
    plain = evaluate_retrieval(Q, D, QL, DL, topk, "lagnh", rerank=R, scorer=scorer)
    ties = evaluate_retrieval(Q, D, QL, DL, topk, "ties", rerank=R, scorer=scorer, curves=False)
    for i in range(3):
        rel = ((QL[i] & DL).sum(1) > 0).astype(int).tolist()
        stable, expected = brute_two_stage(dist[i].tolist(), S[i].tolist(), rel, R, topk)
        assert plain.ap[i] == pytest.approx(stable, abs=1e-12)
        assert ties.ap[i] == pytest.approx(expected, abs=1e-12)
    assert plain.rerank == R and "re-ranked" in plain.summary()["tie_rule"]


def test_rerank_bad_input():
    Q = np.ones((1, 8))
    with pytest.raises(InputError, match="non-negative integer"):
        evaluate_retrieval(Q, Q, [[1]], [[1]], rerank=-1, scorer=lambda r, c: c * 0.0)
    with pytest.raises(InputError, match="scorer"):
        evaluate_retrieval(Q, Q, [[1]], [[1]], rerank=5)
    with pytest.raises(InputError, match="shape"):
        evaluate_retrieval(Q, Q, [[1]], [[1]], rerank=1, scorer=lambda r, c: np.zeros(3))
