"""The training loop, written once for every mode: epochs, the log, checkpoints, resume,
the divergence check. It iterates a batch source (:mod:`lagnh_pyg.training.sources`) and
never knows which one it has.

Example::

    trainer = Trainer(cfg, d, c, bits)
    rows = fit(trainer, FullGraphSource(trainer.model, graph), epochs=40)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..distributed import DistContext
from ..errors import InputError, LagnhError
from ..rundir import RunWriter
from .sources import BatchSource
from .trainer import Trainer, rng_state, set_rng_state


class TrainingDiverged(LagnhError):
    """A loss term or a parameter became NaN or infinite (CLI exit code 1)."""


def fit(trainer: Trainer, source: BatchSource, epochs: int, *, writer: RunWriter | None = None,
        checkpoint_meta: Mapping[str, Any] | None = None, checkpoint_every: int = 0,
        ctx: DistContext | None = None, bar: "Bar | None" = None,
        sync: Callable[[], None] | None = None) -> list[dict[str, float]]:
    """Train from ``trainer.epoch`` up to ``epochs``; one pass over ``source`` per epoch.

    After each epoch: the mean loss terms (averaged over ranks under DDP) are checked finite,
    with every parameter (else :class:`TrainingDiverged`: the epoch and the term, the last
    good checkpoint left as it was); a log row goes to ``writer``; every
    ``checkpoint_every`` epochs (not at the last, which the caller completes) a checkpoint of
    :func:`training_state` is written.

    Args:
        trainer: the model and its update rules. source: the batches of one epoch.
        epochs: the epoch to train up to. writer: the run directory (None: nothing written,
            as in the scaling experiment and on DDP ranks other than 0).
        checkpoint_meta: plain values stored in every checkpoint (config, sizes, dataset).
        ctx: the DDP context (default: one process).
        bar: a progress display with ``update(terms)``.
        sync: called at the end of each epoch before it is timed (``torch.cuda.synchronize``).

    Returns:
        The log rows of the epochs trained here.
    """
    ctx = ctx or DistContext()
    rows = []
    last_good = trainer.epoch
    while trainer.epoch < epochs:
        t0 = time.perf_counter()
        terms = run_epoch(trainer, source)
        if sync is not None:
            sync()
        seconds = time.perf_counter() - t0
        terms = {k: ctx.all_reduce_mean(v) for k, v in terms.items()}
        trainer.epoch += 1
        _check_finite(trainer, terms, last_good, writer)
        row = {"epoch": trainer.epoch, **{k: round(v, 6) for k, v in terms.items()},
               "sigma2": float(trainer.model.sigma2), "seconds": round(seconds, 4)}
        rows.append(row)
        if writer is not None:
            writer.log(row)
        if checkpoint_every and trainer.epoch % checkpoint_every == 0 and trainer.epoch < epochs:
            state = training_state(trainer, source, ctx, checkpoint_meta or {}, complete=False)  # collective
            if writer is not None:
                writer.checkpoint(state)
                last_good = trainer.epoch
        if bar is not None:
            bar.update(terms)
    return rows


def run_epoch(trainer: Trainer, source: BatchSource) -> dict[str, float]:
    """One pass over ``source``: the mean of each loss term over its steps, and ``batches``."""
    sums: dict[str, float] = {}
    batches = 0
    for step in source:
        for k, v in trainer.step(step).items():
            sums[k] = sums.get(k, 0.0) + v
        batches += 1
    out = {k: v / max(batches, 1) for k, v in sums.items()}
    out["batches"] = float(batches)
    return out


def _check_finite(trainer: Trainer, terms: Mapping[str, float], last_good: int, writer: RunWriter | None) -> None:
    bad = next((k for k, v in terms.items() if not math.isfinite(v)), None)
    what = f"loss term {bad!r} is {terms[bad]}" if bad is not None else None
    if what is None:
        name = trainer.non_finite_parameter()
        what = f"parameter {name} is not finite" if name is not None else None
    if what is None:
        return
    if writer is not None and writer.committed:
        kept = f"the last good checkpoint (epoch {last_good}) is kept in {writer.checkpoint_path}"
    else:
        kept = "no checkpoint had been written"
    raise TrainingDiverged(f"training diverged at epoch {trainer.epoch}: {what}; {kept}. Check the features "
                           "for extreme values, or lower train.lr")


# -- checkpoint state -----------------------------------------------------------------------------
def training_state(trainer: Trainer, source: BatchSource, ctx: DistContext, meta: Mapping[str, Any], *,
                   complete: bool) -> dict[str, Any]:
    """What a checkpoint holds: ``meta``, the trainer's state, torch's RNG and the source's
    generators (under DDP each rank's, gathered: a collective every rank must call)."""
    own = {**rng_state(trainer.device), "source": source.state_dict()}
    state = {**dict(meta), "complete": complete, **trainer.state(), **own}
    if ctx.enabled:
        state["ranks"] = ctx.all_gather_object(own)
    return state


def restore(trainer: Trainer, source: BatchSource, ck: Mapping[str, Any], ctx: DistContext) -> None:
    """Continue from checkpoint ``ck`` (:func:`training_state`) on this rank."""
    trainer.load_state(ck)
    own: Mapping[str, Any] = ck
    if ctx.enabled:
        ranks = ck.get("ranks")
        if ranks is None or len(ranks) != ctx.world_size:
            have = len(ranks) if ranks is not None else 1
            raise InputError(f"the checkpoint was written by {have} process(es); resume with "
                             f"--nproc_per_node={have}")
        own = ranks[ctx.rank]
    set_rng_state(own, trainer.device)
    if "source" in own:  # checkpoints of full-graph runs before batch sources had none
        source.load_state_dict(own["source"])


class Bar:
    """A rich progress bar whose description shows the loss terms."""

    def __init__(self, total: int, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.p = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(), TimeRemainingColumn(),
                          TextColumn("{task.description}"), transient=False)
        self.p.start()
        self.task = self.p.add_task("", total=total, completed=done)

    def update(self, terms: Mapping[str, float]) -> None:
        desc = " ".join(f"{k} {terms[k]:.4f}" for k in ("loss_d", "adv", "quant", "recon", "sem") if k in terms)
        self.p.update(self.task, advance=1, description=desc)

    def close(self) -> None:
        self.p.stop()
