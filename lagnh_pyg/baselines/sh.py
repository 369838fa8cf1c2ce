"""SH: Spectral Hashing (Weiss, Torralba & Fergus, NIPS 2008)."""

from __future__ import annotations

import numpy as np

from .base import HashingBaseline, linear_embedding
from .pca import PCA_PARAM, principal_components


def enumerate_modes(ranges: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``bits`` one-dimensional eigenfunction modes of smallest eigenvalue (``trainSH.m``).

    On a box with side ``ranges[i]`` along PCA direction i, the 1-D Laplacian eigenfunctions
    are ``phi_m(x) = sin(pi/2 + m * omega_i * (x - min_i))`` with ``omega_i = pi / ranges[i]``
    and eigenvalue growing with ``(m * omega_i)^2`` (the paper's analytical eigenfunctions). Direction i
    contributes modes ``m = 1 .. maxMode_i - 1`` with ``maxMode_i = ceil((bits + 1) ranges[i] /
    max(ranges))``; all candidates, after the constant mode, are sorted by ``sum_i (m_i omega_i)^2``
    (stable: ties keep the enumeration order, direction by direction, as MATLAB's ``sort``)
    and the first ``bits`` non-constant ones are kept.

    Returns:
        ``(modes, frequencies)``: (bits, npca) int64 with one non-zero entry a row, and the
        (bits,) sorted ``sum_i (m_i omega_i)^2`` of those modes.
    """
    npca = len(ranges)
    max_mode = np.ceil((bits + 1) * ranges / ranges.max()).astype(np.int64)
    n_modes = int(max_mode.sum() - npca + 1)
    modes = np.zeros((n_modes, npca), dtype=np.int64)  # row 0: the constant mode
    row = 1
    for i in range(npca):
        count = max_mode[i] - 1
        modes[row : row + count, i] = np.arange(1, count + 1)
        row += count
    omega0 = np.pi / ranges
    frequencies = ((modes * omega0) ** 2).sum(axis=1)
    order = np.argsort(frequencies, kind="stable")
    chosen = order[1 : bits + 1]  # order[0] is the constant mode (frequency 0)
    return modes[chosen], frequencies[chosen]


class SH(HashingBaseline):
    """Spectral hashing: thresholded analytical eigenfunctions of the PCA box.

    Following the authors' ``trainSH.m`` / ``compressSH.m``: project on the top
    ``npca = min(bits, d)`` principal directions, fit a box ``[mn, mx]`` (min and max of each
    projection, widened by machine epsilon), choose ``bits`` modes with
    :func:`enumerate_modes`, and encode

    .. math::
        b_j(x) = \\operatorname{sgn}\\Big(\\prod_i \\sin\\big(\\tfrac{\\pi}{2} + m_{ji}\\,\\omega_i\\,(y_i - mn_i)\\big)\\Big),
        \\quad y = W^\\top (x - \\mu),\\ \\omega_i = \\pi / (mx_i - mn_i).

    Each mode has a single non-zero ``m_ji``, so the product is one sine. The projections are
    centred (``trainSH.m`` does not centre; the box moves with the mean, so the codes are the
    same). Deterministic: the seed is recorded but unused.

    Args:
        bits: code length (any; ``npca`` is capped at d).
        pca: the PCA solver (:func:`~lagnh_pyg.baselines.pca.principal_components`).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8 in {-1, +1}.
    """

    name = "sh"
    summary = "spectral hashing (Weiss, Torralba & Fergus 2008)"
    params = (PCA_PARAM,)
    fitted = ("mean", "projection", "mn", "mx", "modes")

    def _fit(self, X: np.ndarray, rng: np.random.Generator) -> None:
        npca = min(self.bits, X.shape[1], X.shape[0] - 1)
        self.mean, self.projection, _ = principal_components(X, npca, self.config["pca"])
        Y = linear_embedding(X, self.mean, self.projection).astype(np.float64)
        eps = np.finfo(np.float64).eps
        self.mn = Y.min(axis=0) - eps
        self.mx = Y.max(axis=0) + eps
        self.modes, _ = enumerate_modes(self.mx - self.mn, self.bits)
        self.fit_info["npca"] = int(npca)

    def project(self, X: np.ndarray) -> np.ndarray:
        Y = linear_embedding(X, self.mean, self.projection).astype(np.float64) - self.mn
        omega0 = np.pi / (self.mx - self.mn)
        dim = np.argmax(self.modes != 0, axis=1)  # the one direction of each mode
        omegas = self.modes[np.arange(self.bits), dim] * omega0[dim]
        return np.sin(np.pi / 2 + Y[:, dim] * omegas).astype(np.float32)
