"""UH-BDNN: unsupervised hashing with a binary deep neural network (Do, Doan & Cheung, ECCV 2016)."""

from __future__ import annotations

from .base import Param
from .deep import DeepBaseline, check_finite_loss, hidden_param, mlp


def code_step(X, B, W, c, H, lam2: float, sweeps: int = 1):
    """The B-step: discrete cyclic coordinate descent on
    ``||X - B W^T - c||^2 + lam2 ||H - B||^2`` over ``B`` in {-1, 1}^(m x L), one bit at a
    time: ``b_k = sign((X - c - B_-k W_-k^T) w_k + lam2 h_k)`` (exact per bit since
    ``b_k^T b_k = m``). ``X`` (m, d), ``W`` (d, L), ``c`` (d,), ``H`` (m, L)."""
    import torch

    B = B.clone()
    R = X - c - B @ W.T  # residual with every bit in
    for _ in range(sweeps):
        for k in range(B.shape[1]):
            w = W[:, k]
            R += B[:, k : k + 1] * w  # take bit k out
            score = R @ w + lam2 * H[:, k]
            B[:, k] = torch.where(score >= 0, 1.0, -1.0)
            R -= B[:, k : k + 1] * w
    return B


def decoder_step(X, B, lam1: float):
    """The reconstruction layer given the codes: ridge regression ``min ||X - B W^T - c||^2 / (2m)
    + lam1 / 2 ||W||^2`` in closed form (bias unpenalised). Returns ``W`` (d, L), ``c`` (d,)."""
    import torch

    m = len(X)
    mu_b, mu_x = B.mean(dim=0), X.mean(dim=0)
    Bc, Xc = B - mu_b, X - mu_x
    G = Bc.T @ Bc / m + lam1 * torch.eye(B.shape[1], dtype=X.dtype, device=X.device)
    W = torch.linalg.solve(G, Bc.T @ Xc / m).T
    return W, mu_x - W @ mu_b


def encoder_objective(H, B, lam2: float, lam3: float, lam4: float):
    """The terms of UH-BDNN's objective that involve the code layer ``H`` (m, L):
    ``lam2/(2m) ||H - B||^2 + lam3/2 ||H^T H / m - I||^2 + lam4/(2m) ||H^T 1||^2``
    (binary, independence and balance)."""
    import torch

    m, L = H.shape
    eye = torch.eye(L, dtype=H.dtype, device=H.device)
    return (lam2 / (2 * m) * ((H - B) ** 2).sum() + lam3 / 2 * ((H.T @ H / m - eye) ** 2).sum()
            + lam4 / (2 * m) * (H.sum(dim=0) ** 2).sum())


class UHBDNN(DeepBaseline):
    """UH-BDNN at the feature level: the encoder ``x -> sigmoid hidden -> L`` (code layer),
    whose output is tied to binary codes ``B`` that a linear layer must reconstruct ``x`` from.

    Objective (paper Eq. 3): ``1/(2m) ||X - B W^T - c||^2 + lam1/2 sum ||W_l||^2
    + lam2/(2m) ||H - B||^2 + lam3/2 ||H^T H/m - I||^2 + lam4/(2m) ||H^T 1||^2``,
    ``B`` in {-1, 1}. Alternating optimisation as in the paper: the B-step by discrete
    coordinate descent (:func:`code_step`), the reconstruction layer in closed form
    (:func:`decoder_step`), the encoder by L-BFGS on :func:`encoder_objective` plus weight
    decay. ``B`` starts as the signs of the centred PCA projections (our choice; the paper
    does not say). Codes: ``sign(H(x))``.

    Defaults: lam1 = 1e-5, lam2 = 5e-2, lam3 = 1e-2, lam4 = 1e-6 (the paper's unsupervised
    setting as we read it; the official MATLAB release could not be checked offline); the
    hidden width and L-BFGS steps are ours, the outer iterations (3) chosen on a validation split (configs/baselines/uhbdnn.yaml).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8.
    """

    name = "uhbdnn"
    summary = "binary deep network, independent balanced bits (Do et al. 2016)"
    params = (
        Param("lam1", 1e-5, "float", "weight decay", minimum=0),
        Param("lam2", 5e-2, "float", "binary term ||H - B||", minimum=0),
        Param("lam3", 1e-2, "float", "independence term ||H^T H/m - I||", minimum=0),
        Param("lam4", 1e-6, "float", "balance term ||H^T 1||", minimum=0),
        hidden_param(256, "sigmoid hidden units of the encoder"),
        Param("iterations", 3, "int", "outer alternations (B, decoder, encoder)", minimum=1),
        Param("lbfgs_steps", 10, "int", "encoder L-BFGS steps per alternation", minimum=1),
    )

    def build(self, d: int):
        return mlp(d, self.config["hidden"], self.bits, activation="sigmoid")

    def _train(self, X, views, gen) -> None:
        import torch

        c = self.config
        L = self.bits
        Xc = X - X.mean(dim=0)
        _, _, Vt = torch.linalg.svd(Xc[: min(len(X), 20000)], full_matrices=False)
        B = torch.where(Xc @ Vt[:L].T >= 0, 1.0, -1.0)
        opt = torch.optim.LBFGS(self.net.parameters(), lr=1.0, max_iter=c["lbfgs_steps"], history_size=10,
                                line_search_fn="strong_wolfe")
        weights = [p for n, p in self.net.named_parameters() if n.endswith("weight")]
        history = []
        for it in range(c["iterations"]):
            with torch.no_grad():
                H = self.net(X)
                W, bias = decoder_step(X, B, c["lam1"])
                B = code_step(X, B, W, bias, H, c["lam2"])
                W, bias = decoder_step(X, B, c["lam1"])

            def closure():
                opt.zero_grad()
                loss = encoder_objective(self.net(X), B, c["lam2"], c["lam3"], c["lam4"])
                loss = loss + c["lam1"] / 2 * sum((w ** 2).sum() for w in weights)
                loss.backward()
                return loss

            opt.step(closure)
            with torch.no_grad():
                H = self.net(X)
                total = (((X - B @ W.T - bias) ** 2).sum() / (2 * len(X))
                         + encoder_objective(H, B, c["lam2"], c["lam3"], c["lam4"]))
            history.append(float(total))
            check_finite_loss(history[-1], self.name, it)
        self.fit_info["objective"] = history
        self.fit_info["code_agreement"] = float((torch.sign(H) == B).float().mean())

    def embed_tensor(self, X):
        return self.net(X)


__all__ = ["UHBDNN", "code_step", "decoder_step", "encoder_objective"]
