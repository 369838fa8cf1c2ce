"""The LAGNH model: attention (Eq. 1-2), augmented graph (Eq. 3-5), GCN generator
(Eq. 6-7) and the semantic classifier (Eq. 11)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import uses_semantics
from ..graph import (
    auto_sigma2,
    dense_fused_weight,
    edge_sq_dist,
    fused_edge_weight,
    normalize_dense,
    normalize_edge_weight,
    sort_by_target,
)
from .attention import CrossModalAttention
from .generator import GCNGenerator

#: graphs up to this many nodes (in practice all) propagate with a CSR sparse matmul, larger
#: ones by messages. Since the CSR product has an O(E) backward (graph.csr_propagate) it beats
#: messages at every size measured: forward and backward of both layers 0.12 / 0.38 / 0.84 /
#: 2.2 s against 0.57 / 1.7 / 4.6 / 8.9 s at 5k / 12k / 25k / 50k nodes (one thread); the
#: limit was 10,000 when autograd's CSR backward formed a dense n x n gradient.
CSR_MAX_NODES = 1_000_000_000


class LAGNH(nn.Module):
    r"""Everything of LAGNH that produces the continuous codes :math:`Z`.

    Two forward passes over the same parameters:

    * :meth:`forward` — sparse: a PyG graph (``edge_index`` with self-loops, ``s_a`` per
      edge); :math:`S^v` is recomputed on the edges from the current attentive features,
      fused with :math:`\eta S^a` (Eq. 5) and normalised into GCNConv's ``edge_weight``.
    * :meth:`forward_dense` — the release's form: a dense graph over one mini-batch
      (Eq. 3-5 on all pairs), propagated by dense matmuls with the GCNConv layers' own
      weights (:meth:`GCNGenerator.forward_dense`).

    Args:
        feature_dim: d. aux_dim: c. bits: k.
        att_dim: attention width (512). hidden: GCN hidden width h. dropout: GCN dropout.
        attention: key source of :class:`CrossModalAttention`. anchors: memory size.
        self_key: the item's own aux is a key too.
        eta: Eq. 5. sigma: ``"auto"`` or a fixed bandwidth (Eq. 3).
        weights: ``fused`` | ``visual`` | ``aux``. normalization: ``gcn`` | ``row``.
        att_norm: attention weights normalised by their row's ``l2`` norm (Eq. 2, as released)
            or ``l1`` sum (a convex mixture of the keys, whose scale does not grow with their
            number).
        feature_norm: ``l2`` (unit input rows) | ``standard`` (training mean/std) | ``none``.
        decoder: add a linear decoder :math:`k \to d` (the recons-feat ablation).
        code_rotation: carry a k x k orthogonal ``code_rotation`` applied to z before the sign
            (:meth:`rotate`), fitted after training.
    """

    def __init__(self, feature_dim: int, aux_dim: int, bits: int, *, att_dim: int = 512, hidden: int = 1024,
                 dropout: float = 0.5, attention: str = "anchors", anchors: int = 1024, self_key: bool = False,
                 att_norm: str = "l2", eta: float = 1.0, sigma: float | str = "auto", weights: str = "fused",
                 normalization: str = "gcn", feature_norm: str = "l2", decoder: bool = False,
                 semantics: bool = False, semantic_visual: float = 0.5, code_rotation: bool = False) -> None:
        super().__init__()
        self.feature_dim, self.aux_dim, self.bits = feature_dim, aux_dim, bits
        self.eta, self.weights, self.normalization, self.feature_norm = float(eta), weights, normalization, feature_norm
        self.auto_sigma = sigma == "auto"
        self.attention = CrossModalAttention(feature_dim, aux_dim, att_dim, attention, anchors, self_key, att_norm)
        self.generator = GCNGenerator(att_dim, hidden, bits, dropout)
        self.classifier = nn.Linear(bits, aux_dim)  # Eq. 11: Y_hat = Z W_c + b_c
        self.decoder = nn.Linear(bits, feature_dim) if decoder else None
        self.register_buffer("sigma2", torch.tensor(1.0 if self.auto_sigma else float(sigma) ** 2))
        if feature_norm == "standard":  # per-dimension training mean and std (set_feature_stats)
            self.register_buffer("feature_mean", torch.zeros(feature_dim))
            self.register_buffer("feature_std", torch.ones(feature_dim))
        self.semantic_visual = float(semantic_visual)
        if semantics:  # the denoised semantic map, fitted at training (training/semantics.py)
            self.register_buffer("semantic_mean", torch.zeros(feature_dim))
            self.register_buffer("semantic_std", torch.ones(feature_dim))
            self.register_buffer("semantic_weight", torch.zeros(feature_dim, aux_dim))
            self.register_buffer("semantic_reliability", torch.ones(aux_dim))
        if code_rotation:  # fitted after training (training/rotation.py); identity until then
            self.register_buffer("code_rotation", torch.eye(bits))

    @classmethod
    def from_config(cls, cfg, feature_dim: int, aux_dim: int, bits: int) -> LAGNH:
        m, g = cfg.model, cfg.graph
        return cls(feature_dim, aux_dim, bits, att_dim=m.att_dim, hidden=m.hidden, dropout=m.dropout,
                   attention=m.attention, anchors=m.anchors, self_key=m.self_key, att_norm=m.att_norm,
                   eta=g.eta, sigma=g.sigma,
                   weights=g.weights, normalization=m.normalization, feature_norm=m.feature_norm,
                   decoder=cfg.loss.reconstruct == "feat", semantics=uses_semantics(cfg),
                   semantic_visual=g.semantic_visual, code_rotation=m.code_rotation == "itq")

    # -- pieces ---------------------------------------------------------------------------
    @torch.no_grad()
    def set_feature_stats(self, x: Tensor) -> None:
        """``feature_norm='standard'``: record the training features' mean and std."""
        if self.feature_norm == "standard":
            self.feature_mean.copy_(x.mean(0))
            self.feature_std.copy_(x.std(0).clamp_min(1e-6))

    def prepare(self, x: Tensor) -> Tensor:
        """Input features as the model sees them: unit rows (``l2``), standardised with the
        training statistics (``standard``), or raw (``none``)."""
        if self.feature_norm == "l2":
            return F.normalize(x, dim=1)
        if self.feature_norm == "standard":
            return (x - self.feature_mean) / self.feature_std
        return x

    @property
    def has_semantics(self) -> bool:
        return hasattr(self, "semantic_weight")

    def semantic(self, x: Tensor, aux: Tensor) -> Tensor:
        """The denoised semantics of items (unit rows, (n, d), (n, c) -> (n, c)):
        s = l2n(w l2n(P(x)) + l2n(r * y)), P the ridge map from the standardised features to
        the aux, r each aux column's reliability, w ``semantic_visual``
        (:mod:`lagnh_pyg.training.semantics` fits them)."""
        p = F.normalize(((x - self.semantic_mean) / self.semantic_std) @ self.semantic_weight, dim=1)
        return F.normalize(self.semantic_visual * p + F.normalize(aux * self.semantic_reliability, dim=1), dim=1)

    def rotate(self, z: Tensor) -> Tensor:
        """The codes' continuous values: z, or z R with a fitted ``code_rotation`` (the codes
        are their signs)."""
        r = getattr(self, "code_rotation", None)
        return z if r is None else z @ r

    def attentive_features(self, x: Tensor, aux: Tensor) -> Tensor:
        """Eq. 1-2: (n, d), (n, c) -> (n, att_dim)."""
        return self.attention(self.prepare(x), aux)

    def update_sigma2(self, xhat: Tensor, edge_index: Tensor, d2: Tensor | None = None) -> None:
        """``sigma='auto'``: set sigma^2 to the mean squared kNN-edge distance (Eq. 3)."""
        if self.auto_sigma:
            self.sigma2.copy_(auto_sigma2(xhat, edge_index, d2))

    def edge_weights(self, xhat: Tensor, edge_index: Tensor, s_a: Tensor, d2: Tensor | None = None) -> Tensor:
        """Eq. 3-5 on the edges (fused, visual or aux, as configured)."""
        return fused_edge_weight(xhat, edge_index, s_a, self.eta, self.sigma2, self.weights, d2)

    def self_weight(self, aux_unit: Tensor) -> Tensor:
        """S_ii of a node (its self-loop weight): S^v_ii = 1 (+ eta S^a_ii = eta when the
        node has aux)."""
        has_aux = (aux_unit.abs().sum(1) > 0).to(aux_unit.dtype)
        if self.weights == "fused":
            return 1.0 + self.eta * has_aux
        return torch.ones_like(has_aux)

    # -- forward passes -------------------------------------------------------------------
    def forward(self, x: Tensor, aux: Tensor, edge_index: Tensor, s_a: Tensor,
                degree_fn: Callable[[Tensor, Tensor, int], Tensor] | None = None,
                rows: tuple[int, int] | None = None,
                edge_scale: Callable[[Tensor, int], Tensor] | None = None) -> dict[str, Tensor]:
        """Sparse graph forward (Eq. 1-7).

        Shapes: ``x`` (n, d), ``aux`` (n, c), ``edge_index`` (2, E) with self-loops,
        ``s_a`` (E,). ``degree_fn(edge_index, weight, n)``, when given, replaces the degrees
        of the normalisation (a sampled subgraph's full-graph estimate,
        :mod:`lagnh_pyg.training.sampled`); ``edge_scale(edge_index, n)``, when given, a factor
        on each normalised edge weight (a sampled subgraph's neighbour messages scaled up to
        their full-graph expectation). ``rows=(r1, r0)``: compute the GCN's first layer
        on the first r1 nodes only and the codes on the first r0
        (:meth:`GCNGenerator.forward_rows`; a sampled batch, whose losses cover its seeds).
        Returns ``z`` (n, k) (r0 rows with ``rows``), ``z1`` (n, h) (r1 rows), ``xhat``
        (n, att_dim), ``edge_index`` (sorted by target), ``edge_weight`` (E,) normalised in
        that order, ``degree`` (n,).
        """
        return self.codes(self.weighted_graph(x, aux, edge_index, s_a, degree_fn, edge_scale), rows)

    def weighted_graph(self, x: Tensor, aux: Tensor, edge_index: Tensor, s_a: Tensor,
                       degree_fn: Callable[[Tensor, Tensor, int], Tensor] | None = None,
                       edge_scale: Callable[[Tensor, int], Tensor] | None = None) -> dict[str, Tensor]:
        """The part of :meth:`forward` before the GCN (Eq. 1-5: attentive features, fused and
        normalised edge weights; sigma^2 updated in training). It draws no random numbers, so
        a training step runs it once for its no-grad pass and its first generator pass
        (:meth:`~lagnh_pyg.training.Trainer.step`). Returns ``xhat``, ``edge_index`` (sorted
        by target), ``edge_weight`` (normalised), ``degree``."""
        n = x.shape[0]
        edge_index, s_a = sort_by_target(edge_index, s_a)
        xhat = self.attentive_features(x, aux)
        d2 = edge_sq_dist(xhat, edge_index) if self.weights != "aux" else None
        if self.training:
            self.update_sigma2(xhat, edge_index, d2)
        w = self.edge_weights(xhat, edge_index, s_a, d2)
        deg = None if degree_fn is None else degree_fn(edge_index, w, n)
        norm_w, deg = normalize_edge_weight(edge_index, w, n, self.normalization, deg)
        if edge_scale is not None:
            norm_w = norm_w * edge_scale(edge_index, n).to(norm_w.dtype)
        return {"xhat": xhat, "edge_index": edge_index, "edge_weight": norm_w, "degree": deg}

    def codes(self, g: dict[str, Tensor], rows: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """The GCN (Eq. 6-7, with its dropout) on a :meth:`weighted_graph`: ``g`` plus ``z``
        and ``z1`` (see :meth:`forward` for ``rows``)."""
        xhat, edge_index, norm_w = g["xhat"], g["edge_index"], g["edge_weight"]
        n = xhat.shape[0]
        if rows is not None:
            z1, z = self.generator.forward_rows(xhat, edge_index, norm_w, rows)
        elif n <= CSR_MAX_NODES:
            # GCNConv's layers on the transposed CSR adjacency (row = target): a sparse matmul
            # instead of per-edge messages, same result, 4.8x faster forward and backward on
            # CPU at 5,000 nodes (0.12 against 0.57 s, see CSR_MAX_NODES); its
            # own backward keeps the edge weights' gradient O(E) (autograd through a sparse
            # CSR matmul forms a dense n x n one: a third of a 5,000-node epoch)
            z1, z = self.generator.forward_csr(xhat, edge_index, norm_w)
        else:  # messages along the edges
            z1, z = self.generator(xhat, edge_index, norm_w)
        return {"z": z, "z1": z1, **g}

    def dense_graph(self, xhat: Tensor, aux_unit: Tensor) -> Tensor:
        """Eq. 3-5 over all pairs of a batch, normalised: (n, n) dense :math:`\\hat S`."""
        s = dense_fused_weight(xhat, xhat, aux_unit, aux_unit, self.eta, self.sigma2, self.weights, same=True)
        return normalize_dense(s, self.normalization)

    def forward_dense(self, x: Tensor, aux: Tensor) -> dict[str, Tensor]:
        """The release's per-mini-batch forward: the dense graph of :meth:`dense_graph`
        (~95% non-zero on a batch of 1024), propagated by dense matmuls (a sparse format
        would cost ~30x more here).

        Shapes: ``x`` (n, d), ``aux`` (n, c) -> ``z`` (n, k), ``z1``, ``xhat``, ``adj`` (n, n).
        """
        xhat = self.attentive_features(x, aux)
        adj = self.dense_graph(xhat, F.normalize(aux, dim=1))
        z1, z = self.generator.forward_dense(xhat, adj)
        return {"z": z, "z1": z1, "xhat": xhat, "adj": adj}

    def classify(self, z: Tensor) -> Tensor:
        """Eq. 11's semantic classifier: (n, k) -> (n, c) logits."""
        return self.classifier(z)
