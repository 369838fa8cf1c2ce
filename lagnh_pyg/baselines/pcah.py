"""PCAH: sign of centred PCA projections."""

from __future__ import annotations

import numpy as np

from .base import HashingBaseline, linear_embedding
from .pca import PCA_PARAM, check_pca_bits, principal_components


class PCAH(HashingBaseline):
    """PCA hashing: one bit per principal direction.

    .. math::
        b_j(x) = \\operatorname{sgn}\\big(v_j^\\top (x - \\mu)\\big),

    with ``v_1 .. v_bits`` the eigenvectors of the training covariance of largest eigenvalue,
    in decreasing order (see :func:`~lagnh_pyg.baselines.pca.principal_components` for the
    sign convention). Deterministic: the seed is recorded but unused.

    Args:
        bits: code length, at most the feature dimension.
        pca: the PCA solver (:func:`~lagnh_pyg.baselines.pca.principal_components`).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8 in {-1, +1}.
    """

    name = "pcah"
    summary = "sign of centred PCA projections"
    params = (PCA_PARAM,)
    fitted = ("mean", "projection", "eigenvalues")

    def _check_fit(self, X: np.ndarray) -> None:
        check_pca_bits(self.name, self.bits, X)

    def _fit(self, X: np.ndarray, rng: np.random.Generator) -> None:
        self.mean, self.projection, self.eigenvalues = principal_components(X, self.bits, self.config["pca"])

    def project(self, X: np.ndarray) -> np.ndarray:
        return linear_embedding(X, self.mean, self.projection)

