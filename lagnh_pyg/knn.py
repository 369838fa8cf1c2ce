"""kNN backends of the graph builder (:func:`lagnh_pyg.graph.build_graph`): k nearest
neighbours by cosine (inner product of unit rows) with FAISS.

* :func:`knn_search` — in memory: exact (``IndexFlatIP``) or IVF (``IndexIVFFlat``).
* :func:`ivf_knn` — chunked over a memory map with bounded memory: a random sample of rows
  trains a PCA projection (FAISS ``PCAMatrix``) and the IVF's coarse quantiser; rows are
  normalised, projected and added in chunks, then searched in chunks; only N x ``pca_dim``
  floats are ever held (the in-memory backends hold three N x d arrays: 6 GB for 1M x 512).

Both search a set against itself and drop each node's own id (:func:`drop_self`). A GPU copy
of the index is used when FAISS has one.
"""

from __future__ import annotations

import math

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


def ivf_knn(arr, k: int, rows: np.ndarray | None = None, *, pca_dim: int | None = None, nlist: int | None = None,
            nprobe: int = 8, train_size: int = 65536, chunk: int = CHUNK, seed: int = 0,
            mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate self-kNN by cosine over rows of ``arr`` (memory map allowed), chunked.

    Args:
        arr: (M, d) array; ``rows`` (N,) sorted selects the nodes (all rows when None).
        k: neighbours per node (the node itself excluded).
        pca_dim: project unit rows to this many dimensions first (None: no projection).
        nlist: IVF lists (default ``max(1, int(sqrt(N)))``); nprobe: lists searched.
        mask: optional (N,) bool: nodes allowed in the index (others get none as neighbours).
    Returns:
        (sims, ids), (N, k) each; ids are node numbers 0..N-1, -1 where missing.
    """
    import faiss

    n = len(rows) if rows is not None else arr.shape[0]
    d = arr.shape[1]
    if k + 1 > n:
        raise InputError(f"graph.k={k} needs more than {n} nodes")
    nlist = nlist or max(1, int(math.sqrt(n)))
    rng = np.random.default_rng(seed)
    pool = np.arange(n) if mask is None else np.flatnonzero(mask)
    sample = np.sort(rng.choice(pool, size=min(train_size, len(pool)), replace=False))
    train = l2_normalize(arr[sample if rows is None else rows[sample]])
    pca = None
    dim = d
    if pca_dim is not None and pca_dim < d:
        pca = faiss.PCAMatrix(d, pca_dim)
        pca.train(train)
        train = pca.apply(train)
        dim = pca_dim
    nlist = min(nlist, max(1, len(train) // 39))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(train)
    index.nprobe = min(nprobe, nlist)
    if faiss_has_gpu():  # pragma: no cover - no GPU FAISS here
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)

    def encoded(s: int, e: int) -> np.ndarray:
        u = l2_normalize(read_rows(arr, rows, s, e))
        return np.ascontiguousarray(pca.apply(u) if pca is not None else u)

    # the encoded rows are kept (N x dim float32: 256 MB for 1M x 64) so that the search
    # does not read, normalise and project the memory map a second time
    coded = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        ids = np.arange(s, e, dtype=np.int64)
        v = coded[s:e] = encoded(s, e)
        if mask is not None:
            keep = mask[s:e]
            v, ids = v[keep], ids[keep]
        if len(ids):
            index.add_with_ids(v, ids)
    sims = np.empty((n, k), dtype=np.float32)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        sims[s:e], out[s:e] = drop_self(*index.search(coded[s:e], k + 1), np.arange(s, e))
    return sims, out
