"""CIBHash: contrastive information bottleneck hashing (Qiu, Su, Chen & Li, IJCAI 2021)."""

from __future__ import annotations

from .base import Param
from .deep import (
    VIEW_DROPOUT,
    VIEW_NOISE,
    DeepBaseline,
    batch_param,
    cosine_matrix,
    epochs_param,
    hidden_param,
    lr_param,
    straight_through_sign,
)


def nt_xent(z1, z2, temperature: float):
    """The NT-Xent contrastive loss of two views (the official ``NtXentLoss``).

    With ``z = [z1; z2]`` (2B rows) and ``s_ij = cos(z_i, z_j) / T``, each row's positive is
    its other view; the loss is the mean over the 2B rows of
    ``-log(exp(s_i,pos) / sum_{j != i} exp(s_ij))``.
    """
    import torch
    import torch.nn.functional as F

    z = torch.cat([z1, z2], dim=0)
    n = len(z1)
    sim = cosine_matrix(z) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def bernoulli_kl(p, q, eps: float = 1e-8):
    """``mean_i sum_j KL(Bern(p_ij) || Bern(q_ij))`` with ``q`` held fixed (the official ``compute_kl``)."""
    q = q.detach()
    kl = p * ((p + eps).log() - (q + eps).log()) + (1 - p) * ((1 - p + eps).log() - (1 - q + eps).log())
    return kl.sum(dim=1).mean()


def cib_loss(p1, p2, z1, z2, temperature: float, weight: float):
    """CIBHash's objective: NT-Xent of the binary codes + ``weight`` x the symmetric KL of the
    two views' bit probabilities (``(KL(p1||p2) + KL(p2||p1)) / 2``)."""
    kl = (bernoulli_kl(p1, p2) + bernoulli_kl(p2, p1)) / 2
    return nt_xent(z1, z2, temperature) + weight * kl


class CIBHash(DeepBaseline):
    """CIBHash at the feature level, as its official code trains it on frozen VGG16 fc7.

    Encoder ``d -> hidden -> ReLU -> bits``; ``p = sigmoid(encoder(x))``; in training each
    item's two augmented views give stochastic binary codes ``z = sign(p - u)``,
    ``u ~ U(0, 1)``, with a straight-through gradient, and the loss is :func:`cib_loss`.
    Codes: ``sign(p - 1/2)``, i.e. the sign of the encoder's output.

    Defaults from the official code (``CIBHash.py`` / ``main``): hidden 1024, temperature
    0.3, KL weight 0.001, Adam lr 0.001, batch 64. ``epochs`` (10) was chosen on a validation
    split of the training data (configs/baselines/cibhash.yaml).

    Shapes: fit (n, d) [+ views (n, K, d)] -> encode (m, d) -> (m, bits) int8.
    """

    name = "cibhash"
    summary = "contrastive information bottleneck (Qiu et al. 2021)"
    uses_views = True
    params = (
        hidden_param(1024, "hidden units of the encoder"),
        Param("temperature", 0.3, "float", "NT-Xent temperature", positive=True),
        Param("weight", 0.001, "float", "weight of the KL term (beta)", minimum=0),
        lr_param(0.001),
        batch_param(64),
        epochs_param(10),
        VIEW_DROPOUT,
        VIEW_NOISE,
    )

    def _train(self, X, views, gen) -> None:
        import torch

        c = self.config

        def loss(idx, epoch):
            v1, v2 = views.pair(idx)
            p1, p2 = torch.sigmoid(self.net(v1)), torch.sigmoid(self.net(v2))
            u1 = torch.rand(p1.shape, generator=gen).to(p1.device)
            u2 = torch.rand(p2.shape, generator=gen).to(p2.device)
            z1, z2 = straight_through_sign(p1 - u1), straight_through_sign(p2 - u2)
            return cib_loss(p1, p2, z1, z2, c["temperature"], c["weight"])

        self.run_epochs(torch.optim.Adam(self.net.parameters(), lr=c["lr"]), loss, len(X), c["epochs"], gen)

    def embed_tensor(self, X):
        return self.net(X)
