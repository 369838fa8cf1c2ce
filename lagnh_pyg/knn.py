"""k nearest neighbours by cosine (inner product of unit rows) with FAISS, and the one FAISS
index builder of the project.

* :func:`make_index` — every FAISS float index here (the training graph's kNN, the neighbour
  rule of a new item in :mod:`lagnh_pyg.encode`, the experiments) is built by it from a
  factory string (``faiss.index_factory``, as PyG's ``KNNIndex``): ``"Flat"`` (exact),
  ``"IVF{nlist},Flat"``, ``"PCA{dim},IVF{nlist},Flat"``; :func:`ivf_description` gives the IVF
  ones their one parameter rule (``nlist`` = sqrt N, ``NPROBE`` lists searched).
* :func:`knn_search` — in memory: exact, or the IVF of :func:`ivf_knn`.
* :func:`ivf_knn` — chunked over a memory map with bounded memory: a random sample of rows
  trains a PCA projection and the IVF's coarse quantiser; rows are normalised and projected
  in chunks, then searched list by list (:func:`ivf_self_search`: FAISS's own list-blocked
  search); only N x ``pca_dim`` floats are held, twice (the projected rows, and the index's
  copy of them: 2 x 256 MB for 1M x 64; in memory, three N x d arrays would be: 6 GB for
  1M x 512).

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
from .runtime import drop_mapped_pages

EXACT_MAX_NODES = 200_000  # exact up to here, IVF beyond (graph.index = auto)
CHUNK = 65536  # rows per chunk of the memory-mapped backend
# IVF lists searched, at sqrt(N) lists: measured on the 1M graph, larger values do not pay
# (docs/results/sampled.md); the training graph and the encoding's neighbour rule share it
NPROBE = 8
TRAIN_SIZE = 65536  # rows sampled to train a PCA projection and an IVF quantiser


def ivf_description(n: int, n_train: int, *, pca_dim: int | None = None, dim: int | None = None,
                    nlist: int | None = None) -> str:
    """The factory string of the IVF over ``n`` rows trained on ``n_train`` of them: ``nlist``
    lists (default sqrt(n); at most one per 39 training rows, FAISS's minimum), after a PCA to
    ``pca_dim`` dimensions when that is below the rows' ``dim``."""
    nlist = max(1, min(nlist or max(1, int(math.sqrt(n))), n_train // 39))
    pca = f"PCA{pca_dim}," if pca_dim is not None and (dim is None or pca_dim < dim) else ""
    return f"{pca}IVF{nlist},Flat"


def make_index(dim: int, description: str, metric: str = "ip", *, train: np.ndarray | None = None,
               nprobe: int = NPROBE, gpu: bool = True):
    """The one FAISS index builder: ``faiss.index_factory(dim, description, metric)``, trained
    on ``train`` (float32 rows) when it needs training, with ``nprobe`` lists searched when it
    is an IVF, and copied to the GPU when ``gpu`` and FAISS has one.

    Args:
        dim: row dimension. description: a FAISS factory string (``"Flat"``, ``"IVF100,Flat"``,
            ``"PCA64,IVF100,Flat"``, see :func:`ivf_description`).
        metric: ``ip`` (inner product: cosine on unit rows) or ``l2``.
    Returns:
        The (empty) FAISS index; rows go in with ``add``.
    """
    import faiss

    metrics = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
    index = faiss.index_factory(int(dim), description, metrics[metric])
    if not index.is_trained:
        if train is None:
            raise ValueError(f"a {description} index needs training rows")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    if "IVF" in description:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(nprobe, ivf.nlist)
    if gpu and faiss_has_gpu():  # pragma: no cover - no GPU FAISS on CI
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def l2_normalize(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero (never NaN)."""
    a = np.asarray(a, dtype=np.float32)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)


def knn_search(base: np.ndarray, k: int, index: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of each row of ``base`` among the others, by inner product (rows
    of ``base`` should be unit); each node's own row is removed.

    Args:
        base: (n, d) float32.
        k: neighbours per row.
        index: ``flat`` (exact), ``ivf`` (:func:`ivf_knn` on the rows in memory: sqrt n lists,
            ``NPROBE`` searched) or ``auto`` (exact up to ``EXACT_MAX_NODES`` nodes). A GPU
            copy of the index is used when FAISS has one.

    Returns:
        (sims, ids), both (n, k); ids of -1 mark missing neighbours (IVF only).
    """
    base = np.ascontiguousarray(base, dtype=np.float32)
    n = base.shape[0]
    if k + 1 > n:
        raise InputError(f"graph.k={k} needs more than {n} training nodes; lower graph.k below {n}")
    if index == "auto":
        index = "flat" if n <= EXACT_MAX_NODES else "ivf"
    if index == "ivf":
        return ivf_knn(base, k)
    return drop_self(*exact_index(base).search(base, k + 1), np.arange(n))


def exact_index(base: np.ndarray):
    """An exact inner-product index (:func:`make_index` ``"Flat"``) holding ``base``."""
    base = np.ascontiguousarray(base, dtype=np.float32)
    index = make_index(base.shape[1], "Flat", "ip")
    index.add(base)
    return index


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
            nprobe: int = NPROBE, train_size: int = TRAIN_SIZE, chunk: int = CHUNK, seed: int = 0,
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
    pca, index = _trained_ivf(train, ivf_description(n, len(train), pca_dim=pca_dim, dim=train.shape[1], nlist=nlist),
                              nprobe, timings)
    # the encoded rows are kept (N x dim float32: 256 MB for 1M x 64) so that the search
    # does not read, normalise and project the memory map a second time; the index holds a
    # second copy (the lists FAISS's list-blocked search scans)
    coded = np.empty((n, index.d), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        with phase(timings, "read + normalise"):
            u = l2_normalize(read_rows(arr, rows, s, e))
        with phase(timings, "PCA projection"):
            coded[s:e] = pca.apply(u) if pca is not None else u
    # read once, in full: at 1M x 512 its mapped pages are 2 GiB of this process's RSS through
    # the whole search (they stay in the page cache: a later pass reads no disk)
    drop_mapped_pages(arr)
    sims, ids = ivf_self_search(index, coded, k + 1, mask, chunk, timings)
    return drop_self(sims, ids, np.arange(n))


def ivf_self_search(index, coded: np.ndarray, kk: int, member: np.ndarray | None = None, chunk: int = CHUNK,
                    timings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``coded`` searched against themselves in the (trained, empty) IVF ``index``:
    the rows (those ``member`` selects) are added with their row numbers as ids, then every
    row searches its ``nprobe`` lists.

    On a CPU the search is FAISS's own list-blocked one (``faiss.contrib.big_batch_search``):
    the rows probing a list are scored against its members with one matrix product, the IVF
    search's result (measured against the project's former join of the same kind, 200,000 x
    64, nprobe 8: 10.1 vs 10.8 s CPU, same neighbours: ``benchmarks/bench_ivf_join.py``). On a
    GPU, the index's own search in chunks.

    Returns:
        (sims, ids), (n, kk) each, best first; -inf and -1 where fewer than kk candidates.
    """
    import contextlib
    import io

    from faiss.contrib.big_batch_search import big_batch_search

    n = len(coded)
    ids = np.arange(n, dtype=np.int64)
    with phase(timings, "IVF add"):
        for s in range(0, n, chunk):
            keep = slice(s, min(n, s + chunk)) if member is None else s + np.flatnonzero(member[s : s + chunk])
            if len(ids[keep]):
                index.add_with_ids(np.ascontiguousarray(coded[keep]), ids[keep])
    with phase(timings, "IVF search"):
        if faiss_has_gpu():  # pragma: no cover - no GPU FAISS here
            sims = np.empty((n, kk), dtype=np.float32)
            out = np.empty((n, kk), dtype=np.int64)
            for s in range(0, n, chunk):
                sims[s : s + chunk], out[s : s + chunk] = index.search(coded[s : s + chunk], kk)
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # it reports every list on stdout
                sims, out = big_batch_search(index, coded, kk, method="knn_function")
    sims[out < 0] = -np.inf  # FAISS pads with -FLT_MAX: no candidate is below any similarity
    return sims, out


def _trained_ivf(train: np.ndarray, description: str, nprobe: int, timings: dict | None):
    """(PCA matrix or None, empty trained IVF) from unit training rows: :func:`make_index` of
    ``description``, taken apart because the join projects the rows itself and searches the
    lists without adding them."""
    import faiss

    with phase(timings, "PCA fit + IVF train"):
        index = make_index(train.shape[1], description, "ip", train=train, nprobe=nprobe, gpu=False)
    if not description.startswith("PCA"):
        pca, ivf = None, index
    else:  # both parts live inside the IndexPreTransform: each keeps it alive. By
        # ``referenced_objects``, FAISS's own attribute for that: its Python wrapper refuses
        # any other new attribute of an index. The IVF downcast to its own class (IndexIVFFlat):
        # the list-blocked search takes no other
        pca = faiss.downcast_VectorTransform(index.chain.at(0))
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        pca.referenced_objects = ivf.referenced_objects = [index]
    if faiss_has_gpu():  # pragma: no cover - no GPU FAISS here
        ivf = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, ivf)
    return pca, ivf
