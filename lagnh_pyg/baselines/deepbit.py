"""DeepBit: compact binary descriptors with unsupervised deep networks (Lin, Lu, Chen & Zhou, CVPR 2016)."""

from __future__ import annotations

from .base import Param
from .deep import (
    CENTRE,
    VIEW_DROPOUT,
    VIEW_NOISE,
    DeepBaseline,
    batch_param,
    epochs_param,
    hidden_param,
    lr_param,
)


def quantization_loss(F):
    """Criterion 1, minimal quantisation loss: ``sum_n ||b_n - F_n||^2 / 2`` over the batch
    (divided by its size), ``b = 1[F > 1/2]`` held fixed."""
    b = (F > 0.5).to(F.dtype)
    return ((b - F) ** 2).sum() / (2 * len(F))


def even_distribution_loss(F):
    """Criterion 2, evenly distributed codes: ``sum_m (mu_m - 1/2)^2 / 2`` with ``mu_m`` the
    batch mean of bit m's activation."""
    return ((F.mean(dim=0) - 0.5) ** 2).sum() / 2


def invariance_loss(F_view, F):
    """Criterion 3, invariance to the augmentation: ``sum_n ||F(view_n) - F(x_n)||^2`` over the
    batch (divided by its size); the paper's rotation weights C(theta) are 1 here because a
    stored view does not record its angle."""
    return ((F_view - F) ** 2).sum() / len(F)


class DeepBit(DeepBaseline):
    """DeepBit at the feature level: the latent layer that replaces VGG16's fc8, on fc7-like features.

    ``F(x) = sigmoid(W x + c)`` (a linear latent layer, hidden 0) in {0, 1}-space; stage 1
    trains ``alpha L1 + beta L2`` (:func:`quantization_loss`, :func:`even_distribution_loss`),
    stage 2 (rotation-invariant fine-tuning) adds ``gamma L3`` (:func:`invariance_loss`) on
    augmented views -- the demo's rendered views include small rotations (the paper's
    +-5..10 degrees), else the feature-level fallback. SGD with momentum 0.9.
    Codes: ``sign(F(x) - 1/2)``.

    Defaults: alpha = beta = 1 (the paper's equal weighting); gamma 1 and 20 stage-1 epochs
    chosen on a validation split of the training data. The official Caffe layers differ from
    the paper (fc8 + ReLU thresholded at 0.5, and quantisation / even-distribution layers
    that send one and the same gradient to every unit); we follow the paper's criteria with
    exact gradients (configs/baselines/deepbit.yaml).

    Shapes: fit (n, d) [+ views (n, K, d)] -> encode (m, d) -> (m, bits) int8.
    """

    name = "deepbit"
    summary = "quantisation, even bits, invariance (Lin et al. 2016)"
    uses_views = True
    params = (
        Param("alpha", 1.0, "float", "weight of the quantisation loss", minimum=0),
        Param("beta", 1.0, "float", "weight of the even-distribution loss", minimum=0),
        Param("gamma", 1.0, "float", "weight of the view-invariance loss (stage 2)", minimum=0),
        hidden_param(0),
        CENTRE,
        lr_param(0.01),
        batch_param(128),
        epochs_param(20, "stage-1 epochs"),
        Param("invariance_epochs", 20, "int", "stage-2 (invariance) epochs", minimum=0),
        VIEW_DROPOUT,
        VIEW_NOISE,
    )

    def _train(self, X, views, gen) -> None:
        import torch

        c = self.config

        def loss(idx, epoch):
            F = torch.sigmoid(self.net(self.inputs(X[idx])))
            value = c["alpha"] * quantization_loss(F) + c["beta"] * even_distribution_loss(F)
            if epoch >= c["epochs"]:  # stage 2
                value = value + c["gamma"] * invariance_loss(torch.sigmoid(self.net(self.inputs(views.one(idx)))), F)
            return value

        opt = torch.optim.SGD(self.net.parameters(), lr=c["lr"], momentum=0.9)
        self.run_epochs(opt, loss, len(X), c["epochs"] + c["invariance_epochs"], gen)

    def embed_tensor(self, X):
        return self.net(self.inputs(X))
