"""SGH: Scalable Graph Hashing with feature transformation (Jiang & Li, IJCAI 2015)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import HashingBaseline, Param, fix_column_signs

# The target similarity: S_ij = 2 exp(-||x_i - x_j||^2 / rho) - 1. The features are centred and scaled to unit
# length (the authors' demo), so rho = 2 keeps 2 x_i^T x_j / rho in [-1, 1], where the
# feature transformation's linear approximation of exp holds.
RHO = 2.0


def unit_rows(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(X - mean)`` with each row scaled to unit L2 norm (an all-zero row stays zero)."""
    Xc = X - mean
    norms = np.linalg.norm(Xc, axis=1, keepdims=True)
    Xc /= np.maximum(norms, np.finfo(np.float32).tiny)
    return Xc


def transformed_features(Xn: np.ndarray) -> np.ndarray:
    """The feature transformation ``P(x)`` for unit-length rows; ``Q(x)`` is ``P(x)`` with its last entry negated.

    ``P(x) = [a g(x) x; b g(x); 1]`` with ``g(x) = exp(-||x||^2 / rho)``,
    ``a = sqrt(2 (e^2 - 1) / (e rho))`` and ``b = sqrt((e^2 + 1) / e)``, so that
    ``P(x_i)^T Q(x_j) = 2 g(x_i) g(x_j) [sinh(1) 2 x_i^T x_j / rho + cosh(1)] - 1``: the
    ``S_ij = 2 exp(-||x_i - x_j||^2 / rho) - 1`` with ``exp(2 x_i^T x_j / rho)`` replaced by its
    chord on [-1, 1] (exact at x_i^T x_j = +-1).

    Returns:
        (n, d + 2) float32.
    """
    e = np.e
    a, b = np.sqrt(2 * (e * e - 1) / (e * RHO)), np.sqrt((e * e + 1) / e)
    decay = np.exp(-np.einsum("ij,ij->i", Xn, Xn, dtype=np.float64) / RHO).astype(np.float32)
    P = np.empty((Xn.shape[0], Xn.shape[1] + 2), dtype=np.float32)
    np.multiply(Xn, (a * decay)[:, None], out=P[:, :-2])
    P[:, -2] = b * decay
    P[:, -1] = 1
    return P


def top_eigenvector(A: np.ndarray) -> np.ndarray:
    """The unit eigenvector of the largest eigenvalue of the symmetric matrix ``A``.

    Lanczos (ARPACK) from a fixed start vector (all ones: deterministic). One eigenpair of a
    few-hundred-square matrix costs a few dozen matrix-vector products, where LAPACK's dense
    solver reduces the whole matrix (with threaded BLAS on a busy machine: ten times slower).
    """
    import scipy.linalg
    import scipy.sparse.linalg

    try:
        _, u = scipy.sparse.linalg.eigsh(A, k=1, which="LA", v0=np.ones(len(A)), tol=0)
    except scipy.sparse.linalg.ArpackNoConvergence:
        _, u = scipy.linalg.eigh(A, subset_by_index=[len(A) - 1, len(A) - 1])
    return u[:, 0]


