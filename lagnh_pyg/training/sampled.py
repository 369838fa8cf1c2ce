"""The pieces of neighbour-sampled training (``train.mode: sampled``) that are not the loop:
the degree estimate, the forward pass on a sampled subgraph, and the batch fetcher.

Each step takes a mini-batch of seed nodes, samples ``train.num_neighbors[h]`` incoming edges
per node at hop ``h`` (:func:`~lagnh_pyg.sampling.make_neighbor_loader`), gathers the features
of the sampled nodes (from the memory map when the training set is too large to load), and
runs the same update as a full-graph step (:meth:`~lagnh_pyg.training.trainer.Trainer.step`:
one discriminator update, then ``train.sampled_g_steps`` generator updates) with every loss term (Eq. 8-12,
the S^a reconstruction included) over the *seed* nodes only. The other sampled nodes only
carry messages. :class:`~lagnh_pyg.training.sources.SampledSource` drives it.

**GCN normalisation.** The edge weights S = S^v + eta S^a are recomputed from the current
attentive features in every forward pass (Eq. 3-5), so the weighted degrees
``d_i = sum_j S_ji`` that normalise the GCN (D^-1/2 S D^-1/2 or D^-1 S) cannot be precomputed
once on the full graph: they move with the parameters. Sampling every neighbour of every hop
would make them exact, but on a kNN graph that is ``~2k`` nodes per seed per hop and, for
D^-1/2 S D^-1/2, one hop more than the GCN's two (the degree of a message's *source* is
needed too). So :func:`sampled_degree` uses the full graph's fixed in-edge *counts* (known
once: the topology is fixed) and estimates each node's weighted degree from the weights the
batch does hold::

    d_i = S_ii + (count_i - 1) * mean of the sampled off-diagonal weights into i
          (or, for a node whose in-edges were not sampled -- the last hop's new nodes --
           of the sampled weights out of it; the kNN graph is symmetric, S_ij = S_ji)

When all of a node's in-edges are in the batch this *is* the full-graph degree, so with all
neighbours sampled and one batch holding every node a sampled step equals a full-graph step
(tests/test_sampled.py). A sampled batch therefore must not go to a plain full-graph forward:
its naive subgraph degrees would be wrong. With fan-outs below the kNN degree it is a ratio estimate whose
scale matches full-graph training (the naive subgraph degree would shrink the degrees of the
outer hops towards the self-loop alone, and train a different normalisation than encoding
and full-graph training use).

**Messages.** The degrees alone do not make a sampled step a full-graph one: node ``i``
receives messages along its ``m_i`` sampled in-edges only, so with a fan-out below the kNN
degree the neighbour part of its aggregate is about ``m_i / (count_i - 1)`` of the full
graph's while its self-loop keeps its full weight: the GCN trains on neighbourhoods that
weigh less than the ones it encodes with (the encoder propagates over the full graph). With
``train.sampled_unbiased`` (the default) each sampled neighbour message into ``i`` is scaled
by ``(count_i - 1) / m_i`` (:func:`sampled_message_scale`), which makes the aggregate the
full graph's in expectation over uniform sampling (exact when every in-edge is sampled). On
a validation split of the demo data (5,000 training items, detector-like aux, 32 bits),
sampled training at fan-outs [5, 3] scored 0.9024 MAP@1000 without the scale, 0.9064 with it,
0.9118 with every neighbour sampled, against the full graph's 0.9116
(docs/results/ablation-demo.md).

Memory: the loader holds only the topology (``edge_index``, ``s_a``, counts). Up to
``graph.EXACT_MAX_NODES`` training nodes the features are loaded whole; beyond, a step reads
the batch's rows from the dataset's memory map, so its peak memory is set by the batch, not
by N.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import add_self_loops, scatter

from ..graph import pair_aux_similarity, sort_by_target
from ..runtime import drop_mapped_pages

logger = logging.getLogger(__name__)


# -- the forward pass ----------------------------------------------------------------------------
def sampled_in_edges(edge_index: Tensor, num_nodes: int) -> Tensor:
    """(n,) float32: how many off-diagonal in-edges of each node a sampled subgraph holds (the
    ``m_i`` of :func:`sampled_degree` and :func:`sampled_message_scale`)."""
    src, dst = edge_index
    return scatter((src != dst).to(torch.float32), dst, dim=0, dim_size=num_nodes, reduce="sum")


def sampled_degree(edge_index: Tensor, weight: Tensor, count: Tensor, num_nodes: int,
                   m_in: Tensor | None = None) -> Tensor:
    """Estimated full-graph weighted in-degree of each node of a sampled subgraph.

    Exact for a node whose ``count_i - 1`` off-diagonal in-edges are all in ``edge_index``;
    otherwise ``S_ii + (count_i - 1) * mean sampled off-diagonal weight`` (into the node if it
    has any, else out of it). See the module docstring for why.

    Args:
        edge_index: (2, E) with one self-loop per node. weight: (E,) S on those edges.
        count: (n,) full-graph in-edge count of each node, self-loop included.
        m_in: :func:`sampled_in_edges` of ``edge_index`` when the caller has it already.
    Returns:
        (n,) degrees (differentiable in ``weight``).
    """
    src, dst = edge_index
    loop = src == dst
    zero = torch.zeros_like(weight)
    one = torch.ones_like(weight)
    deg = scatter(weight, dst, dim=0, dim_size=num_nodes, reduce="sum")
    self_w = scatter(torch.where(loop, weight, zero), dst, dim=0, dim_size=num_nodes, reduce="sum")
    off = torch.where(loop, zero, weight)
    m_in = (sampled_in_edges(edge_index, num_nodes) if m_in is None else m_in).to(weight.dtype)
    sum_in = deg - self_w
    m_out = scatter(torch.where(loop, zero, one), src, dim=0, dim_size=num_nodes, reduce="sum")
    sum_out = scatter(off, src, dim=0, dim_size=num_nodes, reduce="sum")
    missing = (count.to(weight.dtype) - 1) - m_in
    mean_in = sum_in / m_in.clamp_min(1)
    mean_out = sum_out / m_out.clamp_min(1)
    mean = torch.where(m_in > 0, mean_in, mean_out)
    return torch.where(missing > 0, deg + missing * mean, deg)


def sampled_message_scale(edge_index: Tensor, count: Tensor, num_nodes: int, m_in: Tensor | None = None) -> Tensor:
    """Per-edge factor that scales the sampled neighbour messages into a node up to their
    full-graph expectation: ``(count_i - 1) / m_i`` on each of the ``m_i`` sampled
    off-diagonal in-edges of node ``i``, 1 on self-loops and on a node whose in-edges are all
    sampled. See the module docstring.

    Args:
        edge_index: (2, E) with one self-loop per node. count: (n,) full-graph in-edge count
            of each node, self-loop included. m_in: :func:`sampled_in_edges` of
            ``edge_index`` when the caller has it already.
    Returns:
        (E,) factors (no gradient: they depend on the topology only).
    """
    src, dst = edge_index
    loop = src == dst
    if m_in is None:
        m_in = sampled_in_edges(edge_index, num_nodes)
    node = ((count.to(torch.float32) - 1) / m_in.clamp_min(1)).clamp_min(1)
    return torch.where(loop, torch.ones_like(m_in[dst]), node[dst])


def sampled_forward(model, x: Tensor, aux: Tensor, edge_index: Tensor, s_a: Tensor, count: Tensor,
                    rows: tuple[int, int] | None = None, unbiased: bool = True) -> dict[str, Tensor]:
    """:meth:`LAGNH.forward <lagnh_pyg.nn.LAGNH.forward>` on a sampled subgraph, with the
    degrees of :func:`sampled_degree` in the GCN normalisation and, with ``unbiased``
    (``train.sampled_unbiased``), the neighbour messages scaled by :func:`sampled_message_scale`.

    Shapes: ``x`` (n, d), ``aux`` (n, c), ``edge_index`` (2, E) with one self-loop per node,
    ``s_a`` (E,), ``count`` (n,). ``rows``: :func:`gcn_rows` (the GCN computed only where
    the seeds' codes need it). Returns ``z`` (n, k; ``rows[1]`` rows with ``rows``),
    ``z1``, ``xhat``, ``edge_index``, ``edge_weight`` (normalised), ``degree``.
    """
    # the count of each node travels with its row; the model sorts the edges by target itself
    fns = _SampledNormalisation(count)
    return model(x, aux, edge_index, s_a, degree_fn=fns.degree, rows=rows, edge_scale=fns.scale if unbiased else None)


class _SampledNormalisation:
    """The ``degree_fn`` and ``edge_scale`` arguments of :meth:`LAGNH.weighted_graph` for a
    sampled subgraph; both need each node's sampled in-edge count, counted once a graph."""

    def __init__(self, count: Tensor) -> None:
        self.count = count
        self._graph: tuple[Tensor, int] | None = None
        self._m_in: Tensor | None = None

    def _in_edges(self, edge_index: Tensor, n: int) -> Tensor:
        if self._graph is None or self._graph[0] is not edge_index or self._graph[1] != n:
            self._graph, self._m_in = (edge_index, n), sampled_in_edges(edge_index, n)
        return self._m_in

    def degree(self, edge_index: Tensor, weight: Tensor, n: int) -> Tensor:
        return sampled_degree(edge_index, weight, self.count, n, self._in_edges(edge_index, n))

    def scale(self, edge_index: Tensor, n: int) -> Tensor:
        return sampled_message_scale(edge_index, self.count, n, self._in_edges(edge_index, n))


def gcn_rows(num_sampled_nodes: list[int], n: int) -> tuple[int, int]:
    """The nodes of a sampled batch (seeds first, then each hop's new nodes) whose GCN
    outputs the seeds' codes use: layer 1 on the seeds and the first hop's nodes (they send
    the seeds their messages), layer 2 on the seeds."""
    return min(n, sum(num_sampled_nodes[:2])), num_sampled_nodes[0]


class SampledModule(nn.Module):
    """``sampled_forward`` as a module, so that DDP can wrap it (DDP hooks the wrapper's
    ``forward``); it shares its parameters with ``model``."""

    def __init__(self, model: nn.Module, unbiased: bool = True) -> None:
        super().__init__()
        self.model = model
        self.unbiased = unbiased

    def forward(self, x: Tensor, aux: Tensor, edge_index: Tensor, s_a: Tensor, count: Tensor,
                rows: tuple[int, int] | None = None) -> dict[str, Tensor]:
        return self.codes(self.weighted_graph(x, aux, edge_index, s_a, count), rows)

    def weighted_graph(self, x: Tensor, aux: Tensor, edge_index: Tensor, s_a: Tensor, count: Tensor) -> dict[str, Tensor]:
        """:meth:`LAGNH.weighted_graph <lagnh_pyg.nn.LAGNH.weighted_graph>` with the degrees of
        :func:`sampled_degree` and the message scale of :func:`sampled_message_scale` (the
        forward pass before the GCN)."""
        fns = _SampledNormalisation(count)
        return self.model.weighted_graph(x, aux, edge_index, s_a, fns.degree, fns.scale if self.unbiased else None)

    def codes(self, g: dict[str, Tensor], rows: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """The GCN and the classifier on a :meth:`weighted_graph`."""
        out = self.model.codes(g, rows)
        # the classifier (Eq. 11) runs here, inside the wrapped forward, so that DDP sees every
        # parameter in this pass's graph; the semantic loss uses these logits (run once)
        out["logits"] = self.model.classify(out["z"])
        return out


# -- batches ---------------------------------------------------------------------------------------
class BatchFetcher:
    """Turns a loader batch (``n_id``, local ``edge_index``, ``s_a``, ``count``) into the
    model's input: features/aux of the batch's nodes read from row arrays (memory maps
    allowed), one self-loop per node (S^a_ii as :func:`~lagnh_pyg.graph.build_graph` sets
    it), the edges sorted by target once (not in each of the step's forward passes),
    ``rows`` (:func:`gcn_rows`), everything moved to ``device``.

    Args:
        features: (M, d) array indexable by sorted int64 rows (np.memmap, ndarray) or a
            torch tensor.
        aux: (N, c) aux semantics of the graph's nodes (array or tensor), indexed by node.
        rows: optional (N,) map from graph node to row of ``features`` (the training split's
            dataset rows); None: node i is row i.
        device: torch device.
        target: optional (N, c') reconstruction target rows by node (``loss.reconstruct: Sd``,
            the graph's ``target_unit``): the batch carries them as ``target_unit``.
    """

    def __init__(self, features, aux, rows: np.ndarray | None = None, device: str | torch.device = "cpu",
                 target: Tensor | None = None) -> None:
        self.features, self.aux, self.rows, self.target = features, aux, rows, target
        self.device = torch.device(device)

    @staticmethod
    def _take(arr, nodes: np.ndarray, rows: np.ndarray | None = None) -> Tensor:
        if isinstance(arr, Tensor):
            return arr[torch.from_numpy(nodes)].to(torch.float32)
        rows = nodes if rows is None else rows[nodes]
        order = np.argsort(rows, kind="stable")  # sequential reads from the memory map
        out = np.empty((len(rows), arr.shape[1]), dtype=np.float32)
        out[order] = arr[rows[order]]
        return torch.from_numpy(out)

    def __call__(self, batch: Data) -> Data:
        nodes = batch.n_id.numpy()
        n = len(nodes)
        x = self._take(self.features, nodes, self.rows).to(self.device, non_blocking=True)
        aux = self._take(self.aux, nodes).to(self.device, non_blocking=True)
        au = torch.nn.functional.normalize(aux, dim=1)
        # one self-loop per node, appended after the sampled edges, carrying S^a_ii
        ei, s_a = add_self_loops(batch.edge_index.to(self.device), batch.s_a.to(self.device, torch.float32),
                                 fill_value=pair_aux_similarity(au, au), num_nodes=n)
        ei, s_a = sort_by_target(ei, s_a)
        rows = gcn_rows(list(batch.num_sampled_nodes), n) if "num_sampled_nodes" in batch else None
        out = Data(x=x, aux=aux, aux_unit=au, edge_index=ei, s_a=s_a, count=batch.count.to(self.device),
                   batch_size=int(batch.batch_size), n_id=batch.n_id, num_nodes=n, rows=rows)
        if self.target is not None:  # only the seeds' rows are read (the losses' nodes)
            out.target_unit = self._take(self.target, nodes[: int(batch.batch_size)]).to(self.device)
        return out


def seeds_only(out: Mapping[str, Tensor], b: int) -> dict[str, Tensor]:
    """The rows of the ``b`` seed nodes of a sampled forward's node outputs."""
    return {k: (v[:b] if k in ("z", "z1", "xhat", "logits") else v) for k, v in out.items()}


# -- the run's statistics ------------------------------------------------------------------------------
def feature_stats(features, rows: np.ndarray, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Mean and std of the training rows, read from the memory map in chunks (float64 sums)."""
    s1 = np.zeros(features.shape[1], np.float64)
    s2 = np.zeros(features.shape[1], np.float64)
    for s in range(0, len(rows), chunk):
        block = np.asarray(features[rows[s : s + chunk]], dtype=np.float64)
        s1 += block.sum(0)
        s2 += (block * block).sum(0)
    drop_mapped_pages(features)  # read once, in full: its pages need not stay in this process
    n = len(rows)
    mean = s1 / n
    var = np.maximum(s2 - n * mean * mean, 0) / max(n - 1, 1)  # unbiased, as torch.std
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()
