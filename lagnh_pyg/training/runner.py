"""``train_run``: a dataset directory in, a complete run directory out, in every mode.

It opens the dataset, builds the trainer and the mode's batch source
(:mod:`lagnh_pyg.training.sources`), resumes from a checkpoint if asked, runs the one loop
(:func:`~lagnh_pyg.training.loop.fit`), calibrates the final model and commits the run
directory through :class:`~lagnh_pyg.rundir.RunWriter`.

Example::

    from lagnh_pyg.training import train_run
    run_dir = train_run("data/syn", "configs/demo.yaml", bits=32, out_dir="runs/demo32")
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from ..cache_file import EncoderCacheFile
from ..checkpoint import check_resumable, load_checkpoint
from ..codes import check_bits
from ..config import Config, load_config, uses_semantics
from ..data.store import Dataset
from ..device import resolve_device
from ..distributed import DistContext, init_distributed, shutdown
from ..errors import InputError
from ..graph import build_graph
from ..knn import EXACT_MAX_NODES
from ..rundir import RunPaths, RunWriter
from ..runtime import threads_set
from .encoder_cache import (
    MemoryCache,
    build_encoder_cache,
    cache_shapes,
    graph_edges,
    sampling_topology_for_cache,
)
from .loop import Bar, fit, restore, training_state
from .rotation import fit_code_rotation
from .sampled import BatchFetcher, SampledModule, feature_stats
from .semantics import fit_semantic_map, semantic_rows, semantic_target
from .sources import BatchSource, FaithfulSource, FullGraphSource, SampledSource
from .trainer import Trainer

logger = logging.getLogger(__name__)


def train_run(
    data_dir: str | os.PathLike,
    config: str | os.PathLike | Mapping[str, Any] | Config | None,
    bits: int,
    out_dir: str | os.PathLike,
    overrides: Iterable[str | tuple[str, Any]] = (),
    resume: bool = False,
    device: str = "auto",
    progress: Any = True,
    distributed: bool = False,
) -> Path:
    """Train LAGNH on ``data_dir``'s training split; write a complete run directory.

    Three modes (``train.mode``): ``full`` (the whole kNN graph each step), ``faithful`` (the
    release's dense mini-batches) and ``sampled`` (neighbour-sampled seed batches; with
    ``distributed``, data-parallel under ``torchrun``).

    Args:
        data_dir: a dataset directory.
        config: a YAML path, a mapping, a Config, or None (defaults).
        bits: code length k (a positive multiple of 8).
        out_dir: the run directory (must not exist, or be empty, unless ``resume``).
        overrides: ``"key=value"`` strings or ``(key, value)`` pairs.
        resume: continue from ``out_dir/checkpoint.pt`` (same config except ``train.epochs``);
            a run killed before its first checkpoint starts afresh.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        progress: ``True``: a progress bar with the loss terms; ``False``: none; or the
            caller's display, an object with ``start(total, done)``, ``update(terms)`` (once an
            epoch) and ``close()`` (e.g. one bar for a whole pipeline).
        distributed: data-parallel training under ``torchrun`` (``train.mode: sampled``).

    Returns:
        The run directory.
    """
    check_bits(bits)
    cfg = load_config(config, overrides)
    if distributed and cfg.train.mode != "sampled":
        raise InputError("--distributed shards seed nodes across ranks: use it with --set train.mode=sampled")
    dev = resolve_device(device)
    ctx = init_distributed(dev) if distributed else DistContext()
    writer, ok = None, False
    try:
        if ctx.enabled and dev.startswith("cuda"):
            dev = f"cuda:{ctx.local_rank}"
        ds = Dataset.open(data_dir)
        writer = RunWriter(out_dir, resume) if ctx.is_main else None
        ck = _checkpoint_to_resume(writer, Path(out_dir), resume, cfg, bits, ds, dev, ctx)
        with threads_set(cfg.train.threads):
            _train(cfg, ds, bits, dev, ctx, writer, ck, progress)
        ok = True
        return Path(out_dir)
    finally:
        if writer is not None:
            writer.close(ok)
        shutdown(ctx)


def _checkpoint_to_resume(writer: RunWriter | None, out: Path, resume: bool, cfg: Config, bits: int, ds: Dataset,
                          dev: str, ctx: DistContext) -> dict[str, Any] | None:
    if writer is not None:  # rank 0 decides whether there is anything to resume
        ck = writer.read_checkpoint(dev)
        resume = ck is not None
    if ctx.enabled:
        resume = ctx.all_gather_object(resume)[0]
    if writer is None:
        ck = load_checkpoint(RunPaths(out).checkpoint_path, dev) if resume else None
    if ck is not None:
        check_resumable(ck, RunPaths(out).checkpoint_path, cfg.digest(), bits, ds)
    return ck


@dataclass
class _Setup:
    trainer: Trainer
    source: BatchSource
    graph: Data | None  # the whole training graph, where it is built (full; sampled up to EXACT_MAX_NODES)
    stats: dict[str, Any]
    n: int
    topology: Data | None = None  # sampled: the graph's sampling topology (with the nodes' aux_unit)


def _train(cfg: Config, ds: Dataset, bits: int, dev: str, ctx: DistContext, writer: RunWriter | None,
           ck: Mapping[str, Any] | None, progress: Any) -> None:
    s = _setup(cfg, ds, bits, dev, ctx)
    if ck is not None:
        restore(s.trainer, s.source, ck, ctx)
        logger.info(f"resuming {writer.out if writer else 'the run'} from epoch {s.trainer.epoch}")
    meta = {"bits": bits, "feature_dim": ds.feature_dim, "aux_dim": ds.aux_dim, "data_fingerprint": ds.fingerprint,
            "n_train": s.n, "config_yaml": cfg.to_yaml(), "config_digest": cfg.digest()}
    if writer is not None:
        writer.start_log(s.trainer.epoch)
    bar = None
    if progress is True and ctx.is_main:
        bar = Bar(cfg.train.epochs, s.trainer.epoch)
    elif progress and ctx.is_main:  # the caller's display
        bar = progress
        bar.start(cfg.train.epochs, s.trainer.epoch)
    try:
        fit(s.trainer, s.source, cfg.train.epochs, writer=writer, checkpoint_meta=meta,
            checkpoint_every=cfg.train.checkpoint_every, ctx=ctx, bar=bar)
    finally:
        if bar is not None:
            bar.close()
    cache = _finalise(s, ds, writer)
    try:
        state = training_state(s.trainer, s.source, ctx, meta, complete=True)  # collective under DDP
        if writer is not None:
            writer.finish(state, encoder_cache=cache, config_yaml=cfg.to_yaml(),
                          run_meta={"method": "lagnh", "bits": bits, "data": ds, "config": cfg.to_dict(),
                                    "extra": {"n_train": s.n, "epochs_trained": s.trainer.epoch, "graph": s.stats,
                                              "world_size": ctx.world_size}})
    finally:
        if cache is not None:
            cache.abort(writer.path)  # nothing left to do once committed
    ctx.barrier()


def _setup(cfg: Config, ds: Dataset, bits: int, dev: str, ctx: DistContext) -> _Setup:
    """The trainer (seeded, anchors and feature statistics set) and the mode's batch source."""
    rows = ds.split("train")
    n = len(rows)
    aux = ds.aux_rows(rows)  # N x c: small next to the features
    in_memory = cfg.train.mode != "sampled" or n <= EXACT_MAX_NODES
    x = ds.feature_rows(rows) if in_memory else None  # else the features stay memory-mapped
    trainer = new_trainer(cfg, ds, rows, aux, x, bits, dev)
    model = trainer.model
    if cfg.train.mode == "faithful":
        xt, at = torch.from_numpy(x).to(dev), torch.from_numpy(aux).to(dev)
        return _Setup(trainer, FaithfulSource(model, xt, at, cfg.train.batch_size, cfg.train.seed), None, {}, n)
    graph, stats = training_graph(cfg, ds, rows, aux, x, model)
    if cfg.train.mode == "full":
        graph = graph.to(dev)
        return _Setup(trainer, FullGraphSource(model, graph), graph, stats, n)
    source, topology = sampled_source(trainer, graph, ds, rows, aux, x, cfg, dev, ctx)
    return _Setup(trainer, source, graph if x is not None else None, stats, n, topology)


