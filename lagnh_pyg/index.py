"""A Hamming-space index over packed codes with item ids (FAISS binary indexes).

Kinds:

* ``flat``      — ``faiss.IndexBinaryFlat``: exact. Results are the exact top-k by Hamming
                  distance with **ties broken by database order** (insertion order): FAISS's
                  own heap leaves the order of equal distances unspecified, so the items at the
                  k-th distance are re-resolved with an exact range search.
* ``hash``      — ``faiss.IndexBinaryHash``: buckets on the first ``hash_bits`` bits, probing
                  buckets within ``nflip`` flips; sub-linear, approximate (may return < k).
* ``multihash`` — ``faiss.IndexBinaryMultiHash``: ``nhash`` tables of ``hash_bits`` bits each;
                  sub-linear, approximate.

A ``flat`` index searches on the GPU (``faiss.GpuIndexBinaryFlat``) when ``device`` asks for
it and the installed FAISS is a GPU build; the CPU index stays the one saved to disk.

On disk (``save``/``load``) an index is a directory::

    index/
      meta.json     format, version, kind and parameters, bits, bit order, method,
                    model_fingerprint (the model whose codes it holds), n_items
      codes.faiss   faiss.write_index_binary output
      ids.txt       one item id a line, in database (insertion) order

Codes from another model are refused: on ``add`` and on ``load`` the model fingerprint is
checked against the one the caller expects.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .codes import check_bits
from .errors import InputError
from .files import atomic_dir, read_json, read_text

logger = logging.getLogger(__name__)

INDEX_FORMAT = "lagnh-index"
INDEX_VERSION = 1
BIT_ORDER = "packbits-msb-first"
KINDS = ("flat", "hash", "multihash")
_MISSING = np.iinfo(np.int32).max
TIE_MARGIN = 32  # extra neighbours asked of a flat index, to settle ties at the k-th distance in one scan
COUNTING_K = 128  # from this k on, a flat CPU index searches by counting (ties in database order by construction)

INDEX_META = "meta.json"


def is_index_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an index directory written by :meth:`HammingIndex.save`."""
    return (Path(path) / INDEX_META).is_file()



@dataclass
class SearchResult:
    """Top-k results: ``distances`` (n_query, k) int32 Hamming distances, ``positions``
    (n_query, k) int64 database positions (-1 where an approximate index found fewer than
    k items), ``ids`` the item ids (``None`` where missing)."""

    distances: np.ndarray
    positions: np.ndarray
    ids: list[list[str | None]]


