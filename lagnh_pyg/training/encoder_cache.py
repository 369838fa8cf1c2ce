"""The ``neighbours`` encoding's cache of the training nodes, by layer-wise inference over the
whole training graph in node chunks — the same at 5,000 nodes and at a million.

What the encoding needs of each training node (:class:`~lagnh_pyg.encode.LagnhEncoder`):
``xhat`` (the attentive features, Eq. 1-2), ``z1`` (the GCN's first layer over the *whole*
training graph, Eq. 6), ``degree`` (its weighted in-degree, the GCN normalisation) and
``aux_unit``. The final sigma^2 (Eq. 3, 'auto') is calibrated here too, on the whole graph.

PyG's "inference layer by layer over all neighbours" pattern, with the model's own code at
every step (:meth:`LAGNH.attentive_features`, :func:`~lagnh_pyg.graph.edge_sq_dist`,
:meth:`LAGNH.update_sigma2`, :meth:`LAGNH.edge_weights`,
:func:`~lagnh_pyg.graph.normalize_edge_weight`, :meth:`GCNGenerator.transform1` /
:meth:`aggregate1 <lagnh_pyg.nn.generator.GCNGenerator.aggregate1>`):

1. ``xhat`` node chunk by node chunk (attention is per item), features read from the
   dataset's memory map;
2. the squared distances of every edge, target chunk by target chunk, from the ``xhat`` rows
   of both ends (edges are sorted by target: a chunk's in-edges are one slice);
3. sigma^2, the fused weights, the degrees and the normalised weights over the edge vector
   (E floats: scalars per edge are cheap, rows per edge are not);
4. ``conv1.lin(xhat)`` per node chunk, then ``z1`` of each target chunk from its complete
   in-neighbourhood.

Memory: rows (features, xhat, z1) are only ever held a chunk's worth at a time, plus the
gathered rows of the chunk's neighbours; the cache goes to a store: an
:class:`~lagnh_pyg.cache_file.EncoderCacheFile` in a run directory (written by blocks, read back
memory-mapped) or :class:`MemoryCache`. With the whole graph in one chunk (up to ``CHUNK``
nodes, e.g. the demo) every call is the one a whole-graph forward makes, so the cache is
bit for bit the one :meth:`LAGNH.forward` would give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..graph import (
    csr_adjacency,
    edge_sq_dist,
    normalize_edge_weight,
    self_mass,
    sort_by_target,
    sq_dist,
    topology_of_graph,
)
from ..knn import read_rows
from ..runtime import drop_mapped_pages

logger = logging.getLogger(__name__)

CHUNK = 16384  # at most this many target nodes per chunk (and rows per block of step 1)
# a chunk gathers a row of its in-neighbours' xhat / lin(xhat) per in-edge: chunks are cut so
# that these rows stay near this many bytes (the demo's 5,000 nodes stay one chunk)
CHUNK_BYTES = 2**30
EDGE_BLOCK = 1 << 18  # edges per block of the sigma distances


class MemoryCache:
    """A cache store in memory (name -> float32 array), the interface of
    :class:`~lagnh_pyg.cache_file.EncoderCacheFile` without the file."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.arrays = {k: np.zeros(s, np.float32) for k, s in shapes.items()}

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        self.arrays[name][start : start + len(block)] = block

    def array(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def tensors(self) -> dict[str, Tensor]:
        return {k: torch.from_numpy(a) for k, a in self.arrays.items()}


def cache_shapes(model: nn.Module, n: int) -> dict[str, tuple[int, ...]]:
    """The cache's tensors for ``n`` training nodes."""
    return {"xhat": (n, model.generator.conv1.in_channels), "z1": (n, model.generator.conv1.out_channels),
            "degree": (n,), "aux_unit": (n, model.aux_dim)}


def sampling_topology_for_cache(graph):
    """:func:`~lagnh_pyg.graph.topology_of_graph` of a :func:`~lagnh_pyg.graph.build_graph`
    graph, also holding what :func:`graph_edges` needs to give the graph back: the unit aux
    rows and each node's self-loop S^a (n floats)."""
    topology = topology_of_graph(graph)
    src, dst = graph.edge_index
    topology.aux_unit, topology.loop_s_a = graph.aux_unit, graph.s_a[src == dst]  # sorted by target: node order
    return topology


def graph_edges(topology) -> tuple[Tensor, Tensor, Tensor]:
    """The training graph's ``edge_index`` (sorted by target, then source, one self-loop per
    node), ``s_a`` and ``aux_unit`` from what sampled training keeps of it: its sampling
    topology (:func:`sampling_topology_for_cache`: the graph's edges in their order without
    the self-loops, whose S^a it keeps aside). The self-loops are put back in place, not
    sorted in (a sort of 36M edges would hold three more copies of them)."""
    n = topology.num_nodes
    ei, s_a = sort_by_target(topology.edge_index, topology.s_a)  # as they are when already sorted
    e = ei.shape[1]
    nodes = torch.arange(n)
    at = torch.searchsorted(ei[1] * n + ei[0], nodes * (n + 1))  # where each node's self-loop goes
    before = torch.bincount(at, minlength=e + 1).cumsum(0)[:e]  # self-loops ahead of each edge
    new = torch.arange(e) + before
    loop = at + nodes
    out, s_out = torch.empty((2, e + n), dtype=ei.dtype), torch.empty(e + n, dtype=s_a.dtype)
    out[:, new], s_out[new] = ei, s_a
    out[:, loop] = nodes
    s_out[loop] = topology.loop_s_a
    return out, s_out, topology.aux_unit


def _local(edge_index: Tensor, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """The in-edges ``lo:hi`` of a target chunk on their own nodes: (the nodes, ascending;
    the edges renumbered, still sorted by target then source)."""
    sub = edge_index[:, lo:hi].contiguous()
    nodes = torch.unique(sub)
    return nodes, torch.searchsorted(nodes, sub)


@torch.no_grad()
def build_encoder_cache(model: nn.Module, features, aux: np.ndarray, edge_index: Tensor, s_a: Tensor,
                        aux_unit: Tensor, store, *, rows: np.ndarray | None = None, chunk: int | None = None,
                        progress: Callable[[str], None] | None = None):
    """Calibrate sigma^2 on the whole training graph and write the encoder cache to ``store``.

    Args:
        model: the trained :class:`~lagnh_pyg.nn.LAGNH` (put in eval mode).
        features: (n, d) training features, or (M, d) with ``rows`` (a memory map is fine).
        aux: (n, c) training aux. edge_index: (2, E) the training graph with one self-loop per
            node; s_a: (E,) its S^a; aux_unit: (n, c) unit aux rows (as the graph holds them).
        store: :class:`MemoryCache` or :class:`~lagnh_pyg.cache_file.EncoderCacheFile` with
            :func:`cache_shapes`.
        chunk: nodes per chunk (default: ``CHUNK``, or fewer for wide layers and dense
            graphs, see ``CHUNK_BYTES``).
        progress: called with a short message after each phase.
    Returns:
        ``store``.
    """
    model.eval()
    dev = model.sigma2.device
    n = aux.shape[0]
    if not chunk:
        width = max(model.generator.conv1.in_channels, model.generator.conv1.out_channels)
        per_node = 4 * width * max(1.0, edge_index.shape[1] / max(n, 1))  # bytes of rows per target
        chunk = max(256, min(CHUNK, int(CHUNK_BYTES / per_node)))
    edge_index, s_a = sort_by_target(edge_index.cpu(), s_a.cpu())
    for s in range(0, n, chunk):  # 1. xhat
        x = torch.from_numpy(read_rows(features, rows, s, min(n, s + chunk))).to(dev)
        a = torch.from_numpy(np.ascontiguousarray(aux[s : s + chunk], dtype=np.float32)).to(dev)
        store.write("xhat", s, model.attentive_features(x, a).cpu().numpy())
    drop_mapped_pages(features)  # read once, in full: its pages need not stay in this process
    xhat = torch.from_numpy(np.asarray(store.array("xhat")))
    if progress:
        progress("attentive features")
    bounds = torch.searchsorted(edge_index[1], torch.arange(0, n + chunk, chunk).clamp_max(n)).tolist()
    spans = [(bounds[i], bounds[i + 1], i * chunk, min(n, (i + 1) * chunk)) for i in range(len(bounds) - 1)]
    d2, d2_sigma = _edge_distances(xhat, edge_index, spans, dev)  # 2.
    if progress:
        progress("edge distances")
    ei = edge_index.to(dev)  # 3. on the model's device (no copy on a CPU)
    model.update_sigma2(xhat[:1].to(dev), ei, d2_sigma.to(dev))
    w = model.edge_weights(None, ei, s_a.to(dev), d2)
    norm_w, deg = normalize_edge_weight(ei, w, n, model.normalization)
    logger.info(f"final graph: sigma^2 {float(model.sigma2):.4g}, mean self-loop share of the normalised "
                f"graph {self_mass(ei, norm_w, n):.3f} (1.0 would make the GCN a per-node MLP)")
    del d2, d2_sigma, w, ei
    _layer1(model, xhat, edge_index, norm_w, spans, store, dev)  # 4.
    store.write("degree", 0, deg.cpu().numpy())
    store.write("aux_unit", 0, aux_unit.cpu().numpy())
    if progress:
        progress("first GCN layer")
    return store


def _edge_distances(xhat: Tensor, edge_index: Tensor, spans, dev) -> tuple[Tensor, Tensor]:
    """Squared xhat distances of every edge, two ways, as a whole-graph forward computes them:
    by the sampled matmul of the edge weights (:func:`~lagnh_pyg.graph.edge_sq_dist`) and by
    differences (what :func:`~lagnh_pyg.graph.auto_sigma2` averages for sigma^2)."""
    e = edge_index.shape[1]
    d2, d2_sigma = torch.empty(e), torch.empty(e)
    for lo, hi, _, _ in spans:
        nodes, local = _local(edge_index, lo, hi)
        xh = xhat[nodes].to(dev)
        local = local.to(dev)
        d2[lo:hi] = edge_sq_dist(xh, local).cpu()
        for b in range(0, hi - lo, EDGE_BLOCK):
            src, dst = local[:, b : b + EDGE_BLOCK]
            d2_sigma[lo + b : lo + b + len(src)] = sq_dist(xh, src, dst).cpu()
    return d2.to(dev), d2_sigma


def _layer1(model: nn.Module, xhat: Tensor, edge_index: Tensor, norm_w: Tensor, spans, store, dev) -> None:
    """``z1`` = ReLU(S_hat lin(xhat)) (Eq. 6) of every node over its whole in-neighbourhood:
    lin(xhat) of all nodes first (one node chunk at a time), then each target chunk's
    aggregation over its in-edges, as the whole-graph forward aggregates: a sparse matmul
    with the chunk's rows of the transposed CSR
    adjacency (targets x their in-neighbours; no per-edge rows of width h are formed)."""
    gen = model.generator
    n = xhat.shape[0]
    step = spans[0][3] - spans[0][2] if spans else n
    h = torch.empty((n, gen.conv1.out_channels))
    for s in range(0, n, step):
        h[s : s + step] = gen.transform1(xhat[s : s + step].to(dev)).cpu()
    drop_mapped_pages(store.array("xhat"))
    norm_w = norm_w.cpu()
    for lo, hi, t0, t1 in spans:
        nodes, local = _local(edge_index, lo, hi)
        rows = torch.stack([local[0], edge_index[1, lo:hi] - t0])  # (its column, its target's row)
        adj = csr_adjacency(rows.to(dev), norm_w[lo:hi].to(dev), (t1 - t0, len(nodes)))
        store.write("z1", t0, gen.aggregate1(h[nodes].to(dev), adj).cpu().numpy())