def new_trainer(cfg: Config, ds: Dataset, rows: np.ndarray, aux: np.ndarray, x: np.ndarray | None, bits: int,
                dev: str) -> Trainer:
    """The :class:`Trainer` of a fresh run: torch seeded with ``train.seed``, the attention's
    anchors drawn from the training aux (:func:`choose_anchors`), the input features'
    statistics set (from ``x``, the training rows in memory, or, in sampled mode, by chunked
    float64 sums over the dataset's memory map)."""
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(cfg, ds.feature_dim, ds.aux_dim, bits, dev)
    model = trainer.model
    if cfg.model.attention == "anchors":
        model.attention.set_anchors(torch.from_numpy(choose_anchors(aux, cfg.model.anchors, cfg.train.seed)).to(dev))
    if cfg.train.mode == "sampled":  # chunked float64 sums: the features may be a memory map
        if cfg.model.feature_norm == "standard":
            mean, std = feature_stats(ds.features, rows)
            model.feature_mean.copy_(mean.to(dev))
            model.feature_std.copy_(std.clamp_min(1e-6).to(dev))
    else:
        model.set_feature_stats(torch.from_numpy(x).to(dev))
    if model.has_semantics:  # the denoised semantic map (training/semantics.py)
        t0 = time.perf_counter()
        info = fit_semantic_map(model, x if x is not None else ds.features, aux, None if x is not None else rows,
                               cfg.graph.semantic_ridge, cfg.train.seed)
        logger.info(f"denoised semantics: ridge map over {info['rows']} items, {info['columns_kept']} of "
                    f"{info['columns']} aux columns kept (mean reliability {info['reliability_mean']}), "
                    f"{time.perf_counter() - t0:.1f}s")
    return trainer