def index_params(kind: str, bits: int, *, hash_bits: int | None = None, nhash: int | None = None,
                 nflip: int | None = None) -> dict[str, int]:
    """The checked parameters of a ``hash``/``multihash`` index over ``bits``-bit codes
    (``{}`` for ``flat``); ``None`` takes the default.

    ``nflip`` must lie in ``[0, hash_bits]``: FAISS enumerates flip patterns with it and a
    negative or larger value never ends (a search that hangs). ``hash_bits * nhash`` must fit
    the code, each table at most 64 bits.
    """
    given = {"hash_bits": hash_bits, "nhash": nhash, "nflip": nflip}
    if kind == "flat":
        extra = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if extra:
            raise InputError(f"{', '.join(extra)} apply to hash and multihash indexes, not flat")
        return {}
    for k, v in given.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise InputError(f"--{k.replace('_', '-')} must be an integer, got {v!r}")
    if kind == "hash" and nhash is not None:
        raise InputError("--nhash applies to multihash indexes; a hash index has one table")
    nh = 1 if kind == "hash" else int(4 if nhash is None else nhash)
    if nh < 1:
        raise InputError(f"--nhash must be at least 1, got {nh}")
    hb = int(hash_bits) if hash_bits is not None else (min(bits, 24) if kind == "hash" else max(1, min(24, bits // nh)))
    if hb < 1 or hb > 64 or hb * nh > bits:
        raise InputError(
            f"{nh} hash table(s) of {hb} bits do not fit {bits}-bit codes; choose 1 <= --hash-bits <= 64 "
            f"with hash_bits * nhash <= {bits}"
        )
    nf = int((2 if kind == "hash" else 1) if nflip is None else nflip)
    if not 0 <= nf <= hb:
        raise InputError(f"--nflip must lie in [0, {hb}] (the bits of a hash table), got {nf}")
    return {"hash_bits": hb, "nflip": nf} if kind == "hash" else {"hash_bits": hb, "nhash": nh, "nflip": nf}


class HammingIndex:
    """A FAISS binary index plus item ids and the metadata that ties it to one model.

    Args:
        bits: code length (a multiple of 8).
        kind: ``flat`` (exact, default), ``hash`` or ``multihash`` (sub-linear, approximate).
        model_fingerprint: the fingerprint of the model that made the codes (``run.json``).
        method: the method name, recorded only.
        hash_bits: bits per hash table (``hash``/``multihash``; default ``min(bits, 24)`` or
            ``bits // nhash`` for multihash).
        nhash: number of hash tables (``multihash``; default 4).
        nflip: bit flips probed at search time (``hash``/``multihash``; default 2 / 1).
        device: ``cpu`` or ``cuda``/``auto``: the GPU flat index when FAISS has a GPU.
        extra: JSON-able fields recorded in ``meta.json`` (e.g. the dataset the ids refer to).

    Example::

        >>> idx = HammingIndex(16)
        >>> idx.add(np.array([[0, 1], [255, 255], [0, 1]], np.uint8), ["a", "b", "c"])
        >>> r = idx.search(np.array([[0, 1]], np.uint8), k=2)
        >>> r.ids, r.distances.tolist()
        ([['a', 'c']], [[0, 0]])
    """

    def __init__(
        self,
        bits: int,
        kind: str = "flat",
        *,
        model_fingerprint: str | None = None,
        method: str | None = None,
        hash_bits: int | None = None,
        nhash: int | None = None,
        nflip: int | None = None,
        device: str = "cpu",
        extra: dict[str, Any] | None = None,
    ) -> None:
        import faiss

        self.bits = check_bits(bits)
        if kind not in KINDS:
            raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind
        self.model_fingerprint = model_fingerprint
        self.method = method
        self.extra = dict(extra or {})
        self.params = index_params(kind, self.bits, hash_bits=hash_bits, nhash=nhash, nflip=nflip)
        if kind == "flat":
            self._index = faiss.IndexBinaryFlat(self.bits)
        elif kind == "hash":
            self._index = faiss.IndexBinaryHash(self.bits, self.params["hash_bits"])
        else:
            self._index = faiss.IndexBinaryMultiHash(self.bits, self.params["nhash"], self.params["hash_bits"])
        if "nflip" in self.params:
            self._index.nflip = self.params["nflip"]
        self.ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._gpu = None
        self.device = "cpu"
        if device != "cpu":
            self._to_gpu(device)

    def _to_gpu(self, device: str) -> None:
        from .device import faiss_has_gpu

        if self.kind != "flat" or not faiss_has_gpu():
            if device != "auto":
                raise InputError(
                    f"a GPU {self.kind} index needs a FAISS GPU build (pip install faiss-gpu) and kind=flat"
                )
            return
        import faiss

        self._res = faiss.StandardGpuResources()
        self._gpu = faiss.GpuIndexBinaryFlat(self._res, self.bits)
        if self._index.ntotal:
            self._gpu.add(self._codes_of_cpu())
        self.device = "cuda"

    def _codes_of_cpu(self) -> np.ndarray:
        import faiss

        xb = faiss.vector_to_array(self._index.xb)
        return xb.reshape(-1, self.bits // 8)

    # -- building -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._pos

    def __repr__(self) -> str:
        p = "".join(f", {k}={v}" for k, v in self.params.items())
        return f"HammingIndex(bits={self.bits}, kind={self.kind}{p}, n={len(self)}, device={self.device})"

    def add(self, codes: Any, ids: Sequence[Any], model_fingerprint: str | None = None) -> None:
        """Append packed codes (n, bits/8) with their item ids; positions continue the order.

        A ``model_fingerprint`` that differs from the index's own is refused: codes of two
        models live in different Hamming spaces.
        """
        if model_fingerprint is not None:
            if self.model_fingerprint is None and not len(self):
                self.model_fingerprint = model_fingerprint
            elif model_fingerprint != self.model_fingerprint:
                raise InputError(
                    f"these codes come from model {model_fingerprint} but the index holds codes of model "
                    f"{self.model_fingerprint}; build a new index for the new model"
                )
        codes = self._check_codes(codes, "codes to add")
        ids = [str(i) for i in ids]
        if len(ids) != len(codes):
            raise InputError(f"{len(ids)} ids given for {len(codes)} codes")
        new = {}
        for j, i in enumerate(ids):
            if i in self._pos or i in new:
                raise InputError(f"item id {i!r} is already in the index (ids must be unique)")
            new[i] = len(self.ids) + j
        if not len(codes):
            return
        self._index.add(codes)
        if self._gpu is not None:
            self._gpu.add(codes)
        self.ids.extend(ids)
        self._pos.update(new)

    def _check_codes(self, codes: Any, what: str) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2:
            raise InputError(f"{what} must be packed uint8 rows (np.packbits), got {codes.dtype} with shape {codes.shape}")
        if codes.shape[1] * 8 != self.bits:
            raise InputError(f"{what} have {codes.shape[1] * 8} bits but the index holds {self.bits}-bit codes")
        return np.ascontiguousarray(codes)

    def position(self, item_id: str) -> int:
        try:
            return self._pos[str(item_id)]
        except KeyError:
            raise InputError(f"item {item_id!r} is not in the index") from None

    def code(self, position: int) -> np.ndarray:
        """The packed code stored at ``position``."""
        if not 0 <= int(position) < len(self):
            raise InputError(f"position {position} is outside the index (0..{len(self) - 1})")
        try:
            return np.asarray(self._index.reconstruct(int(position)), np.uint8)
        except RuntimeError:
            raise InputError(f"a {self.kind} index does not return codes by position; use a flat index") from None

    def codes_at(self, positions: Any) -> np.ndarray:
        """The packed codes stored at ``positions`` (any shape), read from FAISS's own storage
        without a copy of the index (flat and multihash; a ``hash`` index keeps no flat storage)."""
        import faiss

        positions = np.asarray(positions, np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise InputError(f"positions outside the index (0..{len(self) - 1})")
        store = self._index.storage if self.kind == "multihash" else self._index
        if self.kind == "hash":
            raise InputError("a hash index does not return codes by position; use a flat or multihash index")
        # a view of the codes as they are now: valid until the next add, so read while no add runs
        flat = faiss.rev_swig_ptr(store.xb.data(), store.ntotal * store.code_size)
        return np.asarray(flat).reshape(-1, store.code_size)[positions]

    # -- searching ------------------------------------------------------------------------
    def search(self, query_codes: Any, k: int = 10, *, with_ids: bool = True) -> SearchResult:
        """The ``k`` nearest items of each query (packed uint8 rows).

        ``flat``: exact, ties by database order. ``hash``/``multihash``: the items found in
        the probed buckets, ordered by (distance, position). ``k`` above the index size is
        clamped with a warning. ``with_ids=False`` leaves ``ids`` empty (callers that look up
        only the positions they keep: a thousand ids cost more than the search's sort).
        """
        q = self._check_codes(query_codes, "query codes")
        if not len(self):
            raise InputError("the index is empty: add database codes before searching")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        if k > len(self):
            logger.warning("k=%d is larger than the index (%d items); clamped to %d", k, len(self), len(self))
            k = len(self)
        k = int(k)
        searcher = self._gpu if self._gpu is not None else self._index
        if self.kind == "flat" and self._gpu is None and k >= COUNTING_K:
            D, I = self._counting_topk(q, k)
            return SearchResult(D, I, self._ids_of(I) if with_ids else [])
        # flat: a few more than k, so that the k-th distance's ties are usually all in the answer
        kq = min(len(self), k + TIE_MARGIN) if self.kind == "flat" else k
        D, I = searcher.search(q, kq)
        D = np.asarray(D, np.int64)
        I = np.asarray(I, np.int64)
        if self.kind == "flat":
            D, I = self._resolve_ties(q, D, I, k)
        else:
            D = np.where(I < 0, _MISSING, D)
            order = np.lexsort((np.where(I < 0, np.iinfo(np.int64).max, I), D), axis=1)
            D, I = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
        D = np.where(I < 0, -1, D).astype(np.int32)
        return SearchResult(D, I, self._ids_of(I) if with_ids else [])

    def _ids_of(self, I: np.ndarray) -> list[list[str | None]]:
        return [[self.ids[p] if p >= 0 else None for p in row] for row in I.tolist()]

    def _counting_topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by FAISS's counting search (``hammings_knn_mc``): one list a distance,
        filled in database order, so ties come by position with no second pass. For a large
        ``k`` it also beats the heap (at 1M 64-bit codes and k = 1,000: 2.5 ms vs 2.9 ms, plus
        the range search that settles the heap's ties)."""
        import faiss

        D = np.empty((len(q), k), np.int32)
        I = np.empty((len(q), k), np.int64)
        faiss.hammings_knn_mc(faiss.swig_ptr(q), self._index.xb.data(), len(q), len(self), k, self._index.code_size,
                              faiss.swig_ptr(D), faiss.swig_ptr(I))
        return D, I

    def _resolve_ties(self, q: np.ndarray, D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k with ties by position from FAISS's top-``kq`` (``kq >= k``).

        Everything strictly closer than the k-th distance is in FAISS's answer. When that
        answer also holds an item farther than the k-th distance, or the whole index, it holds
        every item at the k-th distance too: sorting it by (distance, position) is exact.
        Otherwise the items at the k-th distance are re-listed by a range search and taken in
        database order. (Meant for interactive search; bulk evaluation uses
        :func:`lagnh_pyg.metrics.hamming_rank`.)"""
        kq = D.shape[1]
        complete = kq == len(self)
        D_out, I_out = np.empty((len(q), k), np.int64), np.empty((len(q), k), np.int64)
        for r in range(len(q)):
            o = np.lexsort((I[r], D[r]))
            if complete or D[r, o[-1]] > D[r, o[k - 1]]:
                D_out[r], I_out[r] = D[r, o[:k]], I[r, o[:k]]
                continue
            kth = int(D[r, o[k - 1]])
            _lims, rd, ri = self._index.range_search(q[r : r + 1], kth + 1)
            rd = np.asarray(rd, np.int64)
            ri = np.asarray(ri, np.int64)
            tied = np.sort(ri[rd == kth])
            closer = D[r] < kth
            cd, ci = D[r][closer], I[r][closer]
            o = np.lexsort((ci, cd))
            take = k - len(ci)
            D_out[r] = np.concatenate([cd[o], np.full(take, kth)])
            I_out[r] = np.concatenate([ci[o], tied[:take]])
        return D_out, I_out

    # -- persistence ----------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write the index directory atomically (replacing an older one)."""
        import faiss

        out_dir = Path(out_dir)
        with atomic_dir(out_dir, overwrite=True, formats=(INDEX_FORMAT,)) as tmp:
            faiss.write_index_binary(self._index, str(tmp / "codes.faiss"))
            (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in self.ids))
            meta = {
                "format": INDEX_FORMAT,
                "version": INDEX_VERSION,
                "kind": self.kind,
                "params": self.params,
                "bits": self.bits,
                "bit_order": BIT_ORDER,
                "method": self.method,
                "model_fingerprint": self.model_fingerprint,
                "n_items": len(self),
                "extra": self.extra,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            (tmp / INDEX_META).write_text(json.dumps(meta, indent=2) + "\n")
        return out_dir

    @classmethod
    def load(
        cls, index_dir: str | os.PathLike, expect_fingerprint: str | None = None, device: str = "cpu"
    ) -> HammingIndex:
        """Read an index directory; refuse it when ``expect_fingerprint`` names another model."""

        index_dir = Path(index_dir)
        mp = index_dir / INDEX_META
        if not mp.is_file():
            raise InputError(f"{index_dir} is not an index directory (no meta.json); build one with `lagnh index RUN_DIR`")
        meta = read_json(mp, "index metadata")
        if meta.get("format") != INDEX_FORMAT or meta.get("version") != INDEX_VERSION:
            raise InputError(f"{mp} is not a {INDEX_FORMAT} v{INDEX_VERSION} index")
        if meta.get("bit_order") != BIT_ORDER:
            raise InputError(f"index {index_dir} uses bit order {meta.get('bit_order')!r}; this lagnh-pyg uses {BIT_ORDER}")
        if expect_fingerprint is not None and meta.get("model_fingerprint") != expect_fingerprint:
            raise InputError(
                f"index {index_dir} holds codes of model {meta.get('model_fingerprint')}, not of this run's model "
                f"{expect_fingerprint}; rebuild it with `lagnh index RUN_DIR`"
            )
        self = cls.__new__(cls)
        self.bits = check_bits(int(meta["bits"]))
        self.kind = meta["kind"]
        self.params = dict(meta.get("params") or {})
        self.model_fingerprint = meta.get("model_fingerprint")
        self.method = meta.get("method")
        self.extra = dict(meta.get("extra") or {})
        if self.kind not in KINDS:
            raise InputError(f"{mp} names unknown index kind {self.kind!r}; rebuild it with `lagnh index RUN_DIR`")
        self.params = index_params(self.kind, self.bits, **{k: self.params.get(k) for k in ("hash_bits", "nhash", "nflip")})
        self._index = _read_faiss(index_dir / "codes.faiss")
        if "nflip" in self.params:
            self._index.nflip = int(self.params["nflip"])
        self.ids = read_text(index_dir / "ids.txt", "index ids").splitlines()
        self._pos = {i: p for p, i in enumerate(self.ids)}
        if self._index.ntotal != len(self.ids) or len(self.ids) != meta.get("n_items"):
            raise InputError(f"index {index_dir} is inconsistent: {self._index.ntotal} codes, {len(self.ids)} ids")
        if self._index.d != self.bits:
            raise InputError(f"index {index_dir} holds {self._index.d}-bit codes but meta.json says {self.bits}")
        self._gpu = None
        self.device = "cpu"
        if device != "cpu":
            self._to_gpu(device)
        return self


def _read_faiss(path: Path) -> Any:
    """``faiss.read_index_binary``; a missing, truncated or foreign file is bad input."""
    import faiss

    if not path.is_file():
        raise InputError(f"{path} is missing; rerun `lagnh index` on the run directory")
    try:
        return faiss.read_index_binary(str(path))
    except RuntimeError as e:  # FAISS raises RuntimeError with its C++ message
        first = str(e).strip().splitlines()[-1][:120] if str(e).strip() else "unreadable"
        raise InputError(f"{path} is not a readable FAISS binary index ({first}); rerun `lagnh index` on the run directory") from None
