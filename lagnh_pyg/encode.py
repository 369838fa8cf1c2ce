"""Out-of-sample encoding with a trained LAGNH model (Eq. 13: b = sgn(z), eval mode).

Three encodings (``--encoding``, default: the run's ``encode.mode``):

* ``neighbours`` — one image, one code. A new item is linked to training nodes by the rule
  that built the training graph (:func:`~lagnh_pyg.graph.build_graph`): its ``graph.k``
  nearest training nodes by cosine on the input features, united with its ``graph.k``
  nearest by cosine on the aux rows (positive similarity only) — :class:`TrainingNeighbours`,
  FAISS over the run's training rows. Those edges are weighted by the fused similarity of
  Eq. 3-5 on the attentive features (trained sigma), as in training, and the item is
  propagated through the trained GCN (Eq. 6-7) along edges *into* it only: the training
  nodes keep their degrees and embeddings, so a code never depends on what else is encoded.
  What it needs of the training nodes (x̂, z1, degrees) is the run's cache, computed by
  layer-wise inference over the whole training graph (:mod:`lagnh_pyg.training.encoder_cache`)
  and memory-mapped here; past ``EXACT_MAX_NODES`` training nodes the FAISS index is built in
  chunks over the memory-mapped features (PCA + IVF, exact re-rank): bounded memory at 1M.
* ``self`` — no edges: the item's own self-loop only (the GCN acts as an MLP).
* ``faithful`` — the release: unshuffled batches of ``encode.batch_size`` (256), the dense
  graph and the attention built inside each batch; codes depend on batch-mates.

Importing this module registers the method ``lagnh`` with :mod:`lagnh_pyg.rundir`.
"""

from __future__ import annotations

import logging

import torch

from .cache_file import load_encoder_cache
from .checkpoint import config_of_checkpoint, load_checkpoint
from .encoders import register_method
from .errors import InputError
from .nn import LAGNH
from .rundir import Run, fingerprint
from .training.newitems import (  # noqa: F401  (re-exported: this module is their documented home)
    ENCODINGS,
    SIM_CHUNK,
    LagnhEncoder,
    TrainingNeighbours,
    dataset_neighbours,
)

logger = logging.getLogger(__name__)

register_method("lagnh", "lagnh_pyg.encode:load_lagnh_encoder")


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
        raise InputError(f"{path} changed after {run.meta_path} was written (an interrupted --resume?); "
                         "finish the training with `lagnh train ... --resume`")
    ck = load_checkpoint(path, map_location="cpu")
    if not ck.get("complete", False):
        raise InputError(f"{path} is an intermediate checkpoint; finish the training with --resume")
    cfg = config_of_checkpoint(ck, path)
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
    cache = neighbours = None
    if mode == "neighbours":
        cache = load_encoder_cache(run, {"xhat", "z1", "degree", "aux_unit"})
        neighbours = training_neighbours(run, cfg, model)
    return LagnhEncoder(model, mode, neighbours, cache, cfg.encode.batch_size, device)


def training_neighbours(run: Run, cfg, model=None) -> TrainingNeighbours:
    """:class:`TrainingNeighbours` over the run's training rows, read from its dataset
    (checked to be the one it was trained on)."""
    try:
        ds = run.dataset()
    except InputError as e:
        raise InputError(f"the neighbours encoding links new items to the training items of {run.root}: {e} "
                         "(or encode with --encoding self)") from None
    if run.meta.get("data_fingerprint") and ds.fingerprint != run.meta["data_fingerprint"]:
        raise InputError(f"the training dataset {ds.root} changed since {run.root} was trained; the neighbours "
                         "encoding needs it as it was (re-train, or encode with --encoding self)")
    return dataset_neighbours(ds, cfg, model)
