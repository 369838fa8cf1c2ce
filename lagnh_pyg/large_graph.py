"""The kNN topology of a very large training set with bounded memory (FAISS IVF, chunked).

:func:`lagnh_pyg.graph.build_graph` holds the features, a normalised copy and a flat FAISS
copy in memory at once (three N x d float32 arrays: 6 GB for 1M x 512) and trains its IVF
on every point. :func:`build_topology` reads the features from the dataset's memory map in
chunks and never holds an N x d array:

1. a random sample of rows trains a PCA projection to ``pca_dim`` (FAISS ``PCAMatrix``) and
   the IVF's coarse quantiser (``nlist ~ sqrt(N)`` lists) on unit rows;
2. every row is normalised, projected and added in chunks (N x ``pca_dim`` floats stored);
3. each row's k neighbours are searched in chunks (``nprobe`` lists);
4. the aux kNN runs the same way on the unit aux rows (no PCA; c is small);
5. the union is symmetrised and de-duplicated; S^a is computed per edge in chunks.

Same graph definition as :func:`~lagnh_pyg.graph.build_graph` (visual kNN by cosine, aux kNN
by cosine with positive similarity, union, symmetric), approximate neighbours. It returns the
*sampling topology* of :func:`~lagnh_pyg.graph.sampling_topology` (no self-loops; each batch adds them).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch_geometric.data import Data

from .errors import InputError
from .graph import sampling_topology

logger = logging.getLogger(__name__)

CHUNK = 65536


def _unit(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block, dtype=np.float32)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)


def _rows(arr, rows: np.ndarray | None, s: int, e: int) -> np.ndarray:
    if rows is None:
        return np.asarray(arr[s:e], dtype=np.float32)
    return np.asarray(arr[rows[s:e]], dtype=np.float32)  # rows are sorted: sequential reads


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

    from .device import faiss_has_gpu

    n = len(rows) if rows is not None else arr.shape[0]
    d = arr.shape[1]
    if k + 1 > n:
        raise InputError(f"graph.k={k} needs more than {n} nodes")
    nlist = nlist or max(1, int(math.sqrt(n)))
    rng = np.random.default_rng(seed)
    pool = np.arange(n) if mask is None else np.flatnonzero(mask)
    sample = np.sort(rng.choice(pool, size=min(train_size, len(pool)), replace=False))
    train = _unit(arr[sample if rows is None else rows[sample]])
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
        u = _unit(_rows(arr, rows, s, e))
        return np.ascontiguousarray(pca.apply(u) if pca is not None else u)

    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        ids = np.arange(s, e, dtype=np.int64)
        v = encoded(s, e)
        if mask is not None:
            keep = mask[s:e]
            v, ids = v[keep], ids[keep]
        if len(ids):
            index.add_with_ids(v, ids)
    sims = np.empty((n, k), dtype=np.float32)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        sv, iv = index.search(encoded(s, e), k + 1)
        own = iv == np.arange(s, e)[:, None]
        drop = np.where(own.any(1), own.argmax(1), k)
        keep = np.ones_like(iv, dtype=bool)
        keep[np.arange(e - s), drop] = False
        sims[s:e] = sv[keep].reshape(e - s, k)
        out[s:e] = iv[keep].reshape(e - s, k)
    return sims, out


def build_topology(features, aux, k: int = 10, sources: str = "both", rows: np.ndarray | None = None, *,
                   pca_dim: int | None = 64, nprobe: int = 8, chunk: int = CHUNK, seed: int = 0,
                   aux_by_node: bool = False) -> Data:
    """The sampling topology (see :func:`~lagnh_pyg.graph.sampling_topology`) of the nodes
    ``rows`` of ``features``/``aux`` (memory maps), with bounded memory. ``aux_by_node``:
    ``aux`` is already (N, c), one row per node (``rows`` then applies to ``features`` only).

    Returns ``Data(edge_index, s_a, count, num_nodes)`` with ``stats`` (nodes, edges, degree
    mean/min/max, seconds).
    """
    t0 = time.perf_counter()
    n = len(rows) if rows is not None else features.shape[0]
    if k >= n:
        raise InputError(f"graph.k={k} is not smaller than the {n} training nodes; lower graph.k")
    arows = None if aux_by_node else rows
    parts = []
    if sources in ("visual", "both"):
        _, ids = ivf_knn(features, k, rows, pca_dim=pca_dim, nprobe=nprobe, chunk=chunk, seed=seed)
        parts.append(_pairs(ids, None))
        del ids
    if sources in ("aux", "both"):
        has_aux = np.zeros(n, dtype=bool)
        for s in range(0, n, chunk):
            has_aux[s : s + chunk] = np.abs(_rows(aux, arows, s, min(n, s + chunk))).sum(1) > 0
        if has_aux.sum() > k:
            sims, ids = ivf_knn(aux, k, arows, pca_dim=None, nprobe=nprobe, chunk=chunk, seed=seed + 1, mask=has_aux)
            parts.append(_pairs(ids, (sims > 0) & has_aux[:, None]))
            del sims, ids
        elif sources == "aux":
            raise InputError(f"only {int(has_aux.sum())} training items have aux semantics; need more than graph.k={k}")
    # symmetrise + de-duplicate on one int64 key per edge (dst * n + src), sorted by target
    key = torch.cat([torch.cat([d * n + s, s * n + d]) for s, d in parts])
    del parts
    key = torch.unique(key)  # sorted
    src, dst = key % n, key // n
    del key
    edge_index = torch.stack([src, dst])
    edge_index = edge_index[:, src != dst]
    s_a = torch.empty(edge_index.shape[1], dtype=torch.float32)
    # S^a per edge, in chunks of target nodes (edges are sorted by target)
    ptr = torch.searchsorted(edge_index[1], torch.arange(0, n + 1, chunk).clamp_max(n))
    ptr = torch.cat([ptr, torch.tensor([edge_index.shape[1]])])
    for i, s in enumerate(range(0, n, chunk)):
        e0, e1 = int(ptr[i]), int(ptr[i + 1])
        if e1 == e0:
            continue
        src_c, dst_c = edge_index[0, e0:e1].numpy(), edge_index[1, e0:e1].numpy()
        need = np.unique(src_c)
        au_src = _unit(_take(aux, arows, need))
        au_dst = _unit(_rows(aux, arows, s, min(n, s + chunk)))
        a = au_src[np.searchsorted(need, src_c)]
        b = au_dst[dst_c - s]
        s_a[e0:e1] = torch.from_numpy(np.maximum((a * b).sum(1), 0))
    topo = sampling_topology(edge_index, s_a, n)
    deg = topo.count - 1
    topo.stats = {"nodes": n, "edges": int(edge_index.shape[1]) // 2, "degree_mean": float(deg.float().mean()),
                  "degree_min": int(deg.min()), "degree_max": int(deg.max()), "isolated": int((deg == 0).sum()),
                  "index": f"IVF{'+PCA' + str(pca_dim) if pca_dim else ''} nprobe {nprobe}",
                  "seconds": time.perf_counter() - t0}
    return topo


def _take(arr, rows: np.ndarray | None, nodes: np.ndarray) -> np.ndarray:
    return np.asarray(arr[nodes if rows is None else rows[nodes]], dtype=np.float32)


def _pairs(ids: np.ndarray, keep: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = ids.shape
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    dst = ids.reshape(-1)
    ok = dst >= 0
    if keep is not None:
        ok &= keep.reshape(-1)
    return torch.from_numpy(src[ok]), torch.from_numpy(dst[ok])
