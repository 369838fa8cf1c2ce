"""Near-duplicates: candidate pairs from the codes, confirmed by the features, grouped without chaining.

1. **Candidates.** Every pair of items within Hamming radius ``R``: FAISS's binary range
   search (exact; multi-index hashing, :func:`range_index`) in chunks of queries.
2. **Confirmation.** A candidate pair counts only when the cosine of the two items' stored
   input features is at least ``min_cosine`` (:data:`DEFAULT_MIN_COSINE`; chosen on the photo
   benchmark ``benchmarks/bench_dedup_photos.py``: crops, mirrors, JPEG, resizing, rotation,
   blur, grey, letterbox and text overlays of real photos, docs/results/dedup.md). Codes of
   unrelated pictures collide; their features rarely agree that closely. A pair whose item has
   no stored features cannot be confirmed and does not count (the result says how many).
3. **Groups.** ``star`` (what ``lagnh dedup`` uses): the item with the most confirmed
   duplicates is a group's representative, and its group is it plus every confirmed duplicate
   of it not yet grouped; then the next item with the most duplicates among those left, and so
   on. Every member is a confirmed duplicate of its representative, so a chain A-B-C-D never
   joins A to D. ``components`` (the library's default without features, as before):
   connected components of the pairs, which do chain.

``lagnh dedup`` writes imagededup's format, ``{id: [ids of its confirmed duplicates]}`` with
every item as a key (closest first by Hamming distance, ties by database order), and an HTML
contact sheet of the largest groups, each sorted by distance to its representative.

Memory: the codes, the ids, one chunk's matches and the confirmed pairs (8 bytes each).
Speed: each chunk's matches are handled as arrays (no per-pair Python); 1M clustered 64-bit
codes in ``benchmarks/bench_dedup.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_path

logger = logging.getLogger(__name__)
SHOWN_PER_GROUP = 25  # items of a group on the HTML sheet (a group of identical codes may be huge)
DEFAULT_MIN_COSINE = 0.625
GROUPINGS = ("star", "components")
# pairs whose features are compared in one block (bounds the gathered rows' memory)
PAIR_BLOCK = 1 << 16

# positions -> (unit-free float32 feature rows, bool mask of the rows that are stored)
FeatureReader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class DedupResult:
    """What :func:`find_duplicates` found.

    Attributes:
        n_candidates: candidate pairs within the radius.
        n_pairs: confirmed pairs (= ``n_candidates`` without confirmation).
        n_unverifiable: candidate pairs with an item whose features are not stored.
        groups: the largest groups (positions), representative first, the rest by
            (Hamming distance to it, position).
        n_groups: all groups of two or more items.
    """

    n_items: int
    radius: int
    min_cosine: float | None = None
    grouping: str = "components"
    n_candidates: int = 0
    n_pairs: int = 0
    n_unverifiable: int = 0
    n_with_duplicates: int = 0
    n_groups: int = 0
    groups: list[list[int]] = field(default_factory=list)


def range_index(bits: int, radius: int):
    """An exact FAISS binary index for range search within ``radius``.

    Multi-index hashing (``IndexBinaryMultiHash``, no flips): ``radius + 1`` tables on disjoint
    substrings of the code; two codes within ``radius`` differ in at most ``radius`` bits, so
    they agree exactly on at least one substring (pigeonhole) and meet in its bucket. FAISS then
    checks the true distance of every candidate. At 1M spread-out 64-bit codes and radius 4 that
    is ~10^9 candidate checks instead of the 10^12 of all pairs. Where the substrings would be
    shorter than 8 bits (buckets too full to help), an exhaustive ``IndexBinaryFlat``.
    """
    import faiss

    nhash = int(radius) + 1
    hash_bits = min(64, bits // nhash)
    if hash_bits < 8:
        return faiss.IndexBinaryFlat(bits)
    index = faiss.IndexBinaryMultiHash(bits, nhash, hash_bits)
    index.nflip = 0
    return index


def range_neighbours(codes: np.ndarray, radius: int, chunk: int = 4096):
    """Yield ``(start, lims, distances, positions)`` per chunk of queries: for query ``start + q``
    the items within ``radius`` (itself included) are ``positions[lims[q]:lims[q+1]]``."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    index = range_index(codes.shape[1] * 8, radius)
    index.add(codes)
    for s in range(0, len(codes), chunk):
        # FAISS's binary range search keeps distances strictly below its radius
        lims, D, I = index.range_search(codes[s : s + chunk], int(radius) + 1)
        yield s, np.asarray(lims, np.int64), np.asarray(D, np.int64), np.asarray(I, np.int64)


