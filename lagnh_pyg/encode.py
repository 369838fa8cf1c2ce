"""Out-of-sample encoding with a trained LAGNH model (Eq. 13: b = sgn(z), eval mode).

Three encodings (``--encoding``, default: the run's ``encode.mode``):

* ``neighbours`` — one image, one code. A new item gets its attentive features (Eq. 1-2,
  batch-independent keys), is linked to its ``encode.k`` nearest training nodes under the
  same fused similarity the training graph uses (Eq. 3-5, with the trained sigma), and is
  propagated through the trained GCN (Eq. 6-7) along edges *into* it only: the training
  nodes keep their degrees and embeddings, so a code never depends on what else is encoded.
* ``self`` — no edges: the item's own self-loop only (the GCN acts as an MLP).
* ``faithful`` — the release: unshuffled batches of ``encode.batch_size`` (256), the dense
  graph and the attention built inside each batch; codes depend on batch-mates.

Importing this module registers the method ``lagnh`` with :mod:`lagnh_pyg.rundir`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError
from .graph import dense_fused_weight
from .nn import LAGNH
from .rundir import (
    Run,
    config_of_checkpoint,
    fingerprint,
    load_checkpoint,
    load_encoder_cache,
    register_method,
)

logger = logging.getLogger(__name__)

ENCODINGS = ("neighbours", "self", "faithful")
SIM_CHUNK = 1024  # new items per similarity block (bounds the m x n_train matrix)

register_method("lagnh", "lagnh_pyg.encode:load_lagnh_encoder")


class LagnhEncoder:
    """A trained LAGNH model plus what it needs of the training nodes.

    Args:
        model: the trained :class:`~lagnh_pyg.nn.LAGNH` (put in eval mode here).
        mode: ``neighbours``, ``self`` or ``faithful``.
        k: training neighbours per new item (``neighbours``).
        cache: ``xhat`` (n, a), ``z1`` (n, h), ``degree`` (n,), ``aux_unit`` (n, c) of the
            training nodes (``neighbours``).
        batch_size: the faithful encoding's batch.
        device: torch device.
    """

    def __init__(self, model, mode: str = "neighbours", k: int = 20, cache: dict[str, Tensor] | None = None,
                 batch_size: int = 256, device: str = "cpu") -> None:
        if mode not in ENCODINGS:
            raise InputError(f"unknown encoding {mode!r}; use one of {', '.join(ENCODINGS)}")
        if mode != "faithful" and not model.attention.batch_independent:
            raise InputError(f"this model attends within its batch (attention=batch); encode it with "
                             f"--encoding faithful, not {mode}")
        if mode == "neighbours":
            if cache is None:
                raise InputError("neighbours encoding needs the training nodes' cache (encoder.safetensors)")
            if k > cache["xhat"].shape[0]:
                raise InputError(f"encode.k={k} exceeds the {cache['xhat'].shape[0]} training nodes")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.mode, self.k, self.batch_size = mode, int(k), int(batch_size)
        self.cache = None if cache is None else {n: t.to(self.device) for n, t in cache.items()}
        self.bits = model.bits
        self.batch_independent = mode != "faithful"
        self.encoding_name = mode
        if mode == "faithful":
            self.encode_chunk_multiple = self.batch_size

    @torch.no_grad()
    def encode(self, features: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """(n, d) features and (n, c) aux -> (n, bits) float32 z; positive entries are 1-bits."""
        features = np.asarray(features)
        aux = np.asarray(aux)
        if features.ndim != 2 or features.shape[1] != self.model.feature_dim:
            raise InputError(f"features have shape {features.shape}; this model expects (n, {self.model.feature_dim})")
        if aux.shape != (features.shape[0], self.model.aux_dim):
            raise InputError(f"aux has shape {aux.shape}; expected ({features.shape[0]}, {self.model.aux_dim})")
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
        a = torch.from_numpy(np.ascontiguousarray(aux, dtype=np.float32)).to(self.device)
        if self.mode == "faithful":
            parts = [self.model.forward_dense(x[s : s + self.batch_size], a[s : s + self.batch_size])["z"]
                     for s in range(0, len(x), self.batch_size)]
            z = torch.cat(parts) if parts else x.new_zeros((0, self.bits))
        else:
            z = torch.cat([self._encode_block(x[s : s + SIM_CHUNK], a[s : s + SIM_CHUNK])
                           for s in range(0, len(x), SIM_CHUNK)]) if len(x) else x.new_zeros((0, self.bits))
        return z.float().cpu().numpy()

    def neighbours(self, xhat: Tensor, aux_unit: Tensor) -> tuple[Tensor, Tensor]:
        """The k training nodes of largest fused similarity (Eq. 3-5) to each new item.

        Computed in float64 and ranked with a stable sort (ties: lower training index), so
        the choice does not depend on the other rows of the block.

        Returns:
            (ids (m, k) long, weights (m, k)) — the raw fused weights S_qj.
        """
        m = self.model
        s = dense_fused_weight(xhat.double(), self.cache["xhat"].double(), aux_unit.double(),
                               self.cache["aux_unit"].double(), m.eta, m.sigma2.double(), m.weights)
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, : self.k]
        return order, torch.gather(s, 1, order).to(xhat.dtype)

    def _encode_block(self, x: Tensor, aux: Tensor) -> Tensor:
        m = self.model
        xhat = m.attentive_features(x, aux)
        aux_unit = F.normalize(aux, dim=1)
        n_new = x.shape[0]
        w_self = m.self_weight(aux_unit)
        new = torch.arange(n_new, device=x.device)
        if self.mode == "self":
            ei = torch.stack([new, new])
            z1 = m.generator.layer1(xhat, ei, torch.ones(n_new, device=x.device))
            return m.generator.layer2(z1, ei, torch.ones(n_new, device=x.device))
        ids, w = self.neighbours(xhat, aux_unit)
        deg_q = w.sum(1) + w_self
        if m.normalization == "gcn":
            deg_t = self.cache["degree"][ids]
            norm = w / (deg_q[:, None] * deg_t).sqrt().clamp_min(1e-12)
        else:
            norm = w / deg_q.clamp_min(1e-12)[:, None]
        norm_self = w_self / deg_q.clamp_min(1e-12)
        # a small graph: the selected training nodes, then the new nodes; edges only into the new
        sel, local = torch.unique(ids, return_inverse=True)
        n_sel = sel.numel()
        dst = (n_sel + new)[:, None].expand_as(ids)
        ei = torch.cat([torch.stack([local.reshape(-1), dst.reshape(-1)]), torch.stack([n_sel + new, n_sel + new])], 1)
        ew = torch.cat([norm.reshape(-1), norm_self])
        z1_new = m.generator.layer1(torch.cat([self.cache["xhat"][sel], xhat]), ei, ew)[n_sel:]
        z = m.generator.layer2(torch.cat([self.cache["z1"][sel], z1_new]), ei, ew)[n_sel:]
        return z


def load_lagnh_encoder(run: Run, device: str = "cpu", encoding: str | None = None) -> LagnhEncoder:
    """The registered loader of method ``lagnh``: rebuild the model from ``run``'s checkpoint.

    Refuses (InputError) a checkpoint changed after run.json, an intermediate one, and one
    whose parameters hold NaN or inf (a diverged training).

    Args:
        run: an opened run directory.
        device: torch device.
        encoding: ``neighbours``, ``self``, ``faithful``, or None for the run's ``encode.mode``.
    """
    path = run.model_path
    if not path.is_file():
        raise InputError(f"run {run.root} has no model file {path.name}; re-run `lagnh train`")
    if fingerprint(path) != run.model_fingerprint:
        raise InputError(f"{path} changed after {run.root}/run.json was written (an interrupted --resume?); "
                         "finish the training with `lagnh train ... --resume`")
    ck = load_checkpoint(path, map_location="cpu")
    if not ck.get("complete", False):
        raise InputError(f"{path} is an intermediate checkpoint; finish the training with --resume")
    cfg = config_of_checkpoint(ck)
    model = LAGNH.from_config(cfg, int(ck["feature_dim"]), int(ck["aux_dim"]), int(ck["bits"]))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise InputError(f"{path} does not match its own config ({str(e).splitlines()[0][:120]})") from None
    bad = next((k for k, t in ck["model"].items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise InputError(f"{path} holds non-finite values in {bad} (a diverged training); re-train it")
    mode = encoding or cfg.encode.mode
    if mode not in ENCODINGS:
        raise InputError(f"--encoding must be one of {', '.join(ENCODINGS)}, got {mode!r}")
    cache = load_encoder_cache(run, {"xhat", "z1", "degree", "aux_unit"}) if mode == "neighbours" else None
    return LagnhEncoder(model, mode, cfg.encode.k, cache, cfg.encode.batch_size, device)
