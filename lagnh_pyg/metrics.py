"""Retrieval metrics over binary codes: MAP@K under named protocols, P@K, PR, radius precision.

Every function takes codes as packed uint8 rows (``numpy.packbits(codes > 0, axis=1)``, the
format of ``lagnh encode``) or as sign arrays (±1, real-valued or boolean; entries > 0 are the
1-bits), and multi-hot labels (items x classes). A query and a database item are *relevant*
when they share at least one label.

Ranking. The database is ranked for each query by Hamming distance; **ties are broken by
database order** (a stable sort), so the ranking — and every number below — is a
deterministic function of the inputs. This is the rule of the LAGNH authors' evaluator.

Average precision at K (Eq. of the authors' evaluator)::

    AP@K(q) = (1 / R_K) * sum_{j <= K} rel_j * P@j,    P@j = (1/j) * sum_{i <= j} rel_i

with ``R_K`` the relevant items within the top ``K`` (``AP@K = 0`` when ``R_K = 0``).
The protocols differ only in which queries the mean runs over:

* ``lagnh``      — queries with at least one relevant item in the whole database
                   (the LAGNH authors' evaluator; the paper's numbers);
* ``calctopmap`` — all queries (DeepHash-pytorch ``CalcTopMap``);
* ``hit``        — queries with at least one relevant item in the top ``K``
                   (thulab/DeepHash, TBH);
* ``ties``       — not database order: the **expected** AP@K over uniformly random orders of
                   the items tied at equal distance, mean over the queries of ``lagnh``
                   (:func:`expected_average_precision`, a closed form). Short codes put
                   hundreds of items at one distance; this protocol does not let their
                   database order decide the score.

``topk=None`` ranks the whole database (``K = N``, every item counted — no off-by-one).
A ``topk`` larger than the database is clamped to it with a warning.

Scale. Queries are processed in chunks sized to a memory budget; Hamming distances are
computed by XOR over 64-bit words and a hardware popcount (``numpy.bitwise_count``), and
each chunk is ranked with a stable radix sort of the small-integer distances (linear in N).
MAP@1000 of 5,000 queries x 150,000 items at 64 bits takes 7-9 s on two shared cores in
~260 MB of working memory (``benchmarks/bench_metrics.py``).

Example::

    >>> import numpy as np
    >>> q = np.array([[1, 1, -1, -1, 1, 1, 1, 1]])
    >>> db = np.array([[1, 1, -1, -1, 1, 1, 1, 1], [-1, 1, -1, -1, 1, 1, 1, 1]])
    >>> ql = np.array([[1, 0]]); dl = np.array([[0, 1], [1, 1]])
    >>> mean_average_precision(q, db, ql, dl, topk=2)   # relevant item ranked 2nd
    0.5
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)

# the protocols that rank ties by database order (they differ in the queries they average over)
PROTOCOLS = ("lagnh", "calctopmap", "hit")
TIES = "ties"
ALL_PROTOCOLS = (*PROTOCOLS, TIES)
PROTOCOL_DESCRIPTIONS = {
    "lagnh": "mean AP@K over queries with >=1 relevant item in the database (LAGNH authors' evaluator)",
    "calctopmap": "mean AP@K over all queries (DeepHash-pytorch CalcTopMap)",
    "hit": "mean AP@K over queries with >=1 relevant item in the top K (thulab/DeepHash, TBH)",
    "ties": "expected AP@K over uniformly random orders of tied items (closed form), mean over queries with "
            ">=1 relevant item in the database",
}
DEFAULT_PK_CUTOFFS = tuple(range(50, 1001, 50))
# Working memory of one chunk of queries (distance buffers, the ranking, relevance).
DEFAULT_MEMORY_BYTES = 256 * 2**20


# -- input handling ------------------------------------------------------------------------
def _packed(codes: Any, name: str) -> tuple[np.ndarray, int]:
    """Return ``(packed uint8 rows, bits)`` for packed or sign codes of any length."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (items x bits or items x bytes), got shape {codes.shape}")
    if codes.dtype == np.uint8:
        return np.ascontiguousarray(codes), codes.shape[1] * 8
    if codes.dtype.kind not in "biuf":
        raise InputError(f"{name} must be packed uint8 or numeric sign codes, got dtype {codes.dtype}")
    if codes.dtype.kind == "f" and not np.isfinite(codes).all():
        raise InputError(f"{name} contain NaN or inf")
    # np.packbits pads a trailing partial byte with zero bits, equal in every row: harmless.
    return np.packbits(codes > 0, axis=1), codes.shape[1]