def check_min_cosine(value) -> float:
    """The confirmation threshold: a number in [-1, 1]."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--min-cosine must be a number in [-1, 1], got {value!r}") from None
    if not -1.0 <= v <= 1.0:
        raise InputError(f"--min-cosine must be a number in [-1, 1], got {value!r}")
    return v


def pair_cosines(features: FeatureReader, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of the features of items ``a[i]`` and ``b[i]``, and whether both are stored;
    read in blocks of :data:`PAIR_BLOCK` pairs."""
    cos = np.zeros(len(a))
    ok = np.zeros(len(a), bool)
    for s in range(0, len(a), PAIR_BLOCK):
        fa, sa = features(a[s : s + PAIR_BLOCK])
        fb, sb = features(b[s : s + PAIR_BLOCK])
        fa, fb = np.asarray(fa, np.float32), np.asarray(fb, np.float32)
        norms = np.sqrt(np.einsum("nd,nd->n", fa, fa) * np.einsum("nd,nd->n", fb, fb))
        cos[s : s + PAIR_BLOCK] = np.divide(np.einsum("nd,nd->n", fa, fb), norms, out=np.zeros(len(fa)),
                                            where=norms > 0)
        ok[s : s + PAIR_BLOCK] = sa & sb
    return cos, ok


def find_duplicates(
    codes: np.ndarray, ids: list[str], radius: int, out_json: str | os.PathLike | None = None, *,
    chunk: int = 4096, max_groups: int = 50, features: FeatureReader | None = None,
    min_cosine: float = DEFAULT_MIN_COSINE, grouping: str | None = None,
) -> DedupResult:
    """Pairs of items within Hamming distance ``radius``, confirmed by feature cosine when
    ``features`` are given; writes ``out_json`` (streamed) and groups them.

    Args:
        codes: packed uint8 codes (n, bits/8). ids: their item ids.
        radius: the largest Hamming distance of a candidate pair (0 = identical codes).
        out_json: where the ``{id: [confirmed duplicate ids]}`` map goes (written atomically).
        chunk: queries per range search (bounds memory). max_groups: groups kept for the HTML.
        features: ``features(positions) -> (rows, stored)``: the items' input features; a
            pair counts only when their cosine is at least ``min_cosine``. ``None``: every
            candidate pair counts.
        grouping: ``star`` or ``components`` (module docstring); default ``star`` with
            ``features``, ``components`` without.
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or len(codes) != len(ids):
        raise InputError("codes must be packed uint8 rows, one per id")
    bits = codes.shape[1] * 8
    if isinstance(radius, bool) or not 0 <= int(radius) <= bits:
        raise InputError(f"--radius must lie in 0..{bits} (the code length), got {radius}")
    if chunk < 1:
        raise InputError("--chunk must be positive")
    grouping = grouping or ("star" if features is not None else "components")
    if grouping not in GROUPINGS:
        raise InputError(f"unknown grouping {grouping!r}; choose {' or '.join(GROUPINGS)}")
    thr = check_min_cosine(min_cosine) if features is not None else None
    res = DedupResult(len(codes), int(radius), thr, grouping)
    edges = [(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int16))]
    quoted = None
    with contextlib.ExitStack() as stack:  # LIFO: the file is closed before it is renamed into place
        f = stack.enter_context(open(stack.enter_context(atomic_path(out_json)), "w")) if out_json else None
        if f is not None:
            f.write("{")
            quoted = np.array([json.dumps(i) for i in ids], dtype=object)
        for s, lims, D, I in range_neighbours(codes, radius, chunk):
            q = np.repeat(np.arange(s, s + len(lims) - 1, dtype=np.int64), np.diff(lims))
            keep = I != q
            q, p, d = q[keep], I[keep], D[keep]
            res.n_candidates += int((p > q).sum())
            if features is not None and len(q):
                cos, stored = pair_cosines(features, q, p)
                res.n_unverifiable += int((~stored & (p > q)).sum())
                ok = stored & (cos >= thr)
                q, p, d = q[ok], p[ok], d[ok]
            # by query, then closest first, ties by position: one int64 key (q < 2^31, d <= bits)
            o = np.argsort((q * (bits + 1) + d) * len(codes) + p, kind="stable")
            q, p, d = q[o], p[o], d[o]
            up = p > q
            edges.append((q[up].astype(np.int32), p[up].astype(np.int32), d[up].astype(np.int16)))
            res.n_pairs += int(up.sum())
            bounds = np.searchsorted(q, np.arange(s, s + len(lims)))
            res.n_with_duplicates += int((np.diff(bounds) > 0).sum())
            if f is not None:
                _write_chunk(f, quoted, s, bounds, p)
        if f is not None:
            f.write("\n}\n")
    a, b, d = (np.concatenate([e[j] for e in edges]) for j in range(3))
    groups = star_groups(len(codes), a, b, d) if grouping == "star" else component_groups(len(codes), a, b)
    res.n_groups = len(groups)
    res.groups = groups[:max_groups]
    return res


def _write_chunk(f, quoted: np.ndarray, start: int, bounds: np.ndarray, p: np.ndarray) -> None:
    """The chunk's ``"id": [duplicates]`` entries, one line each, in position order
    (``p[bounds[j]:bounds[j + 1]]`` are the duplicates of item ``start + j``)."""
    names = quoted[p]
    parts = []
    for j in range(len(bounds) - 1):
        i = start + j
        lo, hi = bounds[j], bounds[j + 1]
        dup = "[" + ", ".join(names[lo:hi].tolist()) + "]" if hi > lo else "[]"
        parts.append(("," if i else "") + "\n" + quoted[i] + ": " + dup)
    f.write("".join(parts))


def _order_groups(groups: list[list[int]]) -> list[list[int]]:
    """Largest first, ties by their first position."""
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def component_groups(n: int, a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    """Connected components (of two or more items) of the pairs ``(a[i], b[i])``; each sorted
    by position. These chain: A-B and B-C put A and C together."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(a):
        return []
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    counts = np.bincount(label)
    order = np.argsort(label, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    return _order_groups([order[starts[c] : starts[c + 1]].tolist() for c in np.flatnonzero(counts > 1)])


def star_groups(n: int, a: np.ndarray, b: np.ndarray, d: np.ndarray) -> list[list[int]]:
    """Star groups of the confirmed pairs ``(a[i], b[i])`` at Hamming distance ``d[i]``.

    Items are taken by decreasing number of confirmed duplicates (ties by position); an item
    not yet grouped becomes a representative, and its confirmed duplicates not yet grouped
    join it. Each group: the representative, then its members by (distance to it, position).
    Every member is a confirmed duplicate of its representative: no chains.
    """
    if not len(a):
        return []
    rows = np.concatenate([a, b]).astype(np.int64)
    cols = np.concatenate([b, a]).astype(np.int64)
    o = np.lexsort((cols, np.concatenate([d, d]), rows))  # each item's duplicates closest first
    cols = cols[o]
    degree = np.bincount(rows, minlength=n)
    indptr = np.concatenate([[0], np.cumsum(degree)]).tolist()
    taken = bytearray(n)  # plain Python lookups: this loop visits every item with a duplicate
    groups = []
    for i in np.lexsort((np.arange(n), -degree))[: int((degree > 0).sum())].tolist():
        if taken[i]:
            continue
        members = [j for j in cols[indptr[i] : indptr[i + 1]].tolist() if not taken[j]]
        if not members:
            continue
        taken[i] = 1
        for j in members:
            taken[j] = 1
        groups.append([i, *members])
    return _order_groups(groups)


def groups_text(result: DedupResult, ids: list[str], limit: int | None = None) -> list[str]:
    """One line a group: the representative, then its members (``lagnh dedup`` without files)."""
    lines = []
    for g in result.groups[:limit]:
        lines.append(f"{len(g)} items: {ids[g[0]]} <- " + ", ".join(ids[j] for j in g[1:]))
    return lines


def groups_html(result: DedupResult, codes: np.ndarray, ids: list[str], image_of, title: str,
                meta_lines: list[str]) -> str:
    """A contact sheet: one row a group, its representative as the reference, the members by
    Hamming distance to it (ties by position)."""
    from .metrics import hamming_distances
    from .report.contact_sheet import contact_sheets_html

    sheets = []
    for g in result.groups:
        ref, members = g[0], np.asarray(g[1:], np.int64)
        dist = hamming_distances(codes[[ref]], codes[members])[0] if len(members) else np.zeros(0, np.int64)
        o = np.lexsort((members, dist))[: SHOWN_PER_GROUP - 1]
        q = {"id": ids[ref], "path": _path(image_of, ids[ref])}
        rows = [{"rank": r + 1, "id": ids[members[j]], "distance": int(dist[j]), "path": _path(image_of, ids[members[j]])}
                for r, j in enumerate(o)]
        sheets.append((q, rows))
    return contact_sheets_html(sheets, title=title, meta_lines=meta_lines)


def _path(image_of, item_id: str) -> str | None:
    p = image_of(item_id)
    return str(p) if p is not None else None


def write_html(path: str | os.PathLike, page: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return Path(path)
