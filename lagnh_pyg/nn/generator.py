"""The generator: two GCNConv layers over the augmented semantic graph (Eq. 6-7)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

from ..graph import csr_propagate


class GCNGenerator(nn.Module):
    r"""Eq. 6-7 of LAGNH:

    .. math::
        Z^1 = \mathrm{ReLU}(\hat S\,\mathrm{dropout}(\hat X) W^1),\qquad
        Z = \hat S\,\mathrm{dropout}(Z^1) W^2

    with ``GCNConv(normalize=False, bias=False, cached=False)``: the normalised weights
    :math:`\hat S` (Kipf's or the release's row form, see
    :func:`lagnh_pyg.graph.normalize_edge_weight`) are computed by the caller in every
    forward pass, because the fused weights change with the attentive features. Xavier-normal
    init, no bias, as released.

    ``adj`` is an ``edge_index`` (2, E) with ``edge_weight`` (E,), or a ``torch.sparse_csr``
    transposed adjacency (row = target). :meth:`forward_dense` takes a dense (n, n) graph (the
    faithful mode's mini-batches) and computes the same layers as dense matmuls with the
    convolutions' own weights.

    Args:
        in_dim: width of :math:`\hat X` (512). hidden: h. bits: k. dropout: 0.5.

    Shapes: ``x`` (n, in_dim) -> ``(z1 (n, hidden), z (n, bits))``.
    """

    def __init__(self, in_dim: int, hidden: int, bits: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = GCNConv(in_dim, hidden, normalize=False, bias=False, cached=False, add_self_loops=False)
        self.conv2 = GCNConv(hidden, bits, normalize=False, bias=False, cached=False, add_self_loops=False)
        self.dropout = nn.Dropout(dropout)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_normal_(conv.lin.weight)

    def layer1(self, x: Tensor, adj: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        return torch.relu(self.conv1(self.dropout(x), adj, edge_weight))

    # Layer 1 in its two halves, for the encoder cache's layer-wise inference
    # (lagnh_pyg/training/encoder_cache.py): the transform of every node once, then the
    # aggregation of each node chunk's in-neighbourhood. Together they are exactly what
    # GCNConv.forward computes (normalize=False, no bias): lin, then propagate.
    def transform1(self, x: Tensor) -> Tensor:
        return self.conv1.lin(self.dropout(x))

    def aggregate1(self, h: Tensor, adj: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        return torch.relu(self.conv1.propagate(adj, x=h, edge_weight=edge_weight))

    def layer2(self, z1: Tensor, adj: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        return self.conv2(self.dropout(z1), adj, edge_weight)

    def forward(self, x: Tensor, adj: Tensor, edge_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z1 = self.layer1(x, adj, edge_weight)
        return z1, self.layer2(z1, adj, edge_weight)

    def forward_csr(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` on a whole graph by CSR sparse matmuls (``edge_index`` sorted by
        target, then source): each layer's transform, then :func:`~lagnh_pyg.graph.csr_propagate`,
        exactly GCNConv's ``lin`` then ``propagate``, with a backward to the edge weights
        that never forms the dense n x n gradient."""
        z1 = torch.relu(csr_propagate(edge_index, edge_weight, self.conv1.lin(self.dropout(x))))
        return z1, csr_propagate(edge_index, edge_weight, self.conv2.lin(self.dropout(z1)))

    def forward_rows(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor, rows: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Eq. 6-7 computed only where they are used: ``z1`` on the first ``rows[0]`` nodes,
        ``z`` on the first ``rows[1]`` (a sampled batch: the seeds and their sampled
        neighbours, then the seeds alone; the other nodes only send messages).

        ``edge_index`` must be sorted by target (the edges into the first r nodes are then a
        prefix) and every edge into the first ``rows[1]`` nodes must come from the first
        ``rows[0]``. Each layer propagates at the narrower of its two widths (GCNConv has no
        bias: A (X W) = (A X) W). Returns ``z1`` (rows[0], hidden), ``z`` (rows[1], bits).
        """
        r1, r0 = rows
        dst = edge_index[1]
        e1, e0 = (int(torch.searchsorted(dst, torch.tensor(r, device=dst.device))) for r in (r1, r0))
        h = self.dropout(x)
        if self.conv1.in_channels <= self.conv1.out_channels:  # aggregate, then transform
            z1 = self.conv1.lin(self.conv1.propagate(edge_index[:, :e1], x=h, edge_weight=edge_weight[:e1],
                                                     size=(x.shape[0], r1)))
        else:
            z1 = self.conv1.propagate(edge_index[:, :e1], x=self.conv1.lin(h), edge_weight=edge_weight[:e1],
                                      size=(x.shape[0], r1))
        z1 = torch.relu(z1)
        z = self.conv2.propagate(edge_index[:, :e0], x=self.conv2.lin(self.dropout(z1)), edge_weight=edge_weight[:e0],
                                 size=(r1, r0))
        return z1, z

    def forward_dense(self, x: Tensor, adj: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 6-7 on a dense normalised graph ``adj`` (n, n), row = target: ``adj @ (x W)``,
        exactly what GCNConv computes with the same weights (``conv.lin``), as dense matmuls."""
        z1 = torch.relu(adj @ self.conv1.lin(self.dropout(x)))
        return z1, adj @ self.conv2.lin(self.dropout(z1))
