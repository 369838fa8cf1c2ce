"""Bi-half Net: unsupervised hashing by maximising bit entropy (Li & van Gemert, AAAI 2021)."""

from __future__ import annotations

from .base import Param
from .deep import (
    DeepBaseline,
    batch_param,
    epochs_param,
    lr_param,
)


def bihalf_codes(u):
    """The bi-half layer's forward pass: in each column of the batch ``u`` (B, bits), the
    ``B // 2`` largest entries get +1 and the rest -1 (ties by sort order) -- the optimal
    transport of the column onto a half-half {-1, +1} distribution."""
    import torch

    n = u.shape[0]
    order = u.argsort(dim=0, descending=True, stable=True)
    fill = torch.cat([torch.ones(n // 2, u.shape[1]), -torch.ones(n - n // 2, u.shape[1])]).to(u)
    return torch.zeros_like(u).scatter_(0, order, fill)


def _bihalf_function():
    import torch

    class BiHalf(torch.autograd.Function):
        """Forward :func:`bihalf_codes`; backward ``g + gamma (u - b) / numel(b)`` (official code)."""

        @staticmethod
        def forward(ctx, u, gamma):
            b = bihalf_codes(u)
            ctx.save_for_backward(u, b)
            ctx.gamma = gamma
            return b

        @staticmethod
        def backward(ctx, g):
            u, b = ctx.saved_tensors
            return g + ctx.gamma * (u - b) / b.numel(), None

    return BiHalf


def bihalf(u, gamma: float):
    return _bihalf_function().apply(u, gamma)


def bihalf_loss(b, x):
    """The official unsupervised loss: the batch is split in halves ``(b1, b2)``, ``(x1, x2)``
    and the row-wise cosine similarities of the codes are regressed onto the features':
    ``mean_i (cos(b1_i, b2_i) - cos(x1_i, x2_i))^2``."""
    import torch.nn.functional as F

    h = b.shape[0] // 2
    return F.mse_loss(F.cosine_similarity(b[:h], b[h : 2 * h]), F.cosine_similarity(x[:h], x[h : 2 * h]))


class BiHalf(DeepBaseline):
    """Bi-half at the feature level, as its official image code trains it on frozen VGG16 fc7.

    A linear hash layer ``h = W x + c`` followed by the parameter-free bi-half layer
    (:func:`bihalf`) in training; loss :func:`bihalf_loss`; SGD (momentum 0.9, weight decay
    5e-4) with the learning rate divided by 10 after ``lr_decay_epoch`` epochs.

    Codes: the bi-half layer needs a batch, but one image must get one code, so at encoding
    time each bit is thresholded at the median of ``h`` over the training set (the
    population version of the half-half split: midway between the two middle values, stored
    as ``buffers["threshold"]``).

    Defaults from the official ``Cifar10_I.py``: gamma 6, lr 1e-4, batch 32, decay after 120
    of 300 epochs; we keep the decay at 40% of ``epochs`` (see configs/baselines/bihalf.yaml).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8.
    """

    name = "bihalf"
    summary = "bi-half layer, maximal bit entropy (Li & van Gemert 2021)"
    params = (
        Param("gamma", 6.0, "float", "weight of the bi-half layer's pull of h towards b", minimum=0),
        lr_param(1e-4),
        Param("momentum", 0.9, "float", "SGD momentum", minimum=0),
        Param("weight_decay", 5e-4, "float", "SGD weight decay", minimum=0),
        batch_param(32),
        epochs_param(100),
        Param("lr_decay_at", 0.4, "float", "fraction of the epochs after which lr is divided by 10", minimum=0),
    )

    def build(self, d: int):
        import torch.nn as nn

        return nn.Linear(d, self.bits)

    def _train(self, X, views, gen) -> None:
        import torch

        c = self.config
        opt = torch.optim.SGD(self.net.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
        decay_epoch = int(c["lr_decay_at"] * c["epochs"])

        def loss(idx, epoch):
            for group in opt.param_groups:
                group["lr"] = c["lr"] * (0.1 if epoch >= decay_epoch else 1.0)
            x = X[idx]
            return bihalf_loss(bihalf(self.net(x), c["gamma"]), x)

        self.run_epochs(opt, loss, len(X), c["epochs"], gen)
        with torch.no_grad():
            # half-half on the whole training set: the n // 2 largest values of each bit are +1;
            # the threshold lies midway between the two order statistics around the split, so
            # no training item sits on it (a batch-size-dependent rounding would flip its bit)
            s = self.net(X).sort(dim=0).values
            cut = len(s) - len(s) // 2
            self.buffers["threshold"] = (s[cut - 1] + s[cut]) / 2

    def embed_tensor(self, X):
        return self.net(X) - self.buffers["threshold"]
