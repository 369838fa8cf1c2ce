"""Neighbour sampling for mini-batch training on large kNN graphs.

PyG's :class:`~torch_geometric.loader.NeighborLoader` needs ``pyg-lib`` or ``torch-sparse``,
neither of which installs from PyPI without a long compile. :class:`TorchNeighborSampler` is a
pure-torch :class:`~torch_geometric.sampler.BaseSampler` that plugs into PyG's own
:class:`~torch_geometric.loader.NodeLoader`, so the loader, the collation and the slicing of
edge attributes (``edge_attr``/S^a by global edge id) are PyG's; only the sampling is ours.
:func:`make_neighbor_loader` returns PyG's ``NeighborLoader`` when the compiled extensions
are installed and ours otherwise.

Sampling follows PyG's ``directional`` semantics: for each seed (destination) node it keeps
up to ``num_neighbors[h]`` of its *incoming* edges at hop ``h`` (``-1`` = all), without
replacement, and expands the frontier to the new source nodes. The returned
:class:`~torch_geometric.sampler.SamplerOutput` lists the seed nodes first, then each hop's
new nodes, with global edge ids in ``edge``.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.sampler import BaseSampler, NodeSamplerInput, SamplerOutput

logger = logging.getLogger(__name__)


class TorchNeighborSampler(BaseSampler):
    r"""Uniform neighbour sampling without replacement, in pure torch.

    Args:
        data (torch_geometric.data.Data): the graph (``edge_index`` source-to-target).
        num_neighbors (list[int]): neighbours sampled per node at each hop; ``-1`` = all.
        seed (int, optional): seed of the sampler's own generator (reproducible batches).

    Shapes: ``edge_index`` is ``[2, E]``; the sampler keeps a CSC copy (``2E`` int64), or, when
    the edges are already sorted by target then source (a :func:`~lagnh_pyg.graph.build_graph`
    topology), none: their source row is the CSC's and an edge's position its id (at 1M nodes
    and 34M edges, 545 MB not held and no argsort of the edges).
    """

    def __init__(self, data: Data, num_neighbors: Sequence[int], seed: int | None = None) -> None:
        if not num_neighbors:
            raise ValueError("TorchNeighborSampler needs at least one hop in 'num_neighbors'")
        if any(int(k) == 0 or int(k) < -1 for k in num_neighbors):
            raise ValueError(f"'num_neighbors' entries must be positive or -1 (all), got {list(num_neighbors)}")
        self.num_neighbors = [int(k) for k in num_neighbors]
        self.num_nodes = int(data.num_nodes)
        src, dst = data.edge_index.to(torch.long)
        # CSC layout: incoming edges of each destination node are contiguous.
        if _sorted_by_target(src, dst):  # already CSC: the positions are the ids
            self.col_src, self.edge_ids = src.contiguous(), None
        else:
            perm = torch.argsort(dst * self.num_nodes + src) if self.num_nodes < 2**31 else torch.argsort(dst, stable=True)
            self.col_src, self.edge_ids = src[perm].contiguous(), perm.contiguous()
        counts = torch.bincount(dst, minlength=self.num_nodes)
        self.colptr = torch.zeros(self.num_nodes + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=self.colptr[1:])
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self._local = torch.full((self.num_nodes,), -1, dtype=torch.long)

    @property
    def edge_permutation(self) -> None:  # our ``edge`` ids are already global
        return None

    def _sample_hop(self, frontier: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Sampled incoming edges of ``frontier``: (global edge positions in CSC, dst nodes)."""
        start = self.colptr[frontier]
        deg = self.colptr[frontier + 1] - start
        total = int(deg.sum())
        if total == 0:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        seg = torch.repeat_interleave(torch.arange(frontier.numel()), deg)
        offset = torch.arange(total) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        pos = start[seg] + offset
        if k >= 0 and bool((deg > k).any()):
            pos, seg = self._subsample(pos, seg, offset, deg, k)
        return pos, frontier[seg]

    def _subsample(self, pos: Tensor, seg: Tensor, offset: Tensor, deg: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Keep ``k`` edges per segment, uniformly without replacement (all when deg <= k)."""
        total = pos.numel()
        max_deg = int(deg.max())
        if deg.numel() * max_deg <= 4 * total:
            # kNN graphs have bounded degree: rank random keys within a padded [segments, max_deg]
            # matrix (a short per-row sort) instead of one global sort of every edge.
            keys = torch.full((deg.numel(), max_deg), 2.0)
            keys[seg, offset] = torch.rand(total, generator=self.generator)
            rank = torch.empty_like(keys, dtype=torch.long)
            rank.scatter_(1, torch.argsort(keys, dim=1), torch.arange(max_deg).expand_as(keys).contiguous())
            keep = rank[seg, offset] < k
        else:  # heavy-tailed degrees: one global sort by (segment, random key)
            key = torch.rand(total, generator=self.generator)
            order = torch.argsort(seg.to(torch.float64) + key.to(torch.float64) * 0.5)
            rank = torch.empty(total, dtype=torch.long)
            rank[order] = offset  # offsets enumerate each segment 0..deg-1 in order
            keep = rank < k
        return pos[keep], seg[keep]

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> SamplerOutput:
        seeds = index.node.to(torch.long)
        if seeds.unique().numel() != seeds.numel():
            raise ValueError("TorchNeighborSampler received repeated seed nodes in one batch")
        local = self._local
        nodes = [seeds]
        local[seeds] = torch.arange(seeds.numel())
        n_total = seeds.numel()
        rows, cols, edges = [], [], []
        num_nodes, num_edges = [seeds.numel()], []
        frontier = seeds
        try:
            for k in self.num_neighbors:
                pos, dst = self._sample_hop(frontier, k)
                src = self.col_src[pos]
                new = src[local[src] < 0].unique()
                local[new] = torch.arange(n_total, n_total + new.numel())
                n_total += new.numel()
                nodes.append(new)
                rows.append(local[src])
                cols.append(local[dst])
                edges.append(pos if self.edge_ids is None else self.edge_ids[pos])
                num_nodes.append(new.numel())
                num_edges.append(pos.numel())
                frontier = new
                if frontier.numel() == 0:
                    break
            node = torch.cat(nodes)
        finally:
            local[torch.cat(nodes)] = -1  # reset only what this batch touched
        return SamplerOutput(
            node=node,
            row=torch.cat(rows),
            col=torch.cat(cols),
            edge=torch.cat(edges),
            num_sampled_nodes=num_nodes,
            num_sampled_edges=num_edges,
            metadata=(index.input_id, index.time),
        )

    def sample_from_edges(self, index, neg_sampling=None):  # pragma: no cover - not used
        raise NotImplementedError("TorchNeighborSampler samples from seed nodes only")


def _sorted_by_target(src: Tensor, dst: Tensor, block: int = 1 << 22) -> bool:
    """True when the edges ``src -> dst`` are sorted by target, then source (the CSC order
    :class:`TorchNeighborSampler` builds): then sorting them again would give them back as
    they are. Checked ``block`` edges at a time, so the check holds no E-long temporaries."""
    for s in range(0, dst.numel() - 1, block):
        e = slice(s, s + block + 1)  # overlapping by one edge: each block's first pair spans blocks
        d, r = dst[e], src[e]
        step_d, step_r = d[1:] - d[:-1], r[1:] - r[:-1]
        if bool((step_d < 0).any()) or bool(((step_d == 0) & (step_r < 0)).any()):
            return False
    return True


def has_compiled_sampler() -> bool:
    """True when pyg-lib or torch-sparse is installed (PyG's NeighborLoader works)."""
    import torch_geometric.typing as t

    return bool(t.WITH_PYG_LIB or t.WITH_TORCH_SPARSE)


def make_neighbor_loader(
    data: Data,
    num_neighbors: Sequence[int],
    input_nodes: Tensor | None = None,
    *,
    batch_size: int = 1024,
    shuffle: bool = True,
    seed: int | None = None,
    backend: str = "auto",
    **kwargs,
):
    """A PyG loader of neighbour-sampled subgraphs around seed-node mini-batches.

    Args:
        backend: ``"auto"`` (PyG's ``NeighborLoader`` when pyg-lib/torch-sparse exist, else
            ours), ``"pyg"`` or ``"torch"``.
        seed: seeds both the batch shuffling and our sampler.

    Each batch is a :class:`~torch_geometric.data.Data` with ``n_id`` (global node ids, the
    ``batch_size`` seeds first), ``e_id`` (global edge ids) and every node/edge attribute of
    ``data`` sliced accordingly.
    """
    from torch_geometric.loader import NeighborLoader, NodeLoader

    if backend not in ("auto", "pyg", "torch"):
        raise ValueError(f"unknown sampler backend {backend!r}; use auto, pyg or torch")
    use_pyg = backend == "pyg" or (backend == "auto" and has_compiled_sampler())
    gen = None
    if seed is not None:
        gen = torch.Generator()
        gen.manual_seed(seed)
    if use_pyg:
        return NeighborLoader(data, num_neighbors=list(num_neighbors), input_nodes=input_nodes,
                              batch_size=batch_size, shuffle=shuffle, generator=gen, **kwargs)
    sampler = TorchNeighborSampler(data, num_neighbors, seed=seed)
    return NodeLoader(data, node_sampler=sampler, input_nodes=input_nodes, batch_size=batch_size,
                      shuffle=shuffle, generator=gen, **kwargs)
