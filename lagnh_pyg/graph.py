"""The augmented semantic graph: the one builder of the kNN topology, and the fused edge
weights (Eq. 3-5) in their sparse (per edge) and dense (all pairs) forms.

The topology is fixed once per training set (:func:`build_graph`, with a pluggable kNN
backend from :mod:`lagnh_pyg.knn`): the union of the visual kNN graph (cosine on
L2-normalised features) and the auxiliary kNN graph (cosine on L2-normalised aux vectors),
symmetrised, without duplicate edges, plus exactly one self-loop per node. The edge weights
are not fixed: :func:`fused_edge_weight` recomputes ``S = S^v + eta S^a`` on those edges from
the current attentive features in every forward pass, so the graph stays sparse and
differentiable.

Example::

    data = build_graph(features, aux, k=10)           # torch_geometric.data.Data
    w = fused_edge_weight(xhat, data.edge_index, data.s_a, eta=1.0, sigma2=sigma2)
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import remove_self_loops, scatter, sort_edge_index, to_torch_csr_tensor

from .errors import InputError
from .knn import CHUNK, EXACT_MAX_NODES, ivf_knn, knn_search, l2_normalize

logger = logging.getLogger(__name__)


# -- the formulas, each in a dense (all pairs) and a sparse (paired rows, one per edge) form ------
def aux_similarity(aux_unit_a: Tensor, aux_unit_b: Tensor) -> Tensor:
    """Eq. 4 between every row of one set of unit aux rows and every row of another:
    S^a = max(0, cos), (m, c) x (n, c) -> (m, n); a zero row gives zeros."""
    return (aux_unit_a @ aux_unit_b.T).clamp_min(0)


def pair_aux_similarity(aux_unit_a: Tensor, aux_unit_b: Tensor) -> Tensor:
    """Eq. 4 between paired rows (row i of one with row i of the other, e.g. the two ends of
    each edge): (E, c), (E, c) -> (E,); the sparse form of :func:`aux_similarity`."""
    return (aux_unit_a * aux_unit_b).sum(1).clamp_min(0)


def sq_dist(x: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """||x_src - x_dst||^2 on every edge (src[e], dst[e]): (E,); exactly 0 on self-loops. The
    sparse form (:func:`edge_sq_dist` is its fast path on a sorted graph). The rows are
    gathered here, in one expression, so that each gathered (E, a) block is freed as soon as
    it is used (at 2^18 edges of 512-d rows, a block is 512 MB)."""
    return (x[src] - x[dst]).pow(2).sum(1)


def dense_sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """||a_i - b_j||^2 between every row of ``a`` (m, a) and every row of ``b`` (n, a) -> (m, n),
    as ||a||^2 + ||b||^2 - 2 <a, b> (one matmul), clamped at 0 against rounding."""
    sq = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :]
    return torch.addmm(sq, a, b.T, alpha=-2.0).clamp_min(0)  # one pass fewer over (m, n) than - 2 a b^T


def safe_degree(degree: Tensor) -> Tensor:
    """The one rule for zero degrees, shared by every normalisation: a node without in-weight
    is given an infinite degree, so that its normalised weights are 0 (never NaN or inf; its
    raw weights are all 0 anyway)."""
    return degree.masked_fill(degree == 0, math.inf)


def build_graph(
    features,
    aux: np.ndarray,
    k: int = 10,
    sources: str = "both",
    index: str = "auto",
    labels: np.ndarray | None = None,
    *,
    rows: np.ndarray | None = None,
    aux_knn: np.ndarray | None = None,
    pca_dim: int | None = 64,
    nprobe: int = 8,
    chunk: int = CHUNK,
    seed: int = 0,
) -> Data:
    """The training graph: kNN topology (visual ∪ aux, symmetrised, one self-loop each).

    Args:
        features: (n, d) deep features, or (M, d) with ``rows`` selecting the n nodes; an
            array or a memory map (the ``chunked`` backend reads it in chunks).
        aux: (n, c) auxiliary semantics of the nodes in [0, 1]; all-zero rows are allowed.
        k: neighbours per node in each kNN graph before the union.
        sources: ``visual``, ``aux`` or ``both``.
        index: the kNN backend (:mod:`lagnh_pyg.knn`): ``flat`` (exact), ``ivf`` (in memory),
            ``chunked`` (PCA + IVF over a memory map, bounded memory) or ``auto`` (flat up to
            ``EXACT_MAX_NODES`` nodes, ivf beyond).
        labels: optional (n, m) ground truth, only for the logged diagnostic.
        rows: sorted rows of ``features`` that are the nodes (None: all rows).
        aux_knn: optional (n, c') vectors whose cosine kNN gives the aux list instead of the
            aux rows' (e.g. the denoised semantics, ``graph.semantics: denoised``); the edge
            weights S^a stay the aux rows' own.
        pca_dim, nprobe, chunk, seed: the ``chunked`` backend's projection, lists searched,
            rows per chunk and sampling seed.

    Returns:
        ``Data`` with ``aux_unit`` (n, c), ``edge_index`` (2, E) sorted by target then source,
        with self-loops, ``s_a`` (E,) = S^a per edge (Eq. 4; 1 on the self-loop of a node
        with aux, 0 without) and ``stats`` (:func:`graph_stats`); except with ``chunked``,
        also ``x`` (n, d, as given) and ``aux`` (n, c): the model's inputs.
    """
    n = len(rows) if rows is not None else features.shape[0]
    if aux.shape[0] != n:
        raise InputError(f"features have {n} rows but aux has {aux.shape[0]}")
    if k >= n:
        raise InputError(f"graph.k={k} is not smaller than the {n} training nodes; lower graph.k")
    if index == "auto":
        index = "flat" if n <= EXACT_MAX_NODES else "ivf"
    chunked = dict(pca_dim=pca_dim, nprobe=nprobe, chunk=chunk, seed=seed)
    x = None if index == "chunked" else np.ascontiguousarray(features if rows is None else features[rows],
                                                             dtype=np.float32)
    aux_unit = l2_normalize(aux)
    parts = []
    if sources in ("visual", "both"):
        if x is None:
            _, ids = ivf_knn(features, k, rows, **chunked)
        else:
            _, ids = knn_search(l2_normalize(x), k, index)
        parts.append(_edges_from_knn(ids))
    if sources in ("aux", "both"):
        knn_unit = aux_unit if aux_knn is None else l2_normalize(aux_knn)
        has_aux = np.linalg.norm(knn_unit, axis=1) > 0
        if has_aux.sum() > k:
            if x is None:  # nodes without aux stay out of the index
                sims, ids = ivf_knn(knn_unit, k, **{**chunked, "pca_dim": None, "seed": seed + 1}, mask=has_aux)
            else:
                sims, ids = knn_search(knn_unit, k, index)
            ok = (sims > 0) & has_aux[:, None]  # an aux neighbour must share something
            parts.append(_edges_from_knn(ids, ok))
        elif sources == "aux":
            raise InputError(f"only {int(has_aux.sum())} training items have aux semantics; need more than graph.k={k}")
    edge_index = _symmetric_with_self_loops(parts, n)
    au = torch.from_numpy(aux_unit)
    data = Data(aux_unit=au, edge_index=edge_index, s_a=edge_aux_similarity(au, edge_index, sddmm=x is None),
                num_nodes=n)
    if x is not None:
        data.x = torch.from_numpy(x)
        data.aux = torch.from_numpy(np.ascontiguousarray(aux, dtype=np.float32))
    data.stats = graph_stats(edge_index, n, labels)
    data.stats["index"] = f"chunked IVF{'+PCA' + str(pca_dim) if pca_dim else ''} nprobe {nprobe}" if x is None else index
    return data


def _edges_from_knn(ids: np.ndarray, keep: np.ndarray | None = None) -> Tensor:
    """(2, E) edges node -> each of its kNN ids (missing ids, -1, and ``~keep`` dropped)."""
    n, k = ids.shape
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    dst = ids.reshape(-1).astype(np.int64)
    mask = dst >= 0
    if keep is not None:
        mask &= keep.reshape(-1)
    return torch.from_numpy(np.stack([src[mask], dst[mask]]))


def _symmetric_with_self_loops(parts: list[Tensor], n: int) -> Tensor:
    """The union of the kNN edge lists, symmetrised, without duplicates, with exactly one
    self-loop per node, sorted by target then source: one int64 key ``dst * n + src`` per
    edge (a quarter of the memory of sorting the (2, E) pairs)."""
    keys = [torch.arange(n, dtype=torch.long) * (n + 1)]  # the self-loops
    for src, dst in parts:
        keys += [dst * n + src, src * n + dst]
    key = torch.unique(torch.cat(keys))  # sorted
    return torch.stack([key % n, key // n])


def edge_aux_similarity(aux_unit: Tensor, edge_index: Tensor, chunk: int = 1 << 20, sddmm: bool = False) -> Tensor:
    """S^a (Eq. 4) on every edge, ``chunk`` edges at a time: (E,).

    ``sddmm=True`` (edges sorted by target, as :func:`build_graph` makes them): the inner
    products come from a sampled sparse matmul over each chunk's target rows instead of two
    gathered (chunk, c) matrices; 13x faster on CPU (1M nodes, 35M edges: 24.5 -> ~2 s),
    equal up to float rounding (the summation order differs), so the chunked backend uses it
    and the in-memory ones keep the gathered form's exact values.
    """
    src, dst = edge_index
    out = torch.empty(src.numel(), dtype=aux_unit.dtype)
    for s in range(0, src.numel(), chunk):
        e = slice(s, s + chunk)
        if not sddmm:
            out[e] = pair_aux_similarity(aux_unit[src[e]], aux_unit[dst[e]])
            continue
        lo, hi = int(dst[s]), int(dst[e][-1]) + 1
        crow = torch.searchsorted(dst[e], torch.arange(lo, hi + 1))
        with _quiet_csr():
            pattern = torch.sparse_csr_tensor(crow, src[e], torch.zeros(crow[-1], dtype=aux_unit.dtype),
                                              size=(hi - lo, aux_unit.shape[0]))
            out[e] = torch.sparse.sampled_addmm(pattern, aux_unit[lo:hi], aux_unit.T, beta=0.0).values().clamp_min(0)
    return out


def diffuse(s_unit: Tensor, edge_index: Tensor, weight: float) -> Tensor:
    """One diffusion step of unit rows over a graph: t_i = l2n(s_i + w l2n(sum of s_j over the
    other ends j of i's edges)), self-loops left out; (n, c) -> (n, c) unit rows (a node
    without other edges keeps s_i). ``edge_index`` sorted by target (:func:`sort_by_target`);
    a sparse product, so memory is the rows', not one row per edge."""
    if weight == 0:
        return F.normalize(s_unit, dim=1)
    keep = edge_index[0] != edge_index[1]
    ei = edge_index[:, keep]
    adj = csr_adjacency(ei, torch.ones(ei.shape[1], dtype=s_unit.dtype, device=s_unit.device), s_unit.shape[0])
    with _quiet_csr():
        around = adj @ s_unit
    return F.normalize(s_unit + weight * F.normalize(around, dim=1), dim=1)


def graph_stats(edge_index: Tensor, n: int, labels: np.ndarray | None = None) -> dict:
    """Degrees (without the self-loop) and, with labels, the fraction of edges whose ends
    share a label — a diagnostic for the user, never used in training."""
    src, dst = edge_index
    off = src != dst
    deg = torch.bincount(dst[off], minlength=n).float()
    stats = {
        "nodes": n,
        "edges": int(off.sum()) // 2,
        "degree_mean": float(deg.mean()),
        "degree_min": int(deg.min()) if n else 0,
        "degree_max": int(deg.max()) if n else 0,
        "isolated": int((deg == 0).sum()),
    }
    if labels is not None and off.any():
        lab = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        s, d = src[off], dst[off]
        shared = torch.zeros(len(s), dtype=torch.bool)
        for start in range(0, len(s), 1 << 18):
            e = slice(start, start + (1 << 18))
            shared[e] = (lab[s[e]] * lab[d[e]]).sum(1) > 0
        stats["edges_sharing_label"] = float(shared.float().mean())
    return stats


@contextlib.contextmanager
def _quiet_csr():
    # torch warns once per process that CSR support is "beta" and that invariant checks are
    # off; our CSR tensors come from sorted edge lists, so both are noise. Silenced here, not
    # with a process-wide filter: importing the library must not change warnings state.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        yield


def csr_adjacency(edge_index: Tensor, weight: Tensor, num_nodes: int) -> Tensor:
    """The transposed adjacency (row = target) as a sparse CSR tensor; ``edge_index`` sorted
    by target, then source (:func:`sort_by_target`)."""
    with _quiet_csr():
        return to_torch_csr_tensor(edge_index.flip(0), weight, size=num_nodes, is_coalesced=True)


class _CSRPropagate(torch.autograd.Function):
    """``out = A x`` with A the (n, n) transposed adjacency (row = target) of weighted edges;
    differentiable in the weights and in ``x`` without the dense n x n gradient that
    autograd through a sparse CSR matmul forms (measured: 672 ms against 66 ms for one
    forward and backward at 5,000 nodes, 148k edges, 256 columns, one thread)."""

    @staticmethod
    def forward(ctx, weight: Tensor, x: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
        adj = csr_adjacency(edge_index, weight, num_nodes)
        ctx.save_for_backward(x)
        ctx.adj = adj
        with _quiet_csr():
            return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        adj = ctx.adj
        grad_w = grad_x = None
        grad = grad.contiguous()
        with _quiet_csr():
            if ctx.needs_input_grad[0]:  # d out_i / d w_ij = x_j: <grad_i, x_j> on each edge (SDDMM)
                pattern = torch.sparse_csr_tensor(adj.crow_indices(), adj.col_indices(),
                                                  torch.zeros_like(adj.values()), adj.shape)
                grad_w = torch.sparse.sampled_addmm(pattern, grad, x.T, beta=0.0).values()
            if ctx.needs_input_grad[1]:
                grad_x = adj.t() @ grad
        return grad_w, grad_x, None, None


def csr_propagate(edge_index: Tensor, weight: Tensor, x: Tensor) -> Tensor:
    """Sum aggregation ``out_i = sum_j w_ji x_j`` over the edges j -> i (what GCNConv's
    propagate computes with ``normalize=False``) by a CSR sparse matmul, with a backward that
    stays O(E) in the edge weights. ``edge_index`` sorted by target, then source
    (:func:`sort_by_target`); (E,) ``weight``; (n, f) ``x`` -> (n, f)."""
    return _CSRPropagate.apply(weight, x, edge_index, x.shape[0])


def sort_by_target(edge_index: Tensor, *edge_attrs: Tensor) -> tuple[Tensor, ...]:
    """Sort edges by target, then source (the order CSR adjacencies need); attrs follow.
    Already sorted edges (the training graph's) come back as they are."""
    if edge_index.numel() == 0:
        return (edge_index, *edge_attrs)
    n = int(edge_index.max()) + 1
    key = edge_index[1] * n + edge_index[0]
    if bool((key[1:] >= key[:-1]).all()):
        return (edge_index, *edge_attrs)
    out = sort_edge_index(edge_index, list(edge_attrs), num_nodes=n, sort_by_row=False)
    return (out[0], *out[1])


def edge_sq_dist(xhat: Tensor, edge_index: Tensor) -> Tensor:
    """||xhat_i - xhat_j||^2 on every edge (:func:`sq_dist`, by a sampled matmul): (E,); exactly 0
    on self-loops.

    Computed as ||a||^2 + ||b||^2 - 2 <a, b> with the inner products of a sampled sparse
    matmul (SDDMM) on the edge pattern: an order of magnitude faster on CPU than gathering
    two (E, a) matrices, and differentiable. ``edge_index`` must be sorted by target, then
    source (:func:`sort_by_target`).
    """
    src, dst = edge_index
    pattern = csr_adjacency(edge_index, torch.zeros(src.numel(), dtype=xhat.dtype, device=xhat.device), xhat.shape[0])
    ip = torch.sparse.sampled_addmm(pattern, xhat, xhat.T, beta=0.0).values()
    sq = xhat.pow(2).sum(1)
    d2 = (sq[src] + sq[dst] - 2 * ip).clamp_min(0)
    return torch.where(src == dst, torch.zeros_like(d2), d2)


def auto_sigma2(xhat: Tensor, edge_index: Tensor, d2: Tensor | None = None) -> Tensor:
    """Eq. 3's data-driven bandwidth: sigma^2 = mean squared distance over the non-self
    edges (AGH/SGH practice); detached, never below 1e-8."""
    off = edge_index[0] != edge_index[1]
    if not off.any():
        return torch.ones((), dtype=xhat.dtype, device=xhat.device)
    if d2 is None:
        d2 = sq_dist(xhat, edge_index[0], edge_index[1])
    return d2.detach()[off].mean().clamp_min(1e-8)


#: below this argument exp(x) < 1.7e-38 (from about -87.3 on, float32 results are denormal, then 0)
_EXP_FLOOR = -87.0


def gaussian_kernel(d2: Tensor, sigma2: Tensor | float) -> Tensor:
    """Eq. 3's ``exp(-d2 / (2 sigma^2))``, set to exactly 0 where the argument is below
    -87 (where the result is under 1.7e-38 anyway). CPU ``exp`` takes a slow scalar path on
    arguments that underflow (32 ms against 1.8 ms for a million, one thread, measured), and
    the faithful mode's sigma = 1 on raw features puts nearly every pair there."""
    arg = d2 * (-0.5 / sigma2)
    return torch.where(arg > _EXP_FLOOR, torch.exp(arg.clamp_min(_EXP_FLOOR)), 0.0)


def fused_edge_weight(
    xhat: Tensor,
    edge_index: Tensor,
    s_a: Tensor,
    eta: float,
    sigma2: Tensor | float,
    weights: str = "fused",
    d2: Tensor | None = None,
) -> Tensor:
    """Eq. 3-5 on the given edges: ``S = S^v + eta S^a`` with
    ``S^v_ij = exp(-||xhat_i - xhat_j||^2 / (2 sigma^2))``.

    ``weights='visual'`` keeps S^v (only-Sv), ``'aux'`` keeps S^a with 1 on self-loops
    (only-Sa). Differentiable in ``xhat``.

    Args:
        xhat: (n, a) attentive features. edge_index: (2, E). s_a: (E,) S^a per edge.
        d2: optional precomputed :func:`edge_sq_dist`.
    Returns:
        (E,) non-negative edge weights.
    """
    src, dst = edge_index
    if weights == "aux":
        return torch.where(src == dst, torch.ones_like(s_a), s_a)
    if d2 is None:  # any edge order; the model passes the fast edge_sq_dist
        d2 = sq_dist(xhat, src, dst)
    s_v = gaussian_kernel(d2, sigma2)
    if weights == "visual":
        return s_v
    return s_v + eta * s_a


def dense_fused_weight(xhat_a: Tensor, xhat_b: Tensor, aux_unit_a: Tensor, aux_unit_b: Tensor, eta: float,
                       sigma2: Tensor | float, weights: str = "fused", same: bool = False) -> Tensor:
    """Eq. 3-5 between every node of one set and every node of another: the dense form of
    :func:`fused_edge_weight` (same weights on the pairs both see).

    Used by the faithful mode's in-batch graph, the reconstruction targets (Eq. 9) and the
    ``neighbours`` encoding (new items against the training nodes).

    Args:
        xhat_a, xhat_b: (m, a), (n, a) attentive features. aux_unit_a, aux_unit_b: (m, c),
            (n, c) unit aux rows.
        eta, sigma2, weights: as :func:`fused_edge_weight`.
        same: the two sets are one batch (all pairs of it): the diagonal is a node's
            self-loop (S^v_ii = 1 exactly; with ``weights='aux'``, S_ii = 1).
    Returns:
        (m, n) non-negative weights, differentiable in ``xhat``.
    """
    s_a = aux_similarity(aux_unit_a, aux_unit_b)
    if weights == "aux":
        return s_a.fill_diagonal_(1.0) if same else s_a
    d2 = dense_sq_dist(xhat_a, xhat_b)
    if same:  # in place: each op here is a pass over (n, n), the faithful mode's main cost
        d2.fill_diagonal_(0.0)
    s_v = gaussian_kernel(d2, sigma2)
    if weights == "visual":
        return s_v
    return torch.add(s_v, s_a, alpha=eta)  # not in place: exp's backward needs s_v


def normalize_dense(s: Tensor, how: str = "gcn") -> Tensor:
    """:func:`normalize_edge_weight` on a dense (n, n) graph with its self-loops on the
    diagonal: D^-1/2 S D^-1/2 (``gcn``) or D^-1 S (``row``); degrees are row sums, zero ones
    by :func:`safe_degree`."""
    deg = safe_degree(s.sum(1))
    if how == "row":
        return s / deg[:, None]
    inv = deg.pow(-0.5)
    return inv[:, None] * s * inv[None, :]


def normalize_edge_weight(edge_index: Tensor, weight: Tensor, num_nodes: int, how: str = "gcn",
                          degree: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Normalised propagation weights for ``GCNConv(normalize=False)``.

    ``gcn``: D^-1/2 S D^-1/2 (Kipf; what GCNConv computes, here with the graph's own
    self-loops, so none are added twice). ``row``: D^-1 S (the release), out_i = sum_j S_ij /
    d_i x_j. Degrees are weighted in-degrees (or ``degree`` when given, e.g. the full-graph
    estimate of a sampled subgraph, or the training nodes' degrees when new items are
    encoded); a zero degree gives zero weights, never NaN (:func:`safe_degree`).

    Returns:
        (weight_normalised (E,), degree (n,)).
    """
    src, dst = edge_index
    deg = scatter(weight, dst, dim=0, dim_size=num_nodes, reduce="sum") if degree is None else degree
    safe = safe_degree(deg)
    if how == "gcn":
        inv = safe.pow(-0.5)
        return inv[src] * weight * inv[dst], deg
    return weight / safe[dst], deg


def sampling_topology(edge_index: Tensor, s_a: Tensor, num_nodes: int) -> Data:
    """The fixed kNN topology a neighbour sampler walks: no self-loops (each sampled batch adds
    one per node itself, so a node never loses its own loop to sampling), plus each node's
    full in-edge count (self-loop included) for the degree estimate of
    :func:`lagnh_pyg.training.sampled.sampled_degree`.

    Args:
        edge_index: (2, E) symmetric kNN topology, self-loops allowed (they are dropped).
        s_a: (E,) S^a per edge.
    Returns:
        ``Data(edge_index, s_a, count, num_nodes)``.
    """
    ei, s = remove_self_loops(edge_index, s_a)
    count = torch.bincount(ei[1], minlength=num_nodes) + 1
    return Data(edge_index=ei, s_a=s, count=count, num_nodes=num_nodes)


def topology_of_graph(graph: Data) -> Data:
    """:func:`sampling_topology` of a :func:`build_graph` graph."""
    return sampling_topology(graph.edge_index, graph.s_a, graph.num_nodes)


def self_mass(edge_index: Tensor, norm_weight: Tensor, num_nodes: int) -> float:
    """Mean share of a node's normalised in-weight on its own self-loop (1 = the GCN is an
    MLP; logged as a diagnostic of the graph's use, docs/method.md)."""
    src, dst = edge_index
    total = scatter(norm_weight, dst, dim=0, dim_size=num_nodes, reduce="sum")
    own = scatter(torch.where(src == dst, norm_weight, torch.zeros_like(norm_weight)), dst, dim=0,
                  dim_size=num_nodes, reduce="sum")
    ok = total > 0
    return float((own[ok] / total[ok]).mean()) if ok.any() else 1.0