class SGH(HashingBaseline):
    """Scalable graph hashing: approximate the full Gaussian graph without forming it.

    Following the paper (Algorithm 1) and the authors' code (``trainSGH.m``, ``sgh_demo.py``):

    1. Centre the features and scale them to unit length.
    2. Feature transformation: with ``g(x) = exp(-||x||^2 / rho)``,
       ``P(x) = [a g(x) x; b g(x); 1]`` and ``Q(x) = [a g(x) x; b g(x); -1]``,
       ``a = sqrt(2 (e^2 - 1) / (e rho))``, ``b = sqrt((e^2 + 1) / e)``, so that
       ``P(x_i)^T Q(x_j)`` approximates ``S_ij = 2 exp(-||x_i - x_j||^2 / rho) - 1``
       (:func:`transformed_features`) and ``S = P Q^T`` is never built.
    3. Kernel features over ``m`` anchors drawn at random from the training set:
       ``K(x)_j = exp(-||x - a_j||^2 / (2 delta)) - bias_j``, with ``delta`` the mean squared
       training-anchor distance and ``bias`` the training mean (centred kernel features).
       Hash functions ``h_t(x) = sgn(K(x)^T w_t)``.
    4. Bit-wise sequential learning (Algorithm 1): ``A_1 = c K^T P Q^T K``,
       ``Z = K^T K + gamma I``; for ``t = 1..c``, ``w_t`` is the top eigenvector of
       ``A_t w = lambda Z w`` and ``A_{t+1} = A_t - K^T sgn(K w_t) sgn(K w_t)^T K`` (the residual
       of ``c S`` after the bits so far). Then ``refine_passes`` more passes over the bits in a
       random order re-learn each ``w_t`` against the residual of all the others.

    The generalised eigenproblems are solved through the Cholesky factor ``Z = L L^T``
    (``L^-1 A L^-T u = lambda u``, ``w = L^-T u``), updating ``L^-1 A L^-T`` in place.

    Args:
        bits: code length c. seed: seed of the anchors and the refinement order.
        anchors: number m of kernel anchors (the paper: 300).
        reg: the ridge ``gamma`` added to ``K^T K`` (the authors' code: 1e-6).
        refine_passes: extra passes over all bits (the authors' code: 1).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8 in {-1, +1}.
    """

    name = "sgh"
    summary = "scalable graph hashing (Jiang & Li 2015)"
    params = (
        Param("anchors", 300, "int", "kernel anchors drawn from the training set", minimum=2),
        Param("reg", 1e-6, "float", "ridge added to K^T K", minimum=0),
        Param("refine_passes", 1, "int", "extra passes re-learning each bit", minimum=0),
    )
    fitted = ("mean", "anchor_points", "delta", "kernel_bias", "weights")

    def _check_fit(self, X: np.ndarray) -> None:
        if self.config["anchors"] > X.shape[0]:
            raise InputError(
                f"sgh with anchors={self.config['anchors']} needs at least that many training items; "
                f"the train split has {X.shape[0]} (pass --set anchors=N with N <= {X.shape[0]})"
            )

    def _fit(self, X: np.ndarray, rng: np.random.Generator) -> None:
        import scipy.linalg

        n, m, c = X.shape[0], self.config["anchors"], self.bits
        self.mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        Xn = unit_rows(X, self.mean)

        # Kernel features over random anchors, centred.
        self.anchor_points = Xn[np.sort(rng.choice(n, size=m, replace=False))]
        D = self.anchor_distances(X).astype(np.float64)
        self.delta = np.float64(D.mean())
        K = np.exp(-D / (2 * self.delta))
        self.kernel_bias = K.mean(axis=0)
        K -= self.kernel_bias

        # A_1 = c K^T P Q^T K (Algorithm 1), never forming the n x n matrix P Q^T.
        KtP = K.T.astype(np.float32) @ transformed_features(Xn)
        KtQ = KtP.copy()
        KtQ[:, -1] *= -1
        A = c * (KtP.astype(np.float64) @ KtQ.T.astype(np.float64))
        L = scipy.linalg.cholesky(K.T @ K + self.config["reg"] * np.eye(m), lower=True)
        # Whitened residual: L^-1 A L^-T.
        Aw = scipy.linalg.solve_triangular(L, scipy.linalg.solve_triangular(L, A, lower=True).T, lower=True)

        def top_direction() -> np.ndarray:
            u = top_eigenvector((Aw + Aw.T) / 2)
            w = scipy.linalg.solve_triangular(L.T, u[:, None], lower=False)
            return fix_column_signs(w)[:, 0]

        def whitened_bit(w: np.ndarray) -> np.ndarray:
            v = K.T @ np.sign(K @ w)
            return scipy.linalg.solve_triangular(L, v, lower=True)

        W = np.zeros((m, c))
        for t in range(c):
            W[:, t] = top_direction()
            u = whitened_bit(W[:, t])
            Aw -= np.outer(u, u)
        for _ in range(self.config["refine_passes"]):
            for t in rng.permutation(c):
                u = whitened_bit(W[:, t])
                Aw += np.outer(u, u)
                W[:, t] = top_direction()
                u = whitened_bit(W[:, t])
                Aw -= np.outer(u, u)
        self.weights = W
        self.fit_info["delta"] = float(self.delta)

    def anchor_distances(self, X: np.ndarray) -> np.ndarray:
        """(n, anchors) squared distances between the unit rows of ``X - mean`` and the anchors.

        One float32 GEMM of X with ``[anchors^T, mean]`` gives ``x^T a_j`` and ``x^T mean``;
        ``x_n^T a_j = (x^T a_j - mean^T a_j) / ||x - mean||`` with ``||x - mean||^2 =
        ||x||^2 - 2 x^T mean + ||mean||^2``, so X is never centred or normalised in memory
        (those copies cost more than the GEMM on 4,096-d features). A row within
        ``1e-3 ||x||`` of the mean counts as a zero row (distance ``||a_j||^2``).
        """
        mean = self.mean.astype(np.float64)
        G = X @ np.concatenate([self.anchor_points.T, self.mean[:, None]], axis=1)
        x_mean = G[:, -1].astype(np.float64)
        sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        norm2 = sq - 2 * x_mean + mean @ mean
        # within 1e-3 ||x|| of the mean, float32 cannot tell the direction: a zero row
        unit = norm2 > 1e-6 * sq
        inv = np.where(unit, 1 / np.sqrt(np.where(unit, norm2, 1)), 0).astype(np.float32)
        anchors = self.anchor_points.astype(np.float64)
        D = G[:, :-1]
        D -= (anchors @ mean).astype(np.float32)
        D *= -2 * inv[:, None]
        D += unit.astype(np.float32)[:, None]  # ||x_n||^2: 1, or 0 for a zero row
        D += np.einsum("ij,ij->i", anchors, anchors).astype(np.float32)
        np.maximum(D, 0, out=D)
        return D

    def kernel_features(self, X: np.ndarray) -> np.ndarray:
        """(n, anchors) centred kernel features ``K(x)`` (float32)."""
        K = self.anchor_distances(X)
        K *= np.float32(-1 / (2 * self.delta))
        np.exp(K, out=K)
        K -= self.kernel_bias.astype(np.float32)
        return K

    def project(self, X: np.ndarray) -> np.ndarray:
        return self.kernel_features(X) @ self.weights.astype(np.float32)
