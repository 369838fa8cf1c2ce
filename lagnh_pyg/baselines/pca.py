"""Principal components of the training features, shared by PCAH, ITQ and SH."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import Param, fix_column_signs

PCA_SOLVERS = ("auto", "exact", "randomized")

# "auto" solves exactly up to this dimension (float64 covariance, LAPACK syevr: a fraction of
# a second) and by randomized subspace iteration above it: on 4,096-d fc7-sized features the
# dense eigensolver took 8-40 s on two shared cores, the iteration (GEMMs only) about 1-3 s.
EXACT_MAX_DIM = 1024
POWER_ITERATIONS = 4

# The --set parameter of the PCA-based methods (PCAH, ITQ, SH).
PCA_PARAM = Param("pca", "auto", "choice", f"exact|randomized PCA (auto: exact up to {EXACT_MAX_DIM}-d)",
                  choices=PCA_SOLVERS)


def principal_components(
    X: np.ndarray, k: int, solver: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` principal directions of the rows of ``X``.

    The eigenvectors of the sample covariance ``C = (X - mean)^T (X - mean) / (n - 1)`` with
    the ``k`` largest eigenvalues, sorted by decreasing eigenvalue, each signed so that its
    entry of largest magnitude is positive.

    ``solver="exact"`` decomposes C (LAPACK ``syevr`` on the top-k subset; float64 up to
    ``EXACT_MAX_DIM``, float32 above). ``"randomized"`` runs subspace iteration (Halko,
    Martinsson & Tropp 2011, Alg. 4.4) on ``X - mean`` with ``2k`` (at least ``k + 16``)
    columns, ``POWER_ITERATIONS`` passes and a fixed start (seed 0, so PCA-based methods stay
    seed-independent), then Rayleigh-Ritz; on fc7-like features its top-64 eigenvalues
    matched the exact ones to 1e-7 relative and the directions to |cos| > 0.99999.
    ``"auto"`` is exact up to ``EXACT_MAX_DIM`` dimensions, randomized above.

    Args:
        X: (n, d) float32 training features.
        k: number of components, ``1 <= k <= d``.
        solver: ``auto``, ``exact`` or ``randomized``.

    Returns:
        ``(mean, components, eigenvalues)``: (d,) float32, (d, k) float32, (k,) float64.
    """
    import scipy.linalg

    n, d = X.shape
    if not 1 <= k <= d:
        raise InputError(f"cannot take {k} principal components of {d}-d features")
    if solver not in PCA_SOLVERS:
        raise InputError(f"PCA solver must be one of {', '.join(PCA_SOLVERS)}, got {solver!r}")
    if solver == "auto":
        solver = "exact" if d <= EXACT_MAX_DIM else "randomized"
    width = min(d, max(2 * k, k + 16))
    if solver == "randomized" and width >= d // 2:  # no cheaper than the exact solver
        solver = "exact"
    mean = X.mean(axis=0, dtype=np.float64)
    dtype = np.float64 if (solver == "exact" and d <= EXACT_MAX_DIM) else np.float32
    Xc = X.astype(dtype, copy=True)
    Xc -= mean.astype(dtype)
    if solver == "exact":
        cov = Xc.T @ Xc
        cov /= max(n - 1, 1)
        values, vectors = scipy.linalg.eigh(cov, subset_by_index=[d - k, d - 1], driver="evr")
    else:
        Q = np.random.default_rng(0).standard_normal((d, width), dtype=np.float32)
        for _ in range(POWER_ITERATIONS + 1):
            Q, _ = scipy.linalg.qr(Xc.T @ (Xc @ Q), mode="economic", overwrite_a=True, check_finite=False)
        XQ = (Xc @ Q).astype(np.float64)
        ritz_values, ritz_vectors = np.linalg.eigh(XQ.T @ XQ / max(n - 1, 1))
        values, vectors = ritz_values[-k:], Q.astype(np.float64) @ ritz_vectors[:, -k:]
    del Xc
    order = np.argsort(-values, kind="stable")
    components = fix_column_signs(np.asarray(vectors, dtype=np.float64)[:, order])
    return mean.astype(np.float32), components.astype(np.float32), values[order].astype(np.float64)


def check_pca_bits(method: str, bits: int, X: np.ndarray) -> None:
    """PCA-based codes take one direction a bit: ``bits`` may not exceed d or n - 1."""
    n, d = X.shape
    if bits > d:
        raise InputError(
            f"{method} takes one principal direction per bit, so --bits {bits} cannot exceed the "
            f"feature dimension {d} (n_features={d}); choose --bits <= {d} (or lsh, sklsh, sh, sgh)"
        )
    if bits > n - 1:
        raise InputError(
            f"{method} with --bits {bits} needs more than {bits} training items to estimate "
            f"{bits} principal directions; the train split has {n}"
        )
