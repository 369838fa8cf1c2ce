"""LSH: sign random projections (Charikar 2002; Gionis, Indyk & Motwani 1999)."""

from __future__ import annotations

import numpy as np

from .base import HashingBaseline, linear_embedding


class LSH(HashingBaseline):
    """Locality-sensitive hashing by random hyperplanes.

    .. math::
        b_j(x) = \\operatorname{sgn}\\big(w_j^\\top (x - \\mu)\\big), \\qquad w_j \\sim N(0, I_d),

    with ``mu`` the mean of the training features (the non-negative deep features are
    centred, as in the ITQ authors' comparison code, so hyperplanes pass through the data).
    The collision probability of a bit is ``1 - angle(x, y) / pi``.

    Args:
        bits: code length. seed: seed of the random directions.

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8 in {-1, +1}.
    """

    name = "lsh"
    summary = "sign random projections of centred features (Charikar 2002)"
    fitted = ("mean", "projection")

    def _fit(self, X: np.ndarray, rng: np.random.Generator) -> None:
        self.mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.projection = rng.standard_normal((X.shape[1], self.bits), dtype=np.float32)

    def project(self, X: np.ndarray) -> np.ndarray:
        return linear_embedding(X, self.mean, self.projection)
