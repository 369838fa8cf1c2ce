"""Denoised semantics: what an item's aux says, checked against what its features predict.

An item's aux (detections, tags) is noisy: a detector misses objects and invents others,
people tag loosely, and some tags mean nothing a picture shows. Two cheap estimates, fitted
on the training items without labels, clean it:

1. a ridge map P from the standardised features to the (centred) aux, penalty
   ``graph.semantic_ridge`` x n: what the features predict of the aux;
2. each aux column's reliability r: the correlation between the column and its 2-fold
   cross-fitted prediction, clipped to [0, 1]. A column the features cannot predict (a junk
   tag) gets 0; a column they predict well keeps its weight.

The denoised semantics of an item is s = l2n(w l2n(P(x)) + l2n(r * y)), w =
``graph.semantic_visual`` (:meth:`~lagnh_pyg.nn.LAGNH.semantic`; the map is stored in the
model, so a new item gets its s from the checkpoint alone). It serves:

- ``graph.semantics: denoised``: the aux kNN list of the training graph and of a new item
  ranks by s instead of the raw aux (the edge weights S^a stay the raw aux's, Eq. 4);
- ``loss.reconstruct: Sd``: Eq. 9 reconstructs S^d_ij = max(0, t_i t_j), with t = s after one
  diffusion step over the training graph (:func:`~lagnh_pyg.graph.diffuse`, weight
  ``loss.diffusion``): the semantics a node shares with its neighbourhood.

The fit streams the features in chunks (a memory map is never loaded) over at most
``FIT_MAX_ROWS`` training rows (a seeded sample beyond): d x d float64 sums, so its memory
does not grow with n.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..graph import diffuse
from .sampled import feature_stats

#: training rows the ridge map is fitted on (a seeded random sample of them beyond)
FIT_MAX_ROWS = 200_000
#: rows per chunk when streaming the features
CHUNK = 32768


def fit_semantic_map(model, features, aux: np.ndarray, rows: np.ndarray | None, ridge: float, seed: int = 0) -> dict:
    """Fit the denoised semantic map of ``model`` (its ``semantic_*`` buffers) on the training
    items: ``features`` (M, d) rows ``rows`` (None: all, in order) and their ``aux`` (n, c).

    Returns the fit's statistics for the log: rows used, mean reliability, columns kept (r > 0).
    """
    n = len(aux)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    pick = np.arange(n)
    if n > FIT_MAX_ROWS:
        pick = np.sort(np.random.default_rng(seed).choice(n, FIT_MAX_ROWS, replace=False))
    mean, std = feature_stats(features, rows[pick])
    std = std.clamp_min(1e-6)
    m = len(pick)
    lam = ridge * m
    fold = np.arange(m) % 2  # two interleaved folds: robust to the rows' order
    d, c = features.shape[1], aux.shape[1]
    gram = torch.zeros(2, d, d, dtype=torch.float64)
    cross = torch.zeros(2, d, c, dtype=torch.float64)
    colsum = torch.zeros(2, d, dtype=torch.float64)
    ysum = torch.zeros(2, c, dtype=torch.float64)
    count = torch.from_numpy(np.bincount(fold, minlength=2).astype(np.float64))
    for a, y, f in _chunks(features, aux, rows, pick, fold, mean, std):
        for h in (0, 1):
            ah, yh = a[f == h], y[f == h]
            gram[h] += ah.T @ ah
            cross[h] += ah.T @ yh
            colsum[h] += ah.sum(0)
            ysum[h] += yh.sum(0)

    def solve(g: Tensor, b: Tensor, s: Tensor, ys: Tensor, cnt: float) -> Tensor:
        centred = b - torch.outer(s, ys / cnt)  # A^T (Y - mean Y)
        return torch.linalg.solve(g + lam * torch.eye(d, dtype=g.dtype), centred)

    weight = solve(gram.sum(0), cross.sum(0), colsum.sum(0), ysum.sum(0), float(count.sum()))
    folds = [solve(gram[h], cross[h], colsum[h], ysum[h], float(count[h])) for h in (0, 1)]
    # reliability: corr(y, cross-fitted prediction) per column, from streamed moments
    mom = torch.zeros(5, c, dtype=torch.float64)  # sum y, y^2, p, p^2, y p
    for a, y, f in _chunks(features, aux, rows, pick, fold, mean, std):
        p = torch.empty_like(y)
        for h in (0, 1):
            p[f == h] = a[f == h] @ folds[1 - h]
        mom += torch.stack([y.sum(0), (y * y).sum(0), p.sum(0), (p * p).sum(0), (y * p).sum(0)])
    sy, syy, sp, spp, syp = mom
    cov = syp - sy * sp / m
    var = (syy - sy * sy / m).clamp_min(0) * (spp - sp * sp / m).clamp_min(0)
    rel = (cov / var.sqrt().clamp_min(1e-12)).clamp(0, 1)
    dev = model.semantic_weight.device
    model.semantic_mean.copy_(mean.to(dev))
    model.semantic_std.copy_(std.to(dev))
    model.semantic_weight.copy_(weight.float().to(dev))
    model.semantic_reliability.copy_(rel.float().to(dev))
    return {"rows": m, "reliability_mean": round(float(rel.mean()), 4), "columns_kept": int((rel > 0).sum()),
            "columns": c}


def _chunks(features, aux: np.ndarray, rows: np.ndarray, pick: np.ndarray, fold: np.ndarray, mean: Tensor,
            std: Tensor):
    """(standardised features, aux, fold) of the picked rows, float64, chunk by chunk."""
    for s in range(0, len(pick), CHUNK):
        sel = pick[s : s + CHUNK]
        x = torch.from_numpy(np.asarray(features[rows[sel]], dtype=np.float64))
        a = (x - mean.double()) / std.double()
        yield a, torch.from_numpy(np.asarray(aux[sel], dtype=np.float64)), torch.from_numpy(fold[s : s + CHUNK])


@torch.no_grad()
def semantic_rows(model, features, aux: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """The denoised semantics (n, c) float32 of the training nodes (:meth:`LAGNH.semantic`),
    computed chunk by chunk from ``features`` rows ``rows`` (None: all) and ``aux``."""
    n = len(aux)
    out = np.empty(aux.shape, dtype=np.float32)
    dev = model.semantic_weight.device
    for s in range(0, n, CHUNK):
        sel = slice(s, min(s + CHUNK, n))
        x = np.asarray(features[sel] if rows is None else features[rows[sel]], dtype=np.float32)
        a = np.asarray(aux[sel], dtype=np.float32)
        out[sel] = model.semantic(torch.from_numpy(x).to(dev), torch.from_numpy(a).to(dev)).cpu().numpy()
    return out


def semantic_target(s: np.ndarray, edge_index: Tensor, diffusion: float) -> Tensor:
    """``loss.reconstruct: Sd``'s unit rows t (n, c): the semantics ``s`` after one diffusion
    step over the training graph (:func:`~lagnh_pyg.graph.diffuse`)."""
    return diffuse(torch.from_numpy(s), edge_index, diffusion)
