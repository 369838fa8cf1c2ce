"""SADH: unsupervised deep hashing with similarity-adaptive and discrete optimisation
(Shen, Xu, Liu, Yang, Huang & Shen, TPAMI 2018)."""

from __future__ import annotations

from .base import Param
from .deep import (
    DeepBaseline,
    batch_param,
    epochs_param,
    hidden_param,
    lr_param,
)


def anchor_graph(R, anchors: int, s: int, gen, kmeans_iters: int = 10):
    """The anchor graph of Liu et al. (2011) on representations ``R`` (n, p).

    ``anchors`` centres by k-means (seeded from ``gen``); each item links to its ``s``
    nearest anchors with weights ``exp(-d^2 / t)`` (``t`` = mean squared distance to the
    s-th nearest anchor), rows normalised to 1. Returns ``Z`` (n, anchors) and
    ``Lambda^-1`` (anchors,) so that ``A = Z diag(Lambda^-1) Z^T``.
    """
    import torch

    n = len(R)
    m = min(anchors, n)
    C = R[torch.randperm(n, generator=gen)[:m].to(R.device)].clone()
    for _ in range(kmeans_iters):
        assign = torch.cdist(R, C).argmin(dim=1)
        sums = torch.zeros_like(C).index_add_(0, assign, R)
        counts = torch.bincount(assign, minlength=m).to(R.dtype)
        C = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], C)
    d2 = torch.cdist(R, C) ** 2
    vals, idx = d2.topk(s, dim=1, largest=False)
    t = vals[:, -1].mean().clamp_min(1e-12)
    w = torch.exp(-(vals - vals[:, :1]) / t)  # shifted by the nearest: same normalised weights, no underflow
    w = w / w.sum(dim=1, keepdim=True)
    Z = torch.zeros(n, m, dtype=R.dtype, device=R.device).scatter_(1, idx, w)
    return Z, 1.0 / Z.sum(dim=0).clamp_min(1e-12)


def discrete_codes(Z, lam_inv, B, rho: float, iters: int, inner: int = 3):
    """The code step: ``max tr(B^T A B)`` over ``B`` in {-1, 1}^(n x r) with the balance and
    decorrelation constraints ``B^T 1 = 0``, ``B^T B = n I`` kept softly through a continuous
    ``Y`` in that set (weight ``rho``): alternate ``B <- sgn(2 A B + rho Y)`` (``inner``
    times) and ``Y <- sqrt(n) U V^T`` from the SVD of the centred ``B`` (the orthogonal
    Procrustes solution). ``A = Z diag(lam_inv) Z^T`` is never formed."""
    import torch

    n = len(B)

    def procrustes(B):
        Bc = B - B.mean(dim=0)
        U, _, Vt = torch.linalg.svd(Bc, full_matrices=False)
        return n ** 0.5 * U @ Vt

    Y = procrustes(B)
    for _ in range(iters):
        for _ in range(inner):
            AB = Z @ (lam_inv[:, None] * (Z.T @ B))
            B = torch.where(2 * AB + rho * Y >= 0, 1.0, -1.0)
        Y = procrustes(B)
    return B


def graph_objective(Z, lam_inv, B) -> float:
    """``tr(B^T A B) / n``: how well the codes agree with the similarity graph."""
    return float(((Z.T @ B) ** 2 * lam_inv[:, None]).sum() / len(B))


def spectral_codes(Z, lam_inv, bits: int):
    """Anchor-graph hashing's initial codes: signs of the graph's top non-trivial eigenvectors
    (from the small ``M = Lambda^-1/2 Z^T Z Lambda^-1/2``)."""
    import torch

    s = lam_inv.sqrt()
    M = s[:, None] * (Z.T @ Z) * s[None, :]
    vals, vecs = torch.linalg.eigh(M)
    order = vals.argsort(descending=True)[1 : bits + 1]  # skip the trivial eigenvector
    Y = Z @ (s[:, None] * vecs[:, order]) / vals[order].clamp_min(1e-12).sqrt()
    return torch.where(Y >= 0, 1.0, -1.0)


class SADH(DeepBaseline):
    """SADH at the feature level: network training, similarity update and discrete code
    optimisation, alternated.

    1. Similarity: an anchor graph (:func:`anchor_graph`) on the current deep representation
       -- the input features first (the paper's pretrained fc7), then the network's hidden
       layer.
    2. Codes: :func:`discrete_codes` on that graph, warm-started from the previous codes
       (from :func:`spectral_codes` the first time).
    3. Network: ``hidden (ReLU) -> bits`` fitted to the codes with the Euclidean loss
       ``||B - F(x)||^2`` (Adam).
    Codes: ``sign(F(x))``.

    The paper's code step is an ADMM on the same objective (``max tr(B^T A B)`` under the
    balance and decorrelation constraints); we solve it with the simpler sign/Procrustes
    alternation of discrete graph hashing. Anchors 300 and s = 3 follow the anchor-graph
    defaults; rho (1) and the epochs (5) were chosen on a validation split of the training
    data; the outer iterations are ours (configs/baselines/sadh.yaml).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8.
    """

    name = "sadh"
    summary = "similarity-adaptive discrete hashing (Shen et al. 2018)"
    params = (
        Param("anchors", 300, "int", "anchor-graph anchors", minimum=2),
        Param("nearest", 3, "int", "anchors each item links to (s)", minimum=1),
        Param("rho", 1.0, "float", "weight of the balance/decorrelation coupling", minimum=0),
        Param("outer", 3, "int", "alternations of graph, codes and network", minimum=1),
        Param("code_iters", 5, "int", "sign/Procrustes rounds of each code step", minimum=1),
        hidden_param(1024, "hidden units (their output is the adapted representation)"),
        lr_param(1e-3),
        batch_param(128),
        epochs_param(5, "network epochs per alternation"),
    )

    def representation(self, X):
        """The adapted deep representation: the hidden layer's output (the input when linear)."""
        return self.net[1](self.net[0](X)) if len(self.net) > 1 else X

    def _train(self, X, views, gen) -> None:
        import torch

        c = self.config
        opt = torch.optim.Adam(self.net.parameters(), lr=c["lr"])
        B, history = None, []
        for it in range(c["outer"]):
            with torch.no_grad():
                R = X if it == 0 else self.representation(X)
                Z, lam_inv = anchor_graph(R, c["anchors"], c["nearest"], gen)
                B = spectral_codes(Z, lam_inv, self.bits) if B is None else B
                B = discrete_codes(Z, lam_inv, B, c["rho"], c["code_iters"])
            step = {"graph_objective": graph_objective(Z, lam_inv, B)}
            fit = self.run_epochs(opt, lambda idx, epoch: ((B[idx] - self.net(X[idx])) ** 2).sum(dim=1).mean(),
                                  len(X), c["epochs"], gen, drop_last=False)
            step["fit_loss"] = fit[-1]
            history.append(step)
        self.fit_info["alternations"] = history

    def embed_tensor(self, X):
        return self.net(X)
