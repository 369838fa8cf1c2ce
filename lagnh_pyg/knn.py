"""kNN backends of the graph builder (:func:`lagnh_pyg.graph.build_graph`): k nearest
neighbours by cosine (inner product of unit rows) with FAISS.

* :func:`knn_search` — in memory: exact (``IndexFlatIP``) or IVF (``IndexIVFFlat``).
* :func:`ivf_knn` — chunked over a memory map with bounded memory: a random sample of rows
  trains a PCA projection (FAISS ``PCAMatrix``) and the IVF's coarse quantiser; rows are
  normalised and projected in chunks, then searched list by list (:func:`ivf_join`: the IVF
  search's result, with matrix products); only N x ``pca_dim`` floats are ever held (the
  in-memory backends hold three N x d arrays: 6 GB for 1M x 512).

Both search a set against itself and drop each node's own id (:func:`drop_self`). A GPU copy
of the index is used when FAISS has one.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np

from .device import faiss_has_gpu
from .errors import InputError

EXACT_MAX_NODES = 200_000  # IndexFlatIP up to here, IVF beyond (graph.index = auto)
CHUNK = 65536  # rows per chunk of the memory-mapped backend


def l2_normalize(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (never NaN)."""
    a = np.asarray(a, dtype=np.float32)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def knn_search(base: np.ndarray, k: int, index: str = "auto", queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours by inner product with FAISS (rows of ``base`` should be unit).

    With ``queries=None`` the base searches itself and each node's own row is removed.

    Args:
        base: (n, d) float32.
        k: neighbours per row.
        index: ``flat`` (exact IndexFlatIP), ``ivf`` (IndexIVFFlat, nprobe 16) or ``auto``
            (exact up to ``EXACT_MAX_NODES`` nodes). A GPU copy is used when FAISS has one.

    Returns:
        (sims, ids), both (m, k); ids of -1 mark missing neighbours (IVF only).
    """
    base = np.ascontiguousarray(base, dtype=np.float32)
    n, d = base.shape
    self_search = queries is None
    kk = k + 1 if self_search else k
    if kk > n:
        raise InputError(f"graph.k={k} needs more than {n} training nodes; lower graph.k below {n if self_search else n + 1}")
    idx = ip_index(base, index)
    q = base if self_search else np.ascontiguousarray(queries, dtype=np.float32)
    sims, ids = idx.search(q, kk)
    if self_search:
        sims, ids = drop_self(sims, ids, np.arange(n))
    return sims, ids


def ip_index(base: np.ndarray, index: str = "auto"):
    """A FAISS inner-product index holding ``base`` (n, d) float32: ``flat`` (exact
    IndexFlatIP), ``ivf`` (IndexIVFFlat, nlist 4 sqrt n, nprobe 16) or ``auto`` (exact up to
    ``EXACT_MAX_NODES`` rows); a GPU copy when FAISS has one."""
    import faiss

    base = np.ascontiguousarray(base, dtype=np.float32)
    n, d = base.shape
    if index == "auto":
        index = "flat" if n <= EXACT_MAX_NODES else "ivf"
    if index == "flat":
        idx = faiss.IndexFlatIP(d)
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(d)
        idx = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        idx.train(base)
        idx.nprobe = min(16, nlist)
    if faiss_has_gpu():  # pragma: no cover - no GPU FAISS on CI
        res = faiss.StandardGpuResources()
        idx = faiss.index_cpu_to_gpu(res, 0, idx)
    idx.add(base)
    return idx


def drop_self(sims: np.ndarray, ids: np.ndarray, node_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id from a (m, k+1) self-search result: the column holding
    ``node_ids[i]``, or the last column when a duplicate ranked the node itself out."""
    m, kk = ids.shape
    own = ids == node_ids[:, None]
    drop = np.where(own.any(1), own.argmax(1), kk - 1)
    keep = np.ones_like(ids, dtype=bool)
    keep[np.arange(m), drop] = False
    return sims[keep].reshape(m, kk - 1), ids[keep].reshape(m, kk - 1)


def read_rows(arr, rows: np.ndarray | None, s: int, e: int) -> np.ndarray:
    """Rows ``s:e`` of the nodes (``rows[s:e]`` of ``arr``, or ``arr[s:e]``) as float32;
    ``rows`` sorted, so a memory map is read sequentially."""
    if rows is None:
        return np.asarray(arr[s:e], dtype=np.float32)
    return np.asarray(arr[rows[s:e]], dtype=np.float32)


@contextlib.contextmanager
def phase(timings: dict | None, name: str):
    """Add the wall and CPU (process) seconds of the block to ``timings[name]`` (a
    ``[wall, cpu]`` pair) when ``timings`` is a dict; the benchmarks' per-phase profile."""
    if timings is None:
        yield
        return
    w, c = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        acc = timings.setdefault(name, [0.0, 0.0])
        acc[0] += time.perf_counter() - w
        acc[1] += time.process_time() - c


def ivf_knn(arr, k: int, rows: np.ndarray | None = None, *, pca_dim: int | None = None, nlist: int | None = None,
            nprobe: int = 8, train_size: int = 65536, chunk: int = CHUNK, seed: int = 0,
            mask: np.ndarray | None = None, timings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate self-kNN by cosine over rows of ``arr`` (memory map allowed), chunked.

    Args:
        arr: (M, d) array; ``rows`` (N,) sorted selects the nodes (all rows when None).
        k: neighbours per node (the node itself excluded).
        pca_dim: project unit rows to this many dimensions first (None: no projection).
        nlist: IVF lists (default ``max(1, int(sqrt(N)))``); nprobe: lists searched.
        mask: optional (N,) bool: nodes allowed in the index (others get none as neighbours).
        timings: optional dict filled with ``[wall, cpu]`` seconds per phase (:func:`phase`).
    Returns:
        (sims, ids), (N, k) each; ids are node numbers 0..N-1, -1 where missing.
    """
    n = len(rows) if rows is not None else arr.shape[0]
    if k + 1 > n:
        raise InputError(f"graph.k={k} needs more than {n} nodes")
    pool = np.arange(n) if mask is None else np.flatnonzero(mask)
    sample = np.sort(np.random.default_rng(seed).choice(pool, size=min(train_size, len(pool)), replace=False))
    with phase(timings, "read training sample"):
        train = l2_normalize(arr[sample if rows is None else rows[sample]])
    pca, index = _trained_ivf(train, pca_dim, nlist or max(1, int(math.sqrt(n))), nprobe, timings)
    # the encoded rows are kept (N x dim float32: 256 MB for 1M x 64) so that the search
    # does not read, normalise and project the memory map a second time
    coded = np.empty((n, index.d), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        with phase(timings, "read + normalise"):
            u = l2_normalize(read_rows(arr, rows, s, e))
        with phase(timings, "PCA projection"):
            coded[s:e] = pca.apply(u) if pca is not None else u
    if faiss_has_gpu():  # pragma: no cover - no GPU FAISS here
        sims, ids = _faiss_ivf_search(index, coded, k + 1, mask, chunk, timings)
    else:
        with phase(timings, "IVF assign"):
            _, probes = index.quantizer.search(coded, index.nprobe)
        with phase(timings, "IVF search (list-blocked join)"):
            sims, ids = ivf_join(coded, probes, index.nlist, k + 1, mask, chunk)
    return drop_self(sims, ids, np.arange(n))


def _faiss_ivf_search(index, coded: np.ndarray, kk: int, mask: np.ndarray | None, chunk: int,
                      timings: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """IndexIVFFlat add + search of ``coded`` against itself, in chunks (the GPU path)."""
    n = len(coded)
    ids = np.arange(n, dtype=np.int64)
    with phase(timings, "IVF add"):
        for s in range(0, n, chunk):
            keep = slice(s, min(n, s + chunk)) if mask is None else s + np.flatnonzero(mask[s : s + chunk])
            if len(ids[keep]):
                index.add_with_ids(np.ascontiguousarray(coded[keep]), ids[keep])
    sims = np.empty((n, kk), dtype=np.float32)
    out = np.empty((n, kk), dtype=np.int64)
    with phase(timings, "IVF search"):
        for s in range(0, n, chunk):
            sims[s : s + chunk], out[s : s + chunk] = index.search(coded[s : s + chunk], kk)
    return sims, out


def ivf_join(coded: np.ndarray, probes: np.ndarray, nlist: int, kk: int, member: np.ndarray | None = None,
             chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """What ``IndexIVFFlat.search`` of the rows against themselves returns, list by list.

    Each row is a member of its first (nearest) list and searches its ``nprobe`` lists
    ``probes[i]`` (a quantizer search), as in an IVF index; instead of scanning the lists of
    one query at a time, the queries (of a chunk) that probe a list are scored against its
    members with one matrix product and the list's best ``kk`` kept, then merged per query.
    Same candidates and inner products as the IVF search (ties may be ordered differently),
    about twice as fast on CPU (1M x 64, nprobe 8: BLAS instead of one dot product per pair).

    Args:
        coded: (n, d) float32 rows. probes: (n, nprobe) list ids, nearest first.
        nlist: number of lists. kk: results per row (the row itself included).
        member: optional (n,) bool: rows in the index (all when None).
    Returns:
        (sims, ids), (n, kk) each, best first; -inf and -1 where fewer than kk candidates.
    """
    import torch

    n, nprobe = probes.shape
    home = probes[:, 0]
    mem = np.arange(n) if member is None else np.flatnonzero(member)
    mem = mem[np.argsort(home[mem], kind="stable")]
    mptr = np.searchsorted(home[mem], np.arange(nlist + 1))
    base, mem_t, x = torch.from_numpy(coded[mem]), torch.from_numpy(mem), torch.from_numpy(coded)
    sims = np.empty((n, kk), dtype=np.float32)
    ids = np.empty((n, kk), dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        flat = torch.from_numpy(np.ascontiguousarray(probes[s:e]).reshape(-1))
        order = torch.argsort(flat, stable=True)  # (query, probe) slots grouped by list
        qptr = torch.searchsorted(flat[order], torch.arange(nlist + 1)).numpy()
        best = torch.full((len(flat), kk), -math.inf)
        best_id = torch.full((len(flat), kk), -1, dtype=torch.long)
        for lst in np.flatnonzero((np.diff(qptr) > 0) & (np.diff(mptr) > 0)):
            slots = order[qptr[lst] : qptr[lst + 1]]
            lo, hi = int(mptr[lst]), int(mptr[lst + 1])
            top = min(kk, hi - lo)
            v, j = torch.topk(x[s + slots // nprobe] @ base[lo:hi].T, top, dim=1)
            best[slots, :top] = v
            best_id[slots, :top] = mem_t[lo + j]
        v, j = torch.topk(best.view(e - s, nprobe * kk), kk, dim=1)
        sims[s:e] = v.numpy()
        ids[s:e] = torch.gather(best_id.view(e - s, nprobe * kk), 1, j).numpy()
    return sims, ids


def _trained_ivf(train: np.ndarray, pca_dim: int | None, nlist: int, nprobe: int, timings: dict | None):
    """(PCA matrix or None, empty trained IndexIVFFlat) from unit training rows."""
    import faiss

    pca = None
    if pca_dim is not None and pca_dim < train.shape[1]:
        with phase(timings, "PCA fit"):
            pca = faiss.PCAMatrix(train.shape[1], pca_dim)
            pca.train(train)
            train = pca.apply(train)
    dim = train.shape[1]
    nlist = min(nlist, max(1, len(train) // 39))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    with phase(timings, "IVF train"):
        index.train(train)
    index.nprobe = min(nprobe, nlist)
    if faiss_has_gpu():  # pragma: no cover - no GPU FAISS here
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return pca, index