def training_graph(cfg: Config, ds: Dataset, rows: np.ndarray, aux: np.ndarray, x: np.ndarray | None,
                   model: nn.Module | None = None) -> tuple[Data, dict[str, Any]]:
    """The training graph (:func:`~lagnh_pyg.graph.build_graph`) and its logged statistics:
    over ``x`` (the training rows in memory) with ``graph.index``, or, when ``x`` is None, by
    the chunked backend over the dataset's memory-mapped features.

    With a config that uses the denoised semantics, ``model`` (from :func:`new_trainer`, its
    semantic map fitted) gives them: the aux kNN list ranks by them (``graph.semantics:
    denoised``) and ``loss.reconstruct: Sd`` finds its target in ``graph.target_unit``."""
    t0 = time.perf_counter()
    semantic = None
    if uses_semantics(cfg):
        if model is None or not model.has_semantics:
            raise ValueError("this config uses the denoised semantics: pass the model of new_trainer")
        semantic = semantic_rows(model, x if x is not None else ds.features, aux, None if x is not None else rows)
    aux_knn = semantic if cfg.graph.semantics == "denoised" else None
    if x is not None:
        labels = ds.label_rows(rows) if ds.has_labels else None
        graph = build_graph(x, aux, cfg.graph.k, cfg.graph.sources, cfg.graph.index, labels, aux_knn=aux_knn)
    else:  # too many nodes to load: the chunked backend reads the features' memory map
        graph = build_graph(ds.features, aux, cfg.graph.k, cfg.graph.sources, "chunked", rows=rows,
                            aux_knn=aux_knn, seed=cfg.train.seed)
    if cfg.loss.reconstruct == "Sd":
        graph.target_unit = semantic_target(semantic, graph.edge_index, cfg.loss.diffusion)
    del semantic
    stats = {**graph.stats, "seconds": round(time.perf_counter() - t0, 3)}
    _log_graph(stats)
    return graph, stats


def sampled_source(trainer: Trainer, graph: Data, ds: Dataset, rows: np.ndarray, aux: np.ndarray,
                   x: np.ndarray | None, cfg: Config, dev: str, ctx: DistContext | None = None
                   ) -> tuple[SampledSource, Data]:
    """The sampled mode's batch source over ``graph``'s sampling topology (this rank's shard
    of the seed nodes), batches read from ``x`` or the dataset's memory map; and the topology."""
    ctx = ctx or DistContext()
    n = len(rows)
    target = getattr(graph, "target_unit", None)
    fetch = BatchFetcher(x, aux, None, dev, target) if x is not None else BatchFetcher(ds.features, aux, rows, dev, target)
    topology = sampling_topology_for_cache(graph)
    seeds = ctx.shard(torch.arange(n))
    g_steps = sampled_generator_steps(cfg, len(seeds))
    if g_steps != cfg.train.sampled_g_steps:
        logger.info(f"sampled: {math.ceil(len(seeds) / cfg.train.seed_batch_size)} seed batches an epoch, "
                    f"{g_steps} generator updates each: at least the full graph's train.g_steps={cfg.train.g_steps} "
                    f"an epoch (train.sampled_match_full=false keeps train.sampled_g_steps={cfg.train.sampled_g_steps})")
    source = SampledSource(_sampled_module(trainer, ctx, dev, cfg.train.sampled_unbiased), topology, fetch,
                           cfg.train.num_neighbors, seeds, cfg.train.seed_batch_size,
                           cfg.train.seed + 7919 * ctx.rank, cfg.train.max_batches or None, g_steps=g_steps)
    return source, topology


def sampled_generator_steps(cfg: Config, n_seeds: int) -> int:
    """Generator updates per seed batch in the sampled mode: ``train.sampled_g_steps``, raised
    (``train.sampled_match_full``) where a true epoch over ``n_seeds`` seed nodes has too few
    batches to take the ``train.g_steps`` generator updates of a full-graph epoch. An epoch
    capped by ``train.max_batches`` keeps ``train.sampled_g_steps``."""
    t = cfg.train
    if not t.sampled_match_full or t.max_batches or n_seeds < 1:
        return t.sampled_g_steps
    batches = math.ceil(n_seeds / t.seed_batch_size)
    return max(t.sampled_g_steps, math.ceil(t.g_steps / batches))