def _words(packed: np.ndarray) -> np.ndarray:
    """Packed uint8 rows -> (words, n) uint64, zero-padded to a multiple of 8 bytes, word-major."""
    n, nbytes = packed.shape
    w = -(-nbytes // 8) if nbytes else 1
    buf = np.zeros((n, w * 8), dtype=np.uint8)
    buf[:, :nbytes] = packed
    return np.ascontiguousarray(buf.view(np.uint64).T)


def _label_words(labels: Any, name: str, n: int) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"{name} must be a 2-D multi-hot array (items x classes), got shape {labels.shape}")
    if labels.shape[0] != n:
        raise InputError(f"{name} have {labels.shape[0]} rows but the codes have {n}: one label row per item")
    return _words(np.packbits(labels > 0, axis=1)), labels.shape[1]


@dataclass
class _Prepared:
    q: np.ndarray  # (words, nq) uint64
    db: np.ndarray  # (words, ndb) uint64
    ql: np.ndarray  # (label words, nq) uint64
    dl: np.ndarray  # (label words, ndb) uint64
    bits: int

    @property
    def nq(self) -> int:
        return self.q.shape[1]

    @property
    def ndb(self) -> int:
        return self.db.shape[1]


def _prepare(query_codes, db_codes, query_labels=None, db_labels=None) -> _Prepared:
    q, qbits = _packed(query_codes, "query codes")
    db, dbits = _packed(db_codes, "database codes")
    if qbits != dbits:
        raise InputError(
            f"query codes have {qbits} bits but database codes have {dbits}: both must come from the same model"
        )
    if db.shape[0] == 0:
        raise InputError("the database is empty: there is nothing to retrieve")
    if q.shape[0] == 0:
        raise InputError("there are no query codes to evaluate")
    ql = dl = np.zeros((1, 0), np.uint64)
    if query_labels is not None or db_labels is not None:
        if query_labels is None or db_labels is None:
            raise InputError("pass labels for both the queries and the database, or for neither")
        ql, mq = _label_words(query_labels, "query labels", q.shape[0])
        dl, md = _label_words(db_labels, "database labels", db.shape[0])
        if mq != md:
            raise InputError(f"query labels have {mq} classes but database labels have {md}")
    return _Prepared(_words(q), _words(db), ql, dl, qbits)


def check_protocol(protocol: str) -> str:
    if protocol not in ALL_PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose one of {', '.join(ALL_PROTOCOLS)}")
    return protocol


def tie_rule(protocol: str, rerank: int = 0) -> str:
    """The sentence that says how a protocol orders tied items (printed next to its numbers)."""
    first = (f"Hamming top {rerank} re-ranked by the candidate score, the rest by Hamming distance" if rerank
             else "Hamming distance")
    if protocol == TIES:
        return f"{first}; expected value over random orders of tied items"
    return f"{first}, ties by database order (stable sort)"


def clamp_topk(topk: int | None, n: int, what: str = "topk") -> int:
    """``None`` -> ``n``; a value above ``n`` is clamped to ``n`` with a warning."""
    if topk is None:
        return n
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise InputError(f"{what} must be a positive integer or None (the whole ranking), got {topk!r}")
    if topk > n:
        logger.warning("%s=%d is larger than the database (%d items); clamped to %d", what, topk, n, n)
        return n
    return int(topk)


