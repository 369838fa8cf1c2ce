"""The codes' rotation (``model.code_rotation: itq``), fitted once training has ended.

The codes are the signs of the GCN's output z. The training losses shape z as a continuous
embedding: on the demo's validation split, ranking by the cosine of a 16-dimensional z scored
0.917 MAP@1000 where its signs scored 0.900, and the signs of an orthogonal rotation of z chosen
by ITQ (Gong & Lazebnik: the rotation that brings the rows closest to the corners of the
hypercube) scored 0.907. A rotation changes no cosine between the z of two items, only where
the sign thresholds cut them.

R is fitted on the z of up to :data:`MAX_ITEMS` training items (drawn with the run's seed),
encoded exactly as new items are (:class:`~lagnh_pyg.encode.LagnhEncoder`, ``neighbours``, or
``self`` where the run's ``encode.mode`` is),
scaled to unit length (the reconstruction of Eq. 9 compares directions, not lengths), and
stored in the model (``code_rotation``): every later code of the run is ``sgn(z R)``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ..codes import itq_rotation

logger = logging.getLogger("lagnh_pyg")

#: training items whose codes the rotation is fitted on (a k x k rotation needs few)
MAX_ITEMS = 20_000
#: ITQ's rotation updates (the paper's 50)
ITERATIONS = 50


def fit_code_rotation(model, ds, cfg, cache: dict[str, torch.Tensor], seed: int = 0) -> np.ndarray:
    """Fit and set ``model.code_rotation`` (see the module); returns R (k, k).

    ``cache``: the training nodes' encoder cache (``xhat``, ``z1``, ``degree``, ``aux_unit``),
    as the ``neighbours`` encoding reads it."""
    from .newitems import LagnhEncoder, dataset_neighbours

    t0 = time.perf_counter()
    rows = ds.split("train")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows), MAX_ITEMS, replace=False)) if len(rows) > MAX_ITEMS else np.arange(len(rows))
    model.code_rotation.copy_(torch.eye(model.bits, dtype=model.code_rotation.dtype))  # z itself
    device = model.code_rotation.device  # the encoder moves the model there: keep it where it trains
    mode = "self" if cfg.encode.mode == "self" else "neighbours"  # as the run's items will be encoded
    near = dataset_neighbours(ds, cfg, model) if mode == "neighbours" else None
    enc = LagnhEncoder(model, mode, near, cache, device=str(device))
    z = enc.encode(ds.feature_rows(rows[pick]), np.asarray(ds.aux_rows(rows[pick]))).astype(np.float64)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    R, losses = itq_rotation(z, ITERATIONS, rng)
    model.code_rotation.copy_(torch.from_numpy(R).to(model.code_rotation.dtype))
    before = float(np.square(np.where(z >= 0, 1.0, -1.0) - z).sum() / len(z))
    logger.info(f"code rotation (ITQ) on the z of {len(pick)} training items: quantisation loss {before:.3f} -> "
                f"{losses[-1]:.3f} a unit row, {time.perf_counter() - t0:.1f}s")
    return R