def _sampled_module(trainer: Trainer, ctx: DistContext, dev: str, unbiased: bool = True) -> nn.Module:
    """The sampled forward (``unbiased``: ``train.sampled_unbiased``); under DDP wrapped for
    the generator, with the discriminator's gradients averaged by hooks (they run on its own
    updates only, see Trainer)."""
    module: nn.Module = SampledModule(trainer.model, unbiased)
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    module = DDP(module, device_ids=[ctx.local_rank] if dev.startswith("cuda") else None)
    for p in trainer.disc.parameters():
        torch.distributed.broadcast(p.data, 0)
        p.register_post_accumulate_grad_hook(_average_gradients_hook(ctx))
    return module


def _average_gradients_hook(ctx: DistContext):
    def hook(p: Tensor) -> None:
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(ctx.world_size)

    return hook


def _log_graph(st: Mapping[str, Any]) -> None:
    msg = (f"graph: {st['nodes']} nodes, {st['edges']} edges, degree mean {st['degree_mean']:.1f} "
           f"(min {st['degree_min']}, max {st['degree_max']}), built in {st['seconds']:.1f}s ({st['index']} kNN)")
    if "edges_sharing_label" in st:
        msg += f"; {100 * st['edges_sharing_label']:.1f}% of edges join items sharing a label (diagnostic only)"
    logger.info(msg)


def _finalise(s: _Setup, ds: Dataset, writer: RunWriter | None) -> EncoderCacheFile | None:
    """The final model: sigma^2 calibrated (Eq. 3, 'auto') on the whole training graph, and
    the ``neighbours`` encoding's cache of the training nodes, written into the run directory
    by layer-wise inference (:mod:`~lagnh_pyg.training.encoder_cache`: bounded memory at any
    N); then, with ``model.code_rotation: itq``, the codes' rotation
    (:mod:`~lagnh_pyg.training.rotation`). Returns the cache file for :meth:`RunWriter.finish`
    to commit (None on other ranks)."""
    model = s.trainer.model.eval()
    if s.graph is None and s.topology is None:
        return None  # faithful mode: no training graph, no neighbours encoding
    shapes = cache_shapes(model, s.n)
    store = writer.encoder_cache_file(shapes) if writer is not None else MemoryCache(shapes)
    try:
        fill_encoder_cache(model, ds, s.graph, s.topology, store)
        if getattr(model, "code_rotation", None) is not None:  # model.code_rotation: itq
            cache = {name: torch.from_numpy(np.asarray(store.array(name)))
                     for name in ("xhat", "z1", "degree", "aux_unit")}
            fit_code_rotation(model, ds, s.trainer.cfg, cache, seed=s.trainer.cfg.train.seed)
    except BaseException:
        if writer is not None:
            store.abort(writer.path)
        raise
    return store if writer is not None else None


def fill_encoder_cache(model: nn.Module, ds: Dataset, graph: Data | None, topology: Data | None, store) -> None:
    """Write the ``neighbours`` encoding's cache of the training nodes into ``store``
    (:func:`~lagnh_pyg.training.encoder_cache.build_encoder_cache`) from the whole training
    graph: ``graph`` where it was built (with ``x`` when its features are in memory), else the
    sampling ``topology`` it lives on as (sampled mode beyond ``EXACT_MAX_NODES``)."""
    rows = ds.split("train")
    n = len(rows)
    if graph is not None:
        ei, s_a, aux_unit = graph.edge_index, graph.s_a, graph.aux_unit
    else:
        ei, s_a, aux_unit = graph_edges(topology)
    features, frows = (graph.x.cpu().numpy(), None) if graph is not None and "x" in graph else (ds.features, rows)
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(what: str) -> None:
        logger.info(f"encoder cache: {what} of {n} training nodes ({time.perf_counter() - t0:.1f}s, "
                    f"CPU {time.process_time() - c0:.1f}s)")

    build_encoder_cache(model, features, ds.aux_rows(rows), ei, s_a, aux_unit, store, rows=frows,
                        progress=progress)


def choose_anchors(aux: np.ndarray, m: int, seed: int) -> np.ndarray:
    """m training aux vectors (non-empty rows first), drawn with the run's seed; repeats
    only when the training set has fewer than m items."""
    rng = np.random.default_rng(seed)
    nonzero = np.flatnonzero(aux.sum(1) > 0)
    pool = nonzero if len(nonzero) else np.arange(len(aux))
    pick = rng.choice(pool, size=m, replace=len(pool) < m)
    return aux[np.sort(pick)]
