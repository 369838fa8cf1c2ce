"""Cross-modal attention (Eq. 1-2): denoise deep features with auxiliary semantics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KEY_SOURCES = ("anchors", "categories", "batch", "none")


class CrossModalAttention(nn.Module):
    r"""Eq. 1-2 of LAGNH.

    .. math::
        \tilde x_i = W_x x_i + b_x,\quad \tilde y_j = W_y y_j + b_y,\quad
        s_{ij} = \max(0, \cos(\tilde x_i, \tilde y_j)),\quad
        a_{ij} = s_{ij} / \lVert s_{i\cdot} \rVert_2,\quad
        \hat x_i = \tilde x_i + \sum_j a_{ij} \tilde y_j

    (row L2 normalisation, not softmax, as released; ``norm='l1'`` divides by the row sum
    instead, a convex mixture of the keys whose scale does not grow with their number). The keys :math:`y_j` come from:

    * ``batch``: the aux vectors of the items in the same batch (the release; a code then
      depends on its batch-mates);
    * ``anchors``: a fixed memory of training aux vectors (set by :meth:`set_anchors`);
    * ``categories``: the c one-hot category vectors;
    * ``none``: no attention, :math:`\hat x_i = \tilde x_i` (the no-att ablation).

    With ``self_key=True`` (anchors/categories) the item's own aux vector is one more key,
    which keeps the release's property that an item attends to its own tags while staying
    batch-independent.

    Args:
        feature_dim: d. aux_dim: c. dim: width of :math:`W_x, W_y` (512).
        keys: one of ``anchors``, ``categories``, ``batch``, ``none``.
        num_anchors: size of the anchor memory (``keys='anchors'``).
        self_key: add the item's own aux as a key.
        norm: ``l2`` (Eq. 2) or ``l1``.

    Shapes: ``x`` (n, d), ``aux`` (n, c) -> (n, dim).
    """

    def __init__(self, feature_dim: int, aux_dim: int, dim: int = 512, keys: str = "anchors",
                 num_anchors: int = 1024, self_key: bool = False, norm: str = "l2") -> None:
        super().__init__()
        if keys not in KEY_SOURCES:
            raise ValueError(f"CrossModalAttention: unknown key source {keys!r}; use one of {KEY_SOURCES}")
        if norm not in ("l2", "l1"):
            raise ValueError(f"CrossModalAttention: unknown normalisation {norm!r}; use 'l2' or 'l1'")
        self.norm = norm
        self.keys, self.self_key = keys, bool(self_key) and keys in ("anchors", "categories")
        self.lin_x = nn.Linear(feature_dim, dim)
        self.lin_y = nn.Linear(aux_dim, dim) if keys != "none" else None
        if keys == "anchors":
            self.register_buffer("key_aux", torch.zeros(num_anchors, aux_dim))
        elif keys == "categories":
            self.register_buffer("key_aux", torch.eye(aux_dim))
        else:
            self.key_aux = None

    @property
    def batch_independent(self) -> bool:
        return self.keys != "batch"

    @torch.no_grad()
    def set_anchors(self, aux: Tensor) -> None:
        """Fill the anchor memory with (m, c) training aux vectors."""
        if self.keys != "anchors":
            return
        if aux.shape != self.key_aux.shape:
            raise ValueError(f"CrossModalAttention: anchors of shape {tuple(aux.shape)}, expected {tuple(self.key_aux.shape)}")
        self.key_aux.copy_(aux)

    def forward(self, x: Tensor, aux: Tensor | None = None) -> Tensor:
        xt = self.lin_x(x)
        if self.keys == "none":
            return xt
        xn = F.normalize(xt, dim=1)
        if self.keys == "batch":
            yt = self.lin_y(aux)
            s = (xn @ F.normalize(yt, dim=1).T).clamp_min(0)
            return xt + (s @ yt) / self._row_norm(s)
        yt = self.lin_y(self.key_aux)
        s = (xn @ F.normalize(yt, dim=1).T).clamp_min(0)
        if not self.self_key:
            return xt + (s @ yt) / self._row_norm(s)
        ys = self.lin_y(aux)  # (n, dim): the item's own key
        s_self = (xn * F.normalize(ys, dim=1)).sum(1, keepdim=True).clamp_min(0)
        if self.norm == "l2":
            norm = (s.pow(2).sum(1, keepdim=True) + s_self.pow(2)).sqrt()
        else:
            norm = s.sum(1, keepdim=True) + s_self
        return xt + (s @ yt + s_self * ys) / norm.clamp_min(1e-12)

    def _row_norm(self, s: Tensor) -> Tensor:
        """(n, 1) normaliser of the attention weights, applied to ``s @ y`` rather than to
        ``s`` (the same numbers, one pass fewer over the in-batch (n, n) weights)."""
        if self.norm == "l2":
            return s.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return s.sum(1, keepdim=True).clamp_min(1e-12)

    def extra_repr(self) -> str:
        return f"keys={self.keys}, self_key={self.self_key}"


