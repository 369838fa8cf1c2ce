"""Two-stage ranking: the top R items by Hamming distance, re-ranked by a finer score.

Codes find candidates fast; they are not the final order. A short code puts hundreds of items
at one Hamming distance, and what the sign threw away decides between them. The second stage
scores each of the R candidates with what the codes dropped, and sorts them by it (higher
first; equal scores keep the Hamming order). Components, each a cosine in [-1, 1]:

* ``asym``     — between the query's real-valued model output ``z`` (the embedding whose
                 signs are its code) and the candidate's code as a ±1 vector:
                 ``z . b / (|z| sqrt(k))``. The asymmetric distance of binary embeddings
                 (Dong et al. 2008; Gordo et al. 2014): it weighs each differing bit by how
                 sure the query is of it, and needs nothing stored beyond the codes.
* ``features`` — between the query's input features and the candidate's stored ones (read
                 from the dataset's memory map: R rows a query).
* ``aux``      — between their auxiliary semantics (detections, tags), stored likewise.

A score is a weighted sum of components, written ``features+aux`` (weight 1 each) or
``asym:0.5,aux:1``. Which weighting ranks best depends on the data (clean detector aux
deserves more weight than noisy tags), so a run's own score is chosen on a validation split
of its training items (``lagnh experiment rerank RUNS --save`` writes ``RUN/rerank.json``) and
is what ``evaluate``, ``search`` and ``serve`` use unless told; :data:`DEFAULT_SCORE`, the best
weighting on average over the six demo runs' validation splits (docs/results/rerank.md), serves
runs without one. Queries are never used to choose. A candidate whose stored vectors are
unknown (an item added as a bare code) gets, for that component, the mean of the query's other
candidates: neither pushed up nor down.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)

COMPONENTS = ("asym", "features", "aux")
# the best mean validation MAP over the six demo runs (demo-det, demo-tags x 16/32/64 bits; the
# training items' validation splits): docs/results/rerank.md
DEFAULT_SCORE = "asym:0.25,features:1,aux:0.25"
RERANK_FORMAT = "lagnh-rerank"
DEFAULT_DEPTH = 1000
# working memory of the candidates' gathered vectors in one scoring block
BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class RerankScore:
    """A weighted sum of the components (:data:`COMPONENTS`); see the module docstring.

    Example::

        >>> RerankScore.parse("features+aux:0.5")
        RerankScore('features:1,aux:0.5')
    """

    weights: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str | RerankScore) -> RerankScore:
        """``name[:weight]`` terms joined by ``+`` or ``,`` (weight 1 when left out)."""
        if isinstance(text, RerankScore):
            return text
        return _parse_score(str(text))

    @classmethod
    def _parse(cls, text: str) -> RerankScore:
        terms = [t.strip() for t in str(text).replace("+", ",").split(",") if t.strip()]
        if not terms:
            raise InputError(f"the re-rank score is empty; give components of {', '.join(COMPONENTS)}, e.g. "
                             f"{DEFAULT_SCORE!r}")
        weights: dict[str, float] = {}
        for t in terms:
            name, _, w = t.replace("=", ":").partition(":")
            name = name.strip().lower()
            if name not in COMPONENTS:
                raise InputError(f"unknown re-rank score component {name!r} in {text!r}; choose from "
                                 f"{', '.join(COMPONENTS)} (e.g. {DEFAULT_SCORE!r})")
            try:
                value = float(w) if w.strip() else 1.0
            except ValueError:
                raise InputError(f"the weight of {name} in {text!r} is not a number: {w!r}") from None
            if not math.isfinite(value) or value < 0:
                raise InputError(f"the weight of {name} in {text!r} must be a finite number >= 0, got {w!r}")
            if name in weights:
                raise InputError(f"{name} is given twice in the re-rank score {text!r}")
            weights[name] = value
        if not any(weights.values()):
            raise InputError(f"every weight of the re-rank score {text!r} is 0: nothing to rank by")
        return cls(tuple((n, weights[n]) for n in COMPONENTS if n in weights and weights[n] > 0))

    def needs(self, component: str) -> bool:
        return any(n == component for n, _ in self.weights)

    def __str__(self) -> str:
        return ",".join(f"{n}:{w:g}" for n, w in self.weights)

    def __repr__(self) -> str:
        return f"RerankScore({str(self)!r})"


@functools.lru_cache(maxsize=256)
def _parse_score(text: str) -> RerankScore:
    """:meth:`RerankScore.parse` of a string, remembered (the service parses its default score on
    every request; a score is immutable)."""
    return RerankScore._parse(text)


def run_score(run) -> tuple[RerankScore, str]:
    """The re-rank score of ``run`` and where it comes from: ``RUN/rerank.json`` (chosen on the
    run's validation split, for this model), else :data:`DEFAULT_SCORE`."""
    from .files import read_json

    path = run.rerank_path
    if path.is_file():
        rec = read_json(path, "re-rank choice")
        if rec.get("format") == RERANK_FORMAT and rec.get("model_fingerprint") == run.model_fingerprint:
            return RerankScore.parse(rec["score"]), f"chosen on the validation split of {run.root.name}"
        logger.warning("%s was made for another model; the default re-rank score is used", path)
    return RerankScore.parse(DEFAULT_SCORE), "the default"


def save_run_score(run, score: RerankScore | str, **provenance: Any) -> Path:
    """Write ``RUN/rerank.json``: ``score``, the model it was chosen for, and ``provenance``."""
    from .files import write_json_atomic

    write_json_atomic(run.rerank_path, {"format": RERANK_FORMAT, "score": str(RerankScore.parse(score)),
                                        "model_fingerprint": run.model_fingerprint, **provenance})
    return run.rerank_path


def resolve_score(run, score: RerankScore | str | None) -> RerankScore:
    """``score`` when given, else the run's own (:func:`run_score`)."""
    return RerankScore.parse(score) if score not in (None, "") else run_score(run)[0]


def check_depth(rerank: Any, what: str = "--rerank") -> int:
    """R, the candidates re-ranked: an integer >= 0 (0 = Hamming ranking only)."""
    bad = InputError(f"{what} must be a non-negative integer (0 = off), got {rerank!r}")
    if isinstance(rerank, str) and rerank.strip().isdigit():
        return int(rerank)
    if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
        raise bad
    return int(rerank)


@dataclass
class Vectors:
    """Per-item vectors the score reads, row-aligned: the model's real-valued output ``z``
    (queries only), input ``features`` and ``aux``; ``None`` where not given/needed."""

    z: np.ndarray | None = None
    features: np.ndarray | None = None
    aux: np.ndarray | None = None

    def rows(self, idx: Any) -> Vectors:
        pick = (lambda a: None if a is None else a[idx])
        return Vectors(pick(self.z), pick(self.features), pick(self.aux))


def real_output(encoder: Any, features: np.ndarray, aux: np.ndarray) -> np.ndarray:
    """(n, bits) float32: the encoder's real-valued output whose signs are the codes.

    LAGNH's ``encode`` returns ``z`` itself; a baseline's ``project`` gives its embedding
    (``encode`` gives only the signs).
    """
    project = getattr(encoder, "project", None)
    if project is not None and getattr(encoder, "feature_dim", None) is not None:
        from .baselines.base import as_features

        X = as_features(features, dim=encoder.feature_dim)
        takes_aux = "aux" in inspect.signature(project).parameters
        return np.asarray(project(X, aux=aux) if takes_aux else project(X), np.float32)
    z = np.asarray(encoder.encode(features, aux))
    if z.dtype.kind != "f":
        raise InputError(f"{type(encoder).__name__} gives only binary codes, no real-valued output: "
                         "the asym re-rank score cannot be used with it")
    return z.astype(np.float32, copy=False)


def encode_with_output(encoder: Any, features: np.ndarray, aux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(packed codes, z)``: the codes exactly as ``encoder.encode`` makes them, and the
    real-valued output (:func:`real_output`), computing LAGNH's forward pass once."""
    from .codes import pack_codes

    if getattr(encoder, "project", None) is not None:
        return pack_codes(np.asarray(encoder.encode(features, aux))), real_output(encoder, features, aux)
    z = real_output(encoder, features, aux)
    return pack_codes(z), z


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.sqrt(np.einsum("...d,...d->...", x, x))[..., None]
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def score_candidates(score: RerankScore, query: Vectors, codes: np.ndarray, cand: Vectors,
                     present: np.ndarray | None = None) -> np.ndarray:
    """Scores of candidates, higher first: ``sum_c w_c cos_c(query, candidate)``.

    Args:
        score: the components and their weights.
        query: (c, ...) vectors of ``c`` queries (``z`` for ``asym``, ``features``, ``aux``).
        codes: (c, R, bits/8) the candidates' packed codes.
        cand: (c, R, ...) the candidates' ``features`` / ``aux`` (for those components).
        present: (c, R) bool, candidates whose stored vectors are known (default all); the
            others get the mean of their query's known candidates for those components.

    Returns:
        (c, R) float64 scores.
    """
    c, R = codes.shape[:2]
    out = np.zeros((c, R))
    for name, w in score.weights:
        if name == "asym":
            if query.z is None:
                raise InputError("the asym re-rank score needs the query's real-valued model output")
            s = _asym(_unit(query.z), codes)
        else:
            qv, cv = getattr(query, name), getattr(cand, name)
            if qv is None or cv is None:
                raise InputError(f"the {name} re-rank score needs the stored {name} of the query and the candidates")
            s = _cosines(_unit(qv), np.asarray(cv, np.float32))
            if present is not None and not present.all():
                known = present.sum(1, keepdims=True)
                fill = np.divide((s * present).sum(1, keepdims=True), known, out=np.zeros((c, 1)), where=known > 0)
                s = np.where(present, s, fill)
        out += w * s
    return out


# the ±1 value of each bit of a byte, most significant first (np.unpackbits' order): (256, 8)
_BYTE_SIGNS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32) * 2.0 - 1.0


def _asym(zu: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(c, R) ``zu . b / sqrt(bits)`` of unit query outputs ``zu`` (c, bits) and the candidates'
    packed ``codes`` (c, R, bits/8) as ±1 vectors, by a table of each byte value's partial sum a
    query and byte position (no unpacked copy of the codes)."""
    c, R, nb = codes.shape
    table = np.matmul(zu.reshape(c, nb, 8).astype(np.float32), _BYTE_SIGNS.T)  # (c, bytes, 256)
    flat = codes.astype(np.intp) + (256 * nb) * np.arange(c)[:, None, None] + 256 * np.arange(nb)
    return np.take(table, flat).sum(2, dtype=np.float64) / math.sqrt(nb * 8)


def _cosines(qu: np.ndarray, cv: np.ndarray) -> np.ndarray:
    """(c, R) cosines of unit queries ``qu`` (c, d) with candidates ``cv`` (c, R, d) (0 where a
    candidate is all zeros): one product and one norm a query, no normalised copy."""
    dots = np.matmul(cv, qu[:, :, None])[..., 0]
    norms = np.sqrt(np.einsum("crd,crd->cr", cv, cv))
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


class DatasetVectors:
    """Stored features and aux of database positions, read from a dataset's memory maps.

    Args:
        dataset: the :class:`~lagnh_pyg.data.store.Dataset`.
        rows: dataset row of each database position (``-1``: not in the dataset).
        extra: vectors of positions outside the dataset, by position (e.g. added pictures).
    """

    def __init__(self, dataset, rows: np.ndarray, extra: Callable[[int], Vectors | None] | None = None) -> None:
        self.dataset = dataset
        self.rows = np.asarray(rows, np.int64)
        self.extra = extra

    def _read(self, name: str, rows: np.ndarray) -> np.ndarray:
        """float32 rows of the dataset's ``features`` or ``aux``, read through a plain view of
        the memory map (a memmap's own indexing costs more than the read, at R = 1,000)."""
        arr = self.dataset.features if name == "features" else self.dataset.aux
        if isinstance(arr, np.memmap):
            return np.asarray(arr.view(np.ndarray)[rows], np.float32)
        return (self.dataset.feature_rows if name == "features" else self.dataset.aux_rows)(rows)

    def __call__(self, positions: np.ndarray, score: RerankScore) -> tuple[Vectors, np.ndarray]:
        """``(vectors, present)`` of ``positions`` (any shape); rows not stored are zeros with
        ``present`` False."""
        shape = positions.shape
        flat = positions.reshape(-1)
        rows = np.full(flat.shape, -1, np.int64)
        inside = (flat >= 0) & (flat < len(self.rows))
        rows[inside] = self.rows[flat[inside]]
        present = rows >= 0
        out = Vectors()
        for name in ("features", "aux"):
            if not score.needs(name):
                continue
            dim = self.dataset.feature_dim if name == "features" else self.dataset.aux_dim
            block = np.zeros((len(flat), dim), np.float32)
            if present.any():
                take = np.flatnonzero(present)
                order = np.argsort(rows[take], kind="stable")  # sequential reads of the memory map
                block[take[order]] = self._read(name, rows[take][order])
            setattr(out, name, block.reshape(*shape, dim))
        if self.extra is not None:
            for j in np.flatnonzero(~present & (flat >= 0)):
                v = self.extra(int(flat[j]))
                if v is None:
                    continue
                for name in ("features", "aux"):
                    arr, val = getattr(out, name), getattr(v, name)
                    if arr is not None and val is not None:
                        arr.reshape(len(flat), -1)[j] = np.asarray(val, np.float32).reshape(-1)
                present[j] = v.features is not None or v.aux is not None
        return out, present.reshape(shape)


class Reranker:
    """The candidate scorer of :func:`lagnh_pyg.metrics.evaluate_retrieval`: query rows and
    database candidates -> scores, reading candidates' stored vectors in bounded blocks.

    Args:
        score: the components and weights.
        queries: the queries' vectors (row-aligned with the query codes).
        db_codes: (n_db, bits/8) packed database codes.
        db_vectors: the database's stored vectors (:class:`DatasetVectors`).
    """

    def __init__(self, score: RerankScore | str, queries: Vectors, db_codes: np.ndarray,
                 db_vectors: DatasetVectors) -> None:
        self.score = RerankScore.parse(score)
        self.queries, self.db_codes, self.db_vectors = queries, np.asarray(db_codes, np.uint8), db_vectors

    def __call__(self, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        out = np.empty(cand.shape)
        dim = sum(v.shape[1] for v in (self.queries.features, self.queries.aux) if v is not None) or 1
        step = max(1, BLOCK_BYTES // (4 * dim * max(1, cand.shape[1])))
        for s in range(0, len(rows), step):
            c = cand[s : s + step]
            vec, present = self.db_vectors(c, self.score)
            out[s : s + step] = score_candidates(self.score, self.queries.rows(rows[s : s + step]),
                                                 self.db_codes[c], vec, present)
        return out


def query_vectors(score: RerankScore, features: np.ndarray | None, aux: np.ndarray | None,
                  encoder: Callable[[], Any] | None = None) -> Vectors:
    """The vectors ``score`` needs of queries with these ``features`` and ``aux``: the model's
    output only for ``asym`` (``encoder`` is called to get the run's encoder then)."""
    z = None
    if score.needs("asym"):
        if encoder is None or features is None:
            raise InputError("the asym re-rank score needs the query's features and the run's model")
        z = real_output(encoder(), features, aux)
    return Vectors(z, features if score.needs("features") else None, aux if score.needs("aux") else None)


def order_candidates(scores: np.ndarray) -> np.ndarray:
    """The stable descending order of one query's candidate scores (ties keep Hamming order)."""
    return np.argsort(-np.where(np.isnan(scores), -np.inf, scores), kind="stable")


def own_item_first(items: list, distances: np.ndarray, scores: np.ndarray, own
                   ) -> tuple[list, np.ndarray, np.ndarray]:
    """Among the items tied with the query, its own item leads: ``own`` (the query's item, by id
    or position, given only when it is in the index, so that its code is the query's) is moved
    to the front, or put there at distance 0 when more items than asked share its code."""
    if own is None:
        return items, distances, scores
    if own in items:
        j = items.index(own)
        o = [j, *range(j), *range(j + 1, len(items))]
        return [items[i] for i in o], distances[o], scores[o]
    return [own, *items], np.r_[0, distances], np.r_[np.nan, scores]


def two_stage(score: RerankScore, query: Vectors, positions: np.ndarray, codes: np.ndarray,
              vectors: Callable[[np.ndarray, RerankScore], tuple[Vectors, np.ndarray]], depth: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """One query's two-stage order: ``positions`` (in Hamming order) with the first ``depth``
    re-ranked by ``score``. Returns ``(order, scores)``: indices into ``positions`` and each
    position's score in that order (NaN past the re-ranked ones).

    Args:
        query: the query's vectors (one row each).
        codes: (n, bits/8) the positions' packed codes.
        vectors: ``vectors(positions, score) -> (Vectors, present)``: stored vectors by position
            (:class:`DatasetVectors`).
    """
    n = len(positions)
    R = min(int(depth), n)
    cand = np.asarray(positions[:R], np.int64)
    vec, present = vectors(cand[None, :], score)
    s = score_candidates(score, query, np.asarray(codes[:R])[None], vec, present)[0]
    o = order_candidates(s)
    order = np.concatenate([o, np.arange(R, n)])
    return order, np.concatenate([s[o], np.full(n - R, np.nan)])
