"""ITQ: PCA followed by iterative quantisation (Gong, Lazebnik, Gordo & Perronnin, TPAMI 2013)."""

from __future__ import annotations

import numpy as np

from ..codes import itq_rotation
from .base import HashingBaseline, Param, linear_embedding
from .pca import PCA_PARAM, check_pca_bits, principal_components


class ITQ(HashingBaseline):
    """Iterative quantisation: rotate the PCA projections to minimise the quantisation loss.

    With ``V = (X - mu) W`` the centred training data projected on the top-``bits``
    principal directions, ITQ minimises the quantisation loss

    .. math::
        Q(B, R) = \\lVert B - V R \\rVert_F^2, \\quad B \\in \\{-1, 1\\}^{n \\times c},\\ R^\\top R = I,

    alternating ``B = sgn(V R)`` and the orthogonal Procrustes step ``R = \\hat{S} S^\\top``
    from the SVD ``B^\\top V = S \\Omega \\hat{S}^\\top``, starting from a random orthogonal R
    (the authors' ``ITQ.m``). Neither step can increase Q, so the recorded
    ``quantization_loss`` (``Q / n`` after each B-step: at the initial R and after each of
    the ``iterations`` rotation updates) never increases. Codes: ``sgn((x - mu) W R)``.

    Args:
        bits: code length, at most the feature dimension.
        seed: seed of the initial rotation.
        iterations: rotation updates (the paper: 50).
        pca: the PCA solver (:func:`~lagnh_pyg.baselines.pca.principal_components`).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8 in {-1, +1}.
    """

    name = "itq"
    summary = "PCA + iterative quantisation (Gong et al. 2013)"
    params = (
        Param("iterations", 50, "int", "rotation updates", minimum=0),
        PCA_PARAM,
    )
    fitted = ("mean", "projection", "rotation", "quantization_loss")

    def _check_fit(self, X: np.ndarray) -> None:
        check_pca_bits(self.name, self.bits, X)

    def _fit(self, X: np.ndarray, rng: np.random.Generator) -> None:
        self.mean, pcs, _ = principal_components(X, self.bits, self.config["pca"])
        V = linear_embedding(X, self.mean, pcs).astype(np.float64)
        R, losses = itq_rotation(V, self.config["iterations"], rng)
        self.rotation = R
        self.projection = (pcs.astype(np.float64) @ R).astype(np.float32)
        self.quantization_loss = np.asarray(losses)
        self.fit_info["quantization_loss_first"] = losses[0]
        self.fit_info["quantization_loss_last"] = losses[-1]

    def project(self, X: np.ndarray) -> np.ndarray:
        return linear_embedding(X, self.mean, self.projection)
