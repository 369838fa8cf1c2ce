"""SKLSH: shift-invariant kernel LSH (Raginsky & Lazebnik, NIPS 2009)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import HashingBaseline, Param, linear_embedding

# Random pairs of training items used to estimate the median squared distance (gamma=auto).
BANDWIDTH_PAIRS = 4096


def median_squared_distance(X: np.ndarray, rng: np.random.Generator, pairs: int = BANDWIDTH_PAIRS) -> float:
    """Median of ``||x_i - x_j||^2`` over random pairs ``i != j`` of rows of ``X``."""
    n = len(X)
    i = rng.integers(0, n, size=pairs)
    j = (i + rng.integers(1, n, size=pairs)) % n  # j != i
    diff = X[i] - X[j]
    d2 = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    return float(np.median(d2))


class SKLSH(HashingBaseline):
    """Binary codes from random Fourier features of a Gaussian kernel, randomly thresholded.

    For the kernel ``K(x, y) = exp(-gamma ||x - y||^2 / 2)``:

    .. math::
        b_j(x) = \\operatorname{sgn}\\big(\\cos(w_j^\\top (x - \\mu) + c_j) + t_j\\big),
        \\quad w_j \\sim N(0, \\gamma I_d),\\ c_j \\sim U[0, 2\\pi],\\ t_j \\sim U[-1, 1].

    The expected normalised Hamming distance is a monotone function of ``K(x, y)``, so ``gamma``
    sets the scale at which codes separate. ``gamma=auto`` takes ``1 / median ||x_i - x_j||^2``
    over random training pairs (the kernel is ``e^{-1/2}`` at the median distance). Centring by
    ``mu`` leaves the distribution of the codes unchanged (``c_j`` is uniform) and keeps the
    phases small in float32.

    Args:
        bits: code length. seed: seed of ``w``, ``c``, ``t`` and of the bandwidth pairs.
        gamma: kernel precision, or ``auto``.

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8 in {-1, +1}.
    """

    name = "sklsh"
    summary = "shift-invariant kernel LSH (Raginsky & Lazebnik 2009)"
    params = (
        Param("gamma", "auto", "float|auto", "kernel precision (auto: 1/median sq. distance)",
              positive=True),
    )
    fitted = ("mean", "projection", "phase", "threshold", "gamma")

    def _fit(self, X: np.ndarray, rng: np.random.Generator) -> None:
        gamma = self.config["gamma"]
        if gamma == "auto":
            d2 = median_squared_distance(X, rng)
            if d2 <= 0:
                raise InputError("sklsh cannot set gamma=auto: the sampled training features are identical; pass --set gamma=VALUE")
            gamma = 1.0 / d2
        self.gamma = np.float64(gamma)
        self.mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.projection = (np.sqrt(gamma) * rng.standard_normal((X.shape[1], self.bits))).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=self.bits).astype(np.float32)
        self.threshold = rng.uniform(-1, 1, size=self.bits).astype(np.float32)
        self.fit_info["gamma"] = float(gamma)

    def project(self, X: np.ndarray) -> np.ndarray:
        Z = linear_embedding(X, self.mean, self.projection)
        Z += self.phase
        np.cos(Z, out=Z)
        Z += self.threshold
        return Z