# -- the chunked engine --------------------------------------------------------------------
def _chunk_rows(ndb: int, bytes_per_pair: int, memory_bytes: int) -> int:
    return max(1, int(memory_bytes // max(1, ndb * bytes_per_pair)))


class _Scanner:
    """Hamming distances of query chunks to the whole database, with reusable buffers."""

    def __init__(self, p: _Prepared, rows: int):
        self.p = p
        self.dtype = np.uint8 if p.bits <= 255 else np.uint16
        self.xbuf = np.empty((rows, p.ndb), dtype=np.uint64)
        self.dbuf = np.empty((rows, p.ndb), dtype=self.dtype)
        self.tbuf = np.empty((rows, p.ndb), dtype=np.uint8) if p.q.shape[0] > 1 else None

    def distances(self, s: int, e: int) -> np.ndarray:
        """(e - s, ndb) Hamming distances of queries ``s:e`` (a view of an internal buffer)."""
        c = e - s
        x, d = self.xbuf[:c], self.dbuf[:c]
        for w in range(self.p.q.shape[0]):
            np.bitwise_xor(self.p.q[w, s:e, None], self.p.db[w][None, :], out=x)
            if w == 0:
                np.bitwise_count(x, out=d, casting="unsafe")
            else:
                t = self.tbuf[:c]
                np.bitwise_count(x, out=t)
                d += t
        return d

    def relevance(self, s: int, e: int, db_idx: np.ndarray | None = None) -> np.ndarray:
        """Boolean relevance of queries ``s:e`` to database items (all, or ``db_idx`` per query)."""
        return _relevance(self.p.ql, self.p.dl, s, e, db_idx)


def _relevance(ql: np.ndarray, dl: np.ndarray, s: int, e: int, db_idx: np.ndarray | None = None) -> np.ndarray:
    """Boolean relevance (a shared label) of queries ``s:e`` to database items, from label words."""
    rel = None
    for w in range(ql.shape[0]):
        other = dl[w][db_idx] if db_idx is not None else dl[w][None, :]
        r = (ql[w, s:e, None] & other) != 0
        rel = r if rel is None else (rel | r)
    return rel


def _average_precision(rel: np.ndarray, k: int, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AP@k of each row of ``rel`` (relevance in rank order, at least ``k`` columns):
    ``(1/R_k) sum_{j<=k} rel_j * P@j`` (0 where ``R_k = 0``). Returns ``(ap, R_k, cumulative hits)``."""
    cum = np.cumsum(rel, axis=1, dtype=np.int64)
    relk, cumk = rel[:, :k], cum[:, :k]
    hits = cumk[:, -1]
    num = (np.where(relk, cumk, 0) / ranks[:k]).sum(1)
    return np.divide(num, hits, out=np.zeros(len(rel)), where=hits > 0), hits, cum


def _has_relevant(ql: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """(n_query,) bool: the query has a relevant item in the database (one of its labels occurs there)."""
    union = np.bitwise_or.reduce(dl, axis=1)
    return ((ql & union[:, None]) != 0).any(0)


def _iter_chunks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, rows):
        yield s, min(n, s + rows)


def hamming_distances(query_codes: Any, db_codes: Any) -> np.ndarray:
    """All pairwise Hamming distances, ``(n_query, n_db)`` int32 (small inputs; for tests/tools)."""
    p = _prepare(query_codes, db_codes)
    sc = _Scanner(p, p.nq)
    return sc.distances(0, p.nq).astype(np.int32)


def hamming_rank(
    query_codes: Any, db_codes: Any, k: int | None = None, *, memory_bytes: int = DEFAULT_MEMORY_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by Hamming distance, ties by database order.

    Returns ``(distances, indices)``, both ``(n_query, k)`` (int32, int64); ``k=None`` ranks
    the whole database, a ``k`` above it is clamped with a warning.
    """
    p = _prepare(query_codes, db_codes)
    k = clamp_topk(k, p.ndb, "k")
    rows = _chunk_rows(p.ndb, 8 + 2 + 8 + 1, memory_bytes)
    sc = _Scanner(p, min(rows, p.nq))
    dist = np.empty((p.nq, k), np.int32)
    idx = np.empty((p.nq, k), np.int64)
    for s, e in _iter_chunks(p.nq, rows):
        d = sc.distances(s, e)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        idx[s:e] = order
        dist[s:e] = np.take_along_axis(d, order, axis=1)
    return dist, idx


@dataclass
class RetrievalResult:
    """Everything one pass over the ranking gives; see :func:`evaluate_retrieval`.

    Attributes:
        protocol: the protocol of ``map``. topk: the K of AP@K (``n_db`` when the whole ranking).
        rerank: R of the two-stage ranking (0: Hamming ranking only).
        map: the mean AP@K under ``protocol``.
        ap: (n_query,) AP@K of every query (0 where no relevant item is in the top K).
        counted: (n_query,) bool, the queries the protocol's mean runs over.
        n_relevant_db: (n_query,) relevant items of each query in the whole database
            (``-1`` where not computed: ``curves=False``).
        pk_cutoffs / pk: the precision@K curve, mean over all queries.
        radius / pr_precision / pr_recall / pr_pooled_precision: the precision-recall curve by
            Hamming radius r = 0..bits (precision per query with an empty ball counting 0, mean
            over all queries; recall mean over queries with >=1 relevant item; pooled precision
            = relevant pairs within r / all pairs within r).
    """

    protocol: str
    topk: int
    map: float
    ap: np.ndarray
    counted: np.ndarray
    n_query: int
    n_db: int
    bits: int
    n_relevant_db: np.ndarray
    pk_cutoffs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pk: np.ndarray = field(default_factory=lambda: np.zeros(0))
    radius: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pr_precision: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pr_recall: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pr_pooled_precision: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rerank: int = 0

    def summary(self) -> dict:
        """JSON-able summary (curves included, per-query arrays left out)."""
        return {
            "protocol": self.protocol,
            "protocol_description": PROTOCOL_DESCRIPTIONS[self.protocol],
            "tie_rule": tie_rule(self.protocol, self.rerank),
            "rerank": self.rerank,
            "topk": self.topk,
            "map": self.map,
            "n_query": self.n_query,
            "n_query_counted": int(self.counted.sum()),
            "n_db": self.n_db,
            "bits": self.bits,
            "precision_at_k": {"k": self.pk_cutoffs.tolist(), "precision": self.pk.tolist(),
                               "averaged_over": "all queries"},
            "pr_curve": {
                "radius": self.radius.tolist(),
                "precision": self.pr_precision.tolist(),
                "recall": self.pr_recall.tolist(),
                "pooled_precision": self.pr_pooled_precision.tolist(),
            },
        }


def _cutoffs(pk_cutoffs: Sequence[int] | None, n_db: int) -> np.ndarray:
    """The P@K cutoffs, sorted, clamped to the database (empty when none are asked)."""
    if pk_cutoffs is None or not len(pk_cutoffs):
        return np.zeros(0, np.int64)
    cut = np.asarray(sorted({min(int(c), n_db) for c in pk_cutoffs}), np.int64)
    if (cut < 1).any():
        raise InputError(f"precision@K cutoffs must be positive, got {list(pk_cutoffs)}")
    return cut


def _counted(protocol: str, ql: np.ndarray, dl: np.ndarray, hits_k: np.ndarray,
             n_rel_db: np.ndarray | None = None) -> np.ndarray:
    """(n_query,) bool: the queries the protocol's mean runs over (``n_rel_db``: relevant items
    of each query in the whole database, when already counted)."""
    if protocol in ("lagnh", TIES):
        # q has a relevant item iff one of its labels occurs anywhere in the database
        return n_rel_db > 0 if n_rel_db is not None else _has_relevant(ql, dl)
    if protocol == "calctopmap":
        return np.ones(len(hits_k), bool)
    return hits_k > 0


def _set_pk(res: RetrievalResult, cut: np.ndarray, pk_hits: np.ndarray) -> None:
    if cut.size:
        res.pk_cutoffs = cut
        res.pk = (pk_hits / cut[None, :]).mean(0)


def _protocol_mean(ap: np.ndarray, counted: np.ndarray, protocol: str) -> float:
    if not counted.any():
        logger.warning("no query is counted under protocol %s; MAP reported as 0", protocol)
        return 0.0
    return float(ap[counted].mean())


# -- the tie-aware protocol: expected AP over random orders of tied items ------------------
def _harmonic(n: int) -> np.ndarray:
    """``H[i] = 1 + 1/2 + ... + 1/i`` for ``i = 0..n`` (``H[0] = 0``)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1, dtype=np.float64))])


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    from scipy.special import gammaln

    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def expected_average_precision(sizes: Any, relevant: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected AP@K, and expected relevant items in the top K, over uniformly random orders
    of the items within each tie group (McSherry & Najork, ECIR 2008, truncated at K).

    The ranking is a sequence of groups (e.g. one per Hamming distance); group ``g`` holds
    ``n_g`` items, ``r_g`` of them relevant, at ranks ``s_g + 1 .. s_g + n_g``, after ``c_g``
    relevant items. With AP@K = (1/R_K) sum_{j<=K} rel_j P@j, a group wholly inside the top K
    adds, in expectation (rel_i and the relevant items before it are hypergeometric),

        (r_g / n_g) sum_{i=1..n_g} (c_g + 1 + (i - 1)(r_g - 1)/(n_g - 1)) / (s_g + i).

    The group that straddles rank K contributes its first ``m = K - s_b`` places: given that
    they hold ``h`` relevant items (hypergeometric in ``n_b, r_b, m``), the same sum with
    ``(h, m)`` for ``(r_g, n_g)``; and ``R_K = c_b + h``. So

        E[AP@K] = sum_h P(h) (F + B(h)) / (c_b + h),

    with F the full groups' sum (independent of h). Exact, linear in the number of groups.

    Args:
        sizes: (n_query, n_groups) items per group, groups in rank order (empty groups allowed).
        relevant: (n_query, n_groups) relevant items per group.
        k: the K of AP@K (``>= 1``).

    Returns:
        ``(ap, hits)``: (n_query,) expected AP@K (0 where the top K holds no relevant item in
        any order) and (n_query,) expected relevant items in the top K.
    """
    n = np.atleast_2d(np.asarray(sizes, np.int64))
    r = np.atleast_2d(np.asarray(relevant, np.int64))
    start = np.cumsum(n, axis=1) - n
    before = np.cumsum(r, axis=1) - r
    end = start + n
    H = _harmonic(int(end.max(initial=0)))
    full = (end <= k) & (n > 0)
    s0 = np.where(full, H[np.minimum(end, len(H) - 1)] - H[start], 0.0)
    pair = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
    terms = r / np.maximum(n, 1) * ((before + 1) * s0 + pair * (n - (start + 1) * s0))
    F = np.where(full, terms, 0.0).sum(1)
    C = np.where(full, r, 0).sum(1)
    ap = np.divide(F, C, out=np.zeros(len(F)), where=C > 0)
    hits = C.astype(np.float64)
    for q, g in zip(*np.nonzero((start < k) & (end > k))):  # at most one straddling group a query
        s, nb, rb, c = int(start[q, g]), int(n[q, g]), int(r[q, g]), int(C[q])
        m = k - s
        hits[q] = c + m * rb / nb
        h = np.arange(max(0, m - (nb - rb)), min(m, rb) + 1, dtype=np.float64)
        pmf = np.exp(_log_comb(rb, h) + _log_comb(nb - rb, m - h) - _log_comb(nb, m))
        sb0 = H[s + m] - H[s]
        pairs = (h - 1) / (m - 1) if m > 1 else np.zeros_like(h)
        B = h / m * ((c + 1) * sb0 + pairs * (m - (s + 1) * sb0))
        ap[q] = float((pmf * np.divide(F[q] + B, c + h, out=np.zeros_like(h), where=c + h > 0)).sum())
    return ap, hits


def expected_hits(sizes: np.ndarray, relevant: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """(n_query, len(cutoffs)) expected relevant items in the top K of each cutoff, over random
    orders within the groups (see :func:`expected_average_precision`)."""
    start = np.cumsum(sizes, axis=1) - sizes
    out = np.empty((sizes.shape[0], len(cutoffs)))
    for j, kk in enumerate(cutoffs):
        part = np.clip(kk - start, 0, sizes)  # places of the group inside the top kk
        out[:, j] = (part * relevant / np.maximum(sizes, 1)).sum(1)
    return out


def _tie_groups(hist: np.ndarray, hist_rel: np.ndarray, rerank: "_Reranked | None") -> tuple[np.ndarray, np.ndarray]:
    """Tie groups in rank order: the re-ranked candidates' runs of equal score and distance, then each
    Hamming distance's remaining items (without re-ranking: the distance histogram)."""
    if rerank is None:
        return hist, hist_rel
    c, R = rerank.scores.shape
    new = np.ones((c, R), bool)
    # the final order is (score, Hamming distance, database order): only the last is a tie
    new[:, 1:] = (rerank.scores[:, 1:] != rerank.scores[:, :-1]) | (rerank.distances[:, 1:] != rerank.distances[:, :-1])
    keys = (np.cumsum(new, axis=1) - 1) + (np.arange(c, dtype=np.int64) * R)[:, None]
    n_cand = np.bincount(keys.ravel(), minlength=c * R).reshape(c, R)
    r_cand = np.bincount(keys.ravel(), weights=rerank.relevant.ravel(), minlength=c * R).reshape(c, R)
    nb = hist.shape[1]
    dkeys = rerank.distances.astype(np.int64) + (np.arange(c, dtype=np.int64) * nb)[:, None]
    rest = hist - np.bincount(dkeys.ravel(), minlength=c * nb).reshape(c, nb)
    rest_rel = hist_rel - np.bincount(dkeys[rerank.relevant], minlength=c * nb).reshape(c, nb)
    return (np.concatenate([n_cand, rest], axis=1),
            np.concatenate([np.rint(r_cand).astype(np.int64), rest_rel], axis=1))


# -- two-stage ranking: Hamming candidates, then a finer score -------------------------------
CandidateScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class _Reranked:
    scores: np.ndarray  # (c, R) candidate scores in the final order (descending)
    distances: np.ndarray  # (c, R) their Hamming distances
    relevant: np.ndarray  # (c, R) their relevance


def check_rerank(rerank: Any, scorer: CandidateScorer | None) -> int:
    """``rerank`` (R, the candidates re-ranked; 0 = off) checked: a non-negative integer, and
    a scorer given when it is positive."""
    if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
        raise InputError(f"rerank (the candidates re-ranked) must be a non-negative integer, got {rerank!r}")
    if rerank and scorer is None:
        raise InputError("re-ranking needs a candidate scorer (lagnh_pyg.rerank)")
    return int(rerank)


def rerank_candidates(order: np.ndarray, rerank: int, scorer: CandidateScorer, rows: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank the first ``rerank`` columns of ``order`` ((c, depth) database indices in
    Hamming order) by ``scorer(rows, candidates)`` (higher first; ties keep the Hamming order).
    Returns the new order and the candidates' scores in it."""
    cand = order[:, :rerank]
    scores = np.asarray(scorer(rows, cand), np.float64)
    if scores.shape != cand.shape:
        raise InputError(f"the candidate scorer returned shape {scores.shape}, expected {cand.shape}")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    o = np.argsort(-scores, axis=1, kind="stable")
    out = order.copy()
    out[:, :rerank] = np.take_along_axis(cand, o, 1)
    return out, np.take_along_axis(scores, o, 1)


@dataclass
class _Sums:
    """What the chunks of :func:`evaluate_retrieval` accumulate, per query."""

    ap: np.ndarray
    hits_k: np.ndarray
    pk_hits: np.ndarray
    n_rel_db: np.ndarray
    hist_all: np.ndarray | None
    hist_rel: np.ndarray | None

    @classmethod
    def empty(cls, nq: int, ncut: int, nb: int, hists: bool) -> "_Sums":
        return cls(np.zeros(nq), np.zeros(nq), np.zeros((nq, ncut)), np.full(nq, -1, np.int64),
                   np.zeros((nq, nb), np.int64) if hists else None, np.zeros((nq, nb), np.int64) if hists else None)

    def ranked(self, s: int, e: int, rel: np.ndarray, k: int, cut: np.ndarray, ranks: np.ndarray) -> None:
        """AP@K and P@K of one chunk's rankings (relevance in rank order)."""
        self.ap[s:e], self.hits_k[s:e], cum = _average_precision(rel, k, ranks)
        if cut.size:
            self.pk_hits[s:e] = cum[:, cut - 1]

    def histograms(self, s: int, e: int, d: np.ndarray, rel_all: np.ndarray) -> None:
        c, nb = e - s, self.hist_all.shape[1]
        self.n_rel_db[s:e] = rel_all.sum(1)
        keys = d.astype(np.int64) + (np.arange(c, dtype=np.int64) * nb)[:, None]
        self.hist_all[s:e] = np.bincount(keys.ravel(), minlength=c * nb).reshape(c, nb)
        self.hist_rel[s:e] = np.bincount(keys[rel_all], minlength=c * nb).reshape(c, nb)

    def expected(self, s: int, e: int, k: int, cut: np.ndarray, rr: "_Reranked | None") -> None:
        """The tie-aware protocol: AP@K and P@K as expectations over orders of tied items."""
        sizes, rels = _tie_groups(self.hist_all[s:e], self.hist_rel[s:e], rr)
        self.ap[s:e], self.hits_k[s:e] = expected_average_precision(sizes, rels, k)
        if cut.size:
            self.pk_hits[s:e] = expected_hits(sizes, rels, cut)


def evaluate_retrieval(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = 1000,
    protocol: str = "lagnh",
    *,
    pk_cutoffs: Sequence[int] | None = DEFAULT_PK_CUTOFFS,
    curves: bool = True,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    rerank: int = 0,
    scorer: CandidateScorer | None = None,
) -> RetrievalResult:
    """MAP@K under ``protocol`` and, with ``curves``, the P@K and PR curves, in one pass.

    Args:
        query_codes: (n_query, bits) sign codes or (n_query, bits/8) packed uint8.
        db_codes: the database's codes, same format and length.
        query_labels / db_labels: multi-hot labels (items x classes); relevant = share one.
        topk: K of MAP@K (default 1000); ``None`` = the whole ranking.
        protocol: ``lagnh``, ``calctopmap``, ``hit`` or ``ties`` (module docstring).
        pk_cutoffs: the K of the precision@K curve (clamped to the database size).
        curves: also compute the P@K curve, the PR curve and per-query relevant counts.
        memory_bytes: working-memory budget; decides the query chunk size, never a result.
        rerank: two-stage ranking: the top ``rerank`` items by Hamming distance (ties by
            database order) re-ordered by ``scorer`` (0 = off). The PR curve stays by radius.
        scorer: ``scorer(query_rows (c,), candidates (c, R)) -> (c, R)`` scores, higher first
            (:class:`lagnh_pyg.rerank.Reranker`).
    """
    check_protocol(protocol)
    p = _prepare(query_codes, db_codes, query_labels, db_labels)
    if query_labels is None:
        raise InputError("evaluation needs ground-truth labels for the queries and the database")
    k = clamp_topk(topk, p.ndb)
    R = min(check_rerank(rerank, scorer), p.ndb)
    cut = _cutoffs(pk_cutoffs if curves else None, p.ndb)
    ties = protocol == TIES
    depth = max(k, int(cut.max()) if cut.size else 0, R)
    nb = p.bits + 1
    # bytes per (query, db item): xor u64, dist, argsort i64; with curves hist keys, their relevant
    # subset and relevance; with a deep ranking its relevance, counts and AP terms
    per_pair = 8 + 2 + 8 + 1 + (8 + 8 + 1 + 1 if curves or ties else 0) + (33 if depth > p.ndb // 4 else 0)
    rows = min(_chunk_rows(p.ndb, per_pair, memory_bytes), p.nq)
    sc = _Scanner(p, rows)
    acc = _Sums.empty(p.nq, cut.size, nb, curves or ties)
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    for s, e in _iter_chunks(p.nq, rows):
        d = sc.distances(s, e)
        order = np.argsort(d, axis=1, kind="stable")[:, :depth]
        rr = None
        if R:
            order, scores = rerank_candidates(order, R, scorer, np.arange(s, e))
        rel = sc.relevance(s, e, order)  # (c, depth) relevance in rank order
        acc.ranked(s, e, rel, k, cut, ranks)
        if curves or ties:
            acc.histograms(s, e, d, sc.relevance(s, e))
        if ties:
            if R:
                rr = _Reranked(scores, np.take_along_axis(d, order[:, :R], 1), rel[:, :R])
            acc.expected(s, e, k, cut, rr)
    return _result(p, acc, protocol, k, cut, curves, R)


def _result(p: _Prepared, acc: _Sums, protocol: str, k: int, cut: np.ndarray, curves: bool, R: int
            ) -> RetrievalResult:
    counted = _counted(protocol, p.ql, p.dl, acc.hits_k, acc.n_rel_db if acc.hist_all is not None else None)
    res = RetrievalResult(protocol, k, _protocol_mean(acc.ap, counted, protocol), acc.ap, counted, p.nq, p.ndb,
                          p.bits, acc.n_rel_db if curves else np.full(p.nq, -1, np.int64), rerank=R)
    _set_pk(res, cut, acc.pk_hits)
    if curves:
        nb = p.bits + 1
        within = np.cumsum(acc.hist_all, axis=1)
        within_rel = np.cumsum(acc.hist_rel, axis=1)
        prec = np.divide(within_rel, within, out=np.zeros(within.shape), where=within > 0)
        has = acc.n_rel_db > 0
        res.radius = np.arange(nb)
        res.pr_precision = prec.mean(0)
        res.pr_recall = (within_rel[has] / acc.n_rel_db[has, None]).mean(0) if has.any() else np.zeros(nb)
        tot, tot_rel = within.sum(0), within_rel.sum(0)
        res.pr_pooled_precision = np.divide(tot_rel, tot, out=np.zeros(nb), where=tot > 0)
    return res


def mean_average_precision(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = 1000,
    protocol: str = "lagnh",
) -> float:
    """MAP@``topk`` under ``protocol`` (``lagnh``, ``calctopmap`` or ``hit``); see the module doc.

    Codes are packed uint8 or ±1 arrays (n x bits); labels are multi-hot (n x classes).
    Ties in Hamming distance are broken by database order. ``topk=None`` = whole ranking.
    """
    return evaluate_retrieval(query_codes, db_codes, query_labels, db_labels, topk, protocol,
                              pk_cutoffs=None, curves=False).map


def precision_at_k(
    query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any,
    cutoffs: Sequence[int] = DEFAULT_PK_CUTOFFS,
) -> tuple[np.ndarray, np.ndarray]:
    """The precision@K curve: ``(K, mean over all queries of relevant-in-top-K / K)``."""
    r = evaluate_retrieval(query_codes, db_codes, query_labels, db_labels, topk=1, pk_cutoffs=cutoffs)
    return r.pk_cutoffs, r.pk


def precision_recall_curve(query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any) -> dict:
    """PR curve by Hamming radius r = 0..bits: ``radius``, ``precision`` (per query, empty ball
    = 0, mean over all queries), ``recall`` (mean over queries with >=1 relevant item),
    ``pooled_precision`` (relevant pairs / pairs within r)."""
    r = evaluate_retrieval(query_codes, db_codes, query_labels, db_labels, topk=1, pk_cutoffs=None)
    return {"radius": r.radius, "precision": r.pr_precision, "recall": r.pr_recall,
            "pooled_precision": r.pr_pooled_precision}


def precision_within_radius(
    query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, radius: int = 2
) -> tuple[float, float]:
    """Precision of the Hamming ball of ``radius``: ``(per-query mean with an empty ball
    counting 0, pooled over all query-item pairs within the radius)``."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise InputError(f"radius must be a non-negative integer, got {radius!r}")
    c = precision_recall_curve(query_codes, db_codes, query_labels, db_labels)
    r = min(int(radius), len(c["radius"]) - 1)
    return float(c["precision"][r]), float(c["pooled_precision"][r])


# -- a reference without codes: ranking by cosine similarity -------------------------------
#: cosine scores closer than this to the next higher one tie with it (float rounding of equal
#: cosines is ~1e-13 for unit float64 vectors of a few thousand dimensions)
COSINE_TIE = 1e-10


def _float64_block(rows: Any, name: str) -> np.ndarray:
    block = np.asarray(rows)
    if block.dtype.kind not in "fiu":
        raise InputError(f"{name} must be numeric, got dtype {block.dtype}")
    block = block.astype(np.float64)
    if not np.isfinite(block).all():
        raise InputError(f"{name} contain NaN or inf")
    return block


def _inverse_norms(v: np.ndarray) -> np.ndarray:
    """1 / the L2 norm of each row; 0 for an all-zero row (it then scores 0 against everything)."""
    norms = np.linalg.norm(v, axis=1)
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def cosine_order(scores: np.ndarray, depth: int, tie: float = COSINE_TIE) -> np.ndarray:
    """The ``depth`` best database positions of each row of ``scores`` (higher first), ties by
    database order: a score within ``tie`` of the one ranked above it ties with it."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    group = np.zeros(ranked.shape, np.int64)
    np.cumsum(ranked[:, :-1] - ranked[:, 1:] > tie, axis=1, out=group[:, 1:])
    key = group * scores.shape[1] + order  # by tie group, then by database position
    return np.take_along_axis(order, np.argsort(key, axis=1)[:, :depth], axis=1)


def evaluate_cosine(
    query_vectors: Any,
    db_vectors: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = 1000,
    protocol: str = "lagnh",
    *,
    pk_cutoffs: Sequence[int] | None = DEFAULT_PK_CUTOFFS,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> RetrievalResult:
    """MAP@K under ``protocol`` of ranking the database by cosine similarity to each query:
    the reference that does not hash, under the rules of :func:`evaluate_retrieval`.

    The database is ranked for each query by decreasing ``cos(q, x)`` (float64; an all-zero
    row scores 0 against everything), **ties by database order**, and AP@K, the protocols and
    P@K are those of the codes' ranking. Equal cosines computed in floating point can differ in
    the last bits (different norms, summation orders), so scores within :data:`COSINE_TIE`
    of the one ranked above them tie with it (:func:`cosine_order`).

    Memory is bounded by ``memory_bytes`` plus the queries: the database is read in blocks
    (a memory map, or any object with ``shape`` whose row slices give arrays, e.g. rows
    transformed on the fly), once per chunk of queries.

    Args:
        query_vectors / db_vectors: (n_query, d) and (n_db, d) real vectors.
        query_labels / db_labels: multi-hot labels (items x classes).
        topk: K of MAP@K; ``None`` = the whole ranking. protocol: as for codes.
        pk_cutoffs: the K of the precision@K curve. memory_bytes: the working-memory budget.

    Returns:
        a :class:`RetrievalResult` with ``bits = 0``, the P@K curve and no PR curve.
    """
    check_protocol(protocol)
    if protocol == TIES:
        raise InputError("protocol ties averages over orders of tied codes; the cosine reference ranks by real scores: "
                         "use lagnh, calctopmap or hit")
    q = _float64_block(query_vectors, "query vectors")
    db = db_vectors if hasattr(db_vectors, "shape") and hasattr(db_vectors, "__getitem__") else np.asarray(db_vectors)
    if q.ndim != 2 or len(db.shape) != 2:
        raise InputError(f"query and database vectors must be 2-D (items x dims), got shapes {q.shape} and {tuple(db.shape)}")
    if q.shape[1] != db.shape[1]:
        raise InputError(f"query vectors have {q.shape[1]} dimensions but database vectors have {db.shape[1]}")
    if len(db) == 0 or len(q) == 0:
        raise InputError("cosine ranking needs at least one query and one database item")
    ql, mq = _label_words(query_labels, "query labels", len(q))
    dl, md = _label_words(db_labels, "database labels", len(db))
    if mq != md:
        raise InputError(f"query labels have {mq} classes but database labels have {md}")
    # the database is read in float64 blocks of a quarter of the budget, once per query chunk
    block = max(1, memory_bytes // 4 // (8 * max(1, db.shape[1])))
    spans = [(a, min(len(db), a + block)) for a in range(0, len(db), block)]
    db_inv = np.concatenate([_inverse_norms(_float64_block(db[a:b], "database vectors")) for a, b in spans])
    Q = q * _inverse_norms(q)[:, None]
    n_db = len(db)
    k = clamp_topk(topk, n_db)
    cut = _cutoffs(pk_cutoffs, n_db)
    depth = max(k, int(cut.max()) if cut.size else 0)
    # bytes per (query, db item): scores, two argsorts, ranked scores, tie groups, keys
    rows = max(1, min(len(q), _chunk_rows(n_db, 6 * 8, memory_bytes - 8 * block * db.shape[1])))
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    ap, hits_k = np.zeros(len(q)), np.zeros(len(q), np.int64)
    pk_hits = np.zeros((len(q), cut.size), np.int64)
    for s, e in _iter_chunks(len(q), rows):
        scores = np.empty((e - s, n_db))
        for a, b in spans:
            scores[:, a:b] = Q[s:e] @ _float64_block(db[a:b], "database vectors").T
        scores *= db_inv
        order = cosine_order(scores, depth)
        rel = _relevance(ql, dl, s, e, order)
        ap[s:e], hits_k[s:e], cum = _average_precision(rel, k, ranks)
        if cut.size:
            pk_hits[s:e] = cum[:, cut - 1]
    counted = _counted(protocol, ql, dl, hits_k)
    res = RetrievalResult(protocol, k, _protocol_mean(ap, counted, protocol), ap, counted, len(q), n_db, 0,
                          np.full(len(q), -1, np.int64))
    _set_pk(res, cut, pk_hits)
    return res
