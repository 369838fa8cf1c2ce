"""SSDH: semantic structure-based unsupervised deep hashing (Yang, Deng, Liu, Liu & Tao, IJCAI 2018)."""

from __future__ import annotations

import numpy as np

from .base import Param
from .deep import (
    CENTRE,
    DeepBaseline,
    batch_param,
    cosine_matrix,
    epochs_param,
    hidden_param,
    lr_param,
)


def half_gaussian_thresholds(distances: np.ndarray, alpha: float, beta: float) -> tuple[float, float, dict]:
    """SSDH's semantic-structure thresholds from cosine distances (the reference ``generate_similarity_matrix``).

    The mode ``m`` of the distances is found on a histogram of 100 bins of width 0.01; the
    distances left of the mode, mirrored about it, and those right of it, mirrored, are each
    fitted with a Gaussian (mean, std). Pairs closer than ``mean_l - alpha std_l`` are
    similar (+1), pairs farther than ``mean_r + beta std_r`` dissimilar (-1), others 0.

    Returns ``(similar_below, dissimilar_above, details)``.
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    edges = np.arange(100) * 0.01
    counts = [np.sum((d > e) & (d < e + 0.01)) for e in edges]
    mode = float(edges[int(np.argmax(counts))])
    left, right = d[d <= mode], d[d > mode]
    left = np.concatenate([left, 2 * mode - left])
    right = np.concatenate([2 * mode - right, right])
    lm, ls = (float(left.mean()), float(left.std())) if len(left) else (mode, 0.0)
    rm, rs = (float(right.mean()), float(right.std())) if len(right) else (mode, 0.0)
    lo, hi = lm - alpha * ls, rm + beta * rs
    return lo, hi, {"mode": mode, "left_mean": lm, "left_std": ls, "right_mean": rm, "right_std": rs}


def semantic_structure(cos_dist, lo: float, hi: float):
    """S = +1 where ``cos_dist < lo``, -1 where ``cos_dist > hi``, else 0."""
    return (cos_dist < lo).to(cos_dist.dtype) - (cos_dist > hi).to(cos_dist.dtype)


def ssdh_loss(v, S):
    """``sum_ij |S_ij| (v_i . v_j / bits - S_ij)^2 / B^2`` for tanh outputs ``v`` (B, bits)."""
    H = v @ v.T / v.shape[1]
    return (S.abs() * (H - S) ** 2).sum() / (v.shape[0] ** 2)


class SSDH(DeepBaseline):
    """SSDH at the feature level: the hash layer on top of frozen features.

    The semantic structure comes from cosine distances between the input features (the
    paper's VGG16 fc7): thresholds by :func:`half_gaussian_thresholds`, estimated on the
    pairs among up to ``sample`` training items (all pairs when the split is small), then
    ``S`` (:func:`semantic_structure`) on each batch's pairs. The network ``v = tanh(f(x))``
    minimises :func:`ssdh_loss`; codes ``sign(f(x))``. SGD with momentum 0.9 and weight decay
    1e-5 as in the reference PyTorch code.

    Defaults: a linear hash layer on the features (hidden 0, the paper's fc7 -> hash layer);
    alpha 3, beta 0, then lr 0.3 (the best mean over 16, 32 and 64 bits) chosen on a validation
    split of the training data (docs/results/baselines-validation.md;
    configs/baselines/ssdh.yaml). beta 0 calls every
    pair beyond the histogram's mode dissimilar: on multi-label data, where the far tail
    alone is too thin, the extra negative pairs keep the bits apart (fewer collapsed codes).

    Shapes: fit (n, d) -> encode (m, d) -> (m, bits) int8.
    """

    name = "ssdh"
    summary = "semantic structure from cosine distances (Yang et al. 2018)"
    params = (
        Param("alpha", 3.0, "float", "similar when closer than mean_l - alpha std_l", minimum=0),
        Param("beta", 0.0, "float", "dissimilar when farther than mean_r + beta std_r", minimum=0),
        hidden_param(0),
        CENTRE,
        Param("sample", 4000, "int", "items whose pairwise distances set the thresholds", minimum=2),
        lr_param(0.3),
        batch_param(128),
        epochs_param(50),
    )

    def _train(self, X, views, gen) -> None:
        import torch

        c = self.config
        m = min(len(X), c["sample"])
        pick = torch.randperm(len(X), generator=gen)[:m].to(X.device)
        with torch.no_grad():
            dist = 1 - cosine_matrix(X[pick])
            iu = torch.triu_indices(m, m, offset=1, device=X.device)
            lo, hi, info = half_gaussian_thresholds(dist[iu[0], iu[1]].cpu().numpy(), c["alpha"], c["beta"])
        self.fit_info["thresholds"] = {"similar_below": lo, "dissimilar_above": hi, **info}

        def loss(idx, epoch):
            x = X[idx]
            with torch.no_grad():
                S = semantic_structure(1 - cosine_matrix(x), lo, hi)
            return ssdh_loss(torch.tanh(self.net(self.inputs(x))), S)

        opt = torch.optim.SGD(self.net.parameters(), lr=c["lr"], momentum=0.9, weight_decay=1e-5)
        self.run_epochs(opt, loss, len(X), c["epochs"], gen)

    def embed_tensor(self, X):
        return self.net(self.inputs(X))
