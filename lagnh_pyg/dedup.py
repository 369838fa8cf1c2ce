"""Near-duplicates in Hamming space: every pair of items within radius ``R``.

``lagnh dedup`` writes imagededup's format, ``{id: [ids of its duplicates]}`` with every
item as a key (closest first, ties by database order), and an HTML contact sheet of the
largest groups (connected components of the duplicate pairs).

Memory stays bounded at millions of codes: the queries go to FAISS's binary range search
(exact; multi-index hashing, :func:`range_index`) in chunks of ``chunk`` items, each chunk's answer is
written out before the next is asked, and only a union-find array of ``n`` int64 is kept
across chunks. Peak memory is about the codes, the ids and one chunk's matches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_path

logger = logging.getLogger(__name__)
SHOWN_PER_GROUP = 25  # items of a group on the HTML sheet (a group of identical codes may be huge)


@dataclass
class DedupResult:
    n_items: int
    radius: int
    n_pairs: int = 0
    n_with_duplicates: int = 0
    groups: list[list[int]] = field(default_factory=list)  # the largest groups (positions)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:  # path compression
            p[a], a = root, p[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


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
        yield s, np.asarray(lims), np.asarray(D, np.int64), np.asarray(I, np.int64)


def find_duplicates(
    codes: np.ndarray, ids: list[str], radius: int, out_json: str | os.PathLike | None = None, *,
    chunk: int = 4096, max_groups: int = 50,
) -> DedupResult:
    """Pairs of items within Hamming distance ``radius``; writes ``out_json`` (streamed).

    Args:
        codes: packed uint8 codes (n, bits/8). ids: their item ids.
        radius: the largest Hamming distance that counts as a duplicate (0 = identical codes).
        out_json: where the ``{id: [duplicate ids]}`` map goes (written atomically).
        chunk: queries per range search (bounds memory). max_groups: groups kept for the HTML.
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or len(codes) != len(ids):
        raise InputError("codes must be packed uint8 rows, one per id")
    bits = codes.shape[1] * 8
    if isinstance(radius, bool) or not 0 <= int(radius) <= bits:
        raise InputError(f"--radius must lie in 0..{bits} (the code length), got {radius}")
    if chunk < 1:
        raise InputError("--chunk must be positive")
    res = DedupResult(len(codes), int(radius))
    uf = _UnionFind(len(codes))
    with contextlib.ExitStack() as stack:  # LIFO: the file is closed before it is renamed into place
        f = stack.enter_context(open(stack.enter_context(atomic_path(out_json)), "w")) if out_json else None
        if f is not None:
            f.write("{")
        for s, lims, D, I in range_neighbours(codes, radius, chunk):
            for q in range(len(lims) - 1):
                i = s + q
                if lims[q + 1] - lims[q] <= 1:  # only itself: the common case, kept cheap
                    if f is not None:
                        f.write(("," if i else "") + "\n" + json.dumps(ids[i]) + ": []")
                    continue
                d, p = D[lims[q] : lims[q + 1]], I[lims[q] : lims[q + 1]]
                keep = p != i
                p = p[keep][np.lexsort((p[keep], d[keep]))]  # closest first, ties by position
                if len(p):
                    res.n_with_duplicates += 1
                    res.n_pairs += int((p > i).sum())
                    for j in p[p > i]:
                        uf.union(i, int(j))
                if f is not None:
                    f.write(("," if i else "") + "\n" + json.dumps(ids[i]) + ": " + json.dumps([ids[j] for j in p]))
        if f is not None:
            f.write("\n}\n")
    res.groups = _largest_groups(uf, max_groups)
    return res


def _largest_groups(uf: _UnionFind, k: int) -> list[list[int]]:
    roots = np.array([uf.find(i) for i in range(len(uf.parent))], dtype=np.int64)
    counts = np.bincount(roots, minlength=len(roots))
    big = np.flatnonzero(counts > 1)
    big = big[np.lexsort((big, -counts[big]))][:k]
    return [np.flatnonzero(roots == r).tolist() for r in big]


def groups_html(result: DedupResult, codes: np.ndarray, ids: list[str], image_of, title: str,
                meta_lines: list[str]) -> str:
    """A contact sheet: one row a group, its first item as the reference, distances to it."""
    from .metrics import hamming_distances
    from .report.contact_sheet import contact_sheets_html

    sheets = []
    for g in result.groups:
        ref, members = g[0], g[1:SHOWN_PER_GROUP]
        dist = hamming_distances(codes[[ref]], codes[members])[0]
        q = {"id": ids[ref], "path": _path(image_of, ids[ref])}
        rows = [{"rank": r + 1, "id": ids[j], "distance": int(d), "path": _path(image_of, ids[j])}
                for r, (j, d) in enumerate(zip(members, dist))]
        sheets.append((q, rows))
    return contact_sheets_html(sheets, title=title, meta_lines=meta_lines)


def _path(image_of, item_id: str) -> str | None:
    p = image_of(item_id)
    return str(p) if p is not None else None


def write_html(path: str | os.PathLike, page: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return Path(path)
