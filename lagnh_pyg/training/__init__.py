"""Training LAGNH, written once for every mode.

* :mod:`.trainer` — the update rules (Eq. 8-12): :class:`Trainer`, one :class:`Step`.
* :mod:`.sources` — batch sources (full graph, faithful dense mini-batches, neighbour-sampled
  subgraphs) that yield an epoch's steps and own their generators' states.
* :mod:`.sampled` — the sampled subgraph's forward pass and degree estimate.
* :mod:`.loop` — :func:`fit`: epochs, log, checkpoints, resume, divergence check.
* :mod:`.runner` — :func:`train_run`: dataset directory in, run directory out.
"""

from .loop import TrainingDiverged, fit
from .runner import train_run
from .sources import FaithfulSource, FullGraphSource, SampledSource
from .trainer import Step, Trainer

__all__ = ["FaithfulSource", "FullGraphSource", "SampledSource", "Step", "Trainer", "TrainingDiverged", "fit",
           "train_run"]
