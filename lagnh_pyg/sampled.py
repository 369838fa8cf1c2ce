"""Neighbour-sampled training (``train.mode: sampled``): LAGNH past the 5k-node training set.

Each step takes a mini-batch of seed nodes, samples ``train.num_neighbors[h]`` incoming edges
per node at hop ``h`` (:func:`~lagnh_pyg.sampling.make_neighbor_loader`), gathers the features
of the sampled nodes from the memory-mapped dataset, and runs the same update as
:meth:`~lagnh_pyg.train.Trainer.graph_step` — one discriminator update, then ``g_steps``
generator updates — with every loss term (Eq. 8-12, the S^a reconstruction included) over the
*seed* nodes only. The other sampled nodes only carry messages.

**GCN normalisation.** The edge weights S = S^v + eta S^a are recomputed from the current
attentive features in every forward pass (Eq. 3-5), so the weighted degrees
``d_i = sum_j S_ji`` that normalise the GCN (D^-1/2 S D^-1/2 or D^-1 S) cannot be precomputed
once on the full graph: they move with the parameters. Sampling every neighbour of every hop
would make them exact, but on a kNN graph that is ``~2k`` nodes per seed per hop and, for
D^-1/2 S D^-1/2, one hop more than the GCN's two (the degree of a message's *source* is
needed too). So :func:`sampled_degree` uses the full graph's fixed in-edge *counts* (known
once: the topology is fixed) and estimates each node's weighted degree from the weights the
batch does hold::

    d_i = S_ii + (count_i - 1) * mean of the sampled off-diagonal weights into i
          (or, for a node whose in-edges were not sampled -- the last hop's new nodes --
           of the sampled weights out of it; the kNN graph is symmetric, S_ij = S_ji)

When all of a node's in-edges are in the batch this *is* the full-graph degree, so with all
neighbours sampled and one batch holding every node a sampled step equals a full-graph step
(tests/test_sampled.py). With fan-outs below the kNN degree it is a ratio estimate whose
scale matches full-graph training (the naive subgraph degree would shrink the degrees of the
outer hops towards the self-loop alone, and train a different normalisation than encoding
and full-graph training use).

Memory: the loader holds only the topology (``edge_index``, ``s_a``, counts); a step's
features are read from the dataset's memory map for the batch's nodes only, so a step's
peak memory is set by the batch, not by N.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.utils import remove_self_loops, scatter

from .graph import edge_sq_dist, sort_by_target
from .sampling import make_neighbor_loader

logger = logging.getLogger(__name__)


# -- the topology the sampler walks -------------------------------------------------------------
def sampling_topology(edge_index: Tensor, s_a: Tensor, num_nodes: int) -> Data:
    """The fixed kNN topology without self-loops (each batch adds one per node itself, so a
    node can never lose its own loop to sampling), plus each node's full in-edge count
    (self-loop included) for :func:`sampled_degree`.

    Args:
        edge_index: (2, E) symmetric kNN topology, self-loops allowed (they are dropped).
        s_a: (E,) S^a per edge.
    Returns:
        ``Data(edge_index, s_a, count, num_nodes)``.
    """
    ei, s = remove_self_loops(edge_index, s_a)
    count = torch.bincount(ei[1], minlength=num_nodes) + 1
    return Data(edge_index=ei, s_a=s, count=count, num_nodes=num_nodes)


def topology_of_graph(graph: Data) -> Data:
    """:func:`sampling_topology` of a :func:`~lagnh_pyg.graph.build_graph` graph."""
    return sampling_topology(graph.edge_index, graph.s_a, graph.num_nodes)


# -- the forward pass ----------------------------------------------------------------------------
def sampled_degree(edge_index: Tensor, weight: Tensor, count: Tensor, num_nodes: int) -> Tensor:
    """Estimated full-graph weighted in-degree of each node of a sampled subgraph.

    Exact for a node whose ``count_i - 1`` off-diagonal in-edges are all in ``edge_index``;
    otherwise ``S_ii + (count_i - 1) * mean sampled off-diagonal weight`` (into the node if it
    has any, else out of it). See the module docstring for why.

    Args:
        edge_index: (2, E) with one self-loop per node. weight: (E,) S on those edges.
        count: (n,) full-graph in-edge count of each node, self-loop included.
    Returns:
        (n,) degrees (differentiable in ``weight``).
    """
    src, dst = edge_index
    loop = src == dst
    zero = torch.zeros_like(weight)
    one = torch.ones_like(weight)
    deg = scatter(weight, dst, dim=0, dim_size=num_nodes, reduce="sum")
    self_w = scatter(torch.where(loop, weight, zero), dst, dim=0, dim_size=num_nodes, reduce="sum")
    off = torch.where(loop, zero, weight)
    m_in = scatter(torch.where(loop, zero, one), dst, dim=0, dim_size=num_nodes, reduce="sum")
    sum_in = deg - self_w
    m_out = scatter(torch.where(loop, zero, one), src, dim=0, dim_size=num_nodes, reduce="sum")
    sum_out = scatter(off, src, dim=0, dim_size=num_nodes, reduce="sum")
    missing = (count.to(weight.dtype) - 1) - m_in
    mean_in = sum_in / m_in.clamp_min(1)
    mean_out = sum_out / m_out.clamp_min(1)
    mean = torch.where(m_in > 0, mean_in, mean_out)
    return torch.where(missing > 0, deg + missing * mean, deg)


def sampled_forward(model, x: Tensor, aux: Tensor, edge_index: Tensor, s_a: Tensor, count: Tensor) -> dict[str, Tensor]:
    """:meth:`LAGNH.forward <lagnh_pyg.nn.LAGNH.forward>` on a sampled subgraph, with the
    degrees of :func:`sampled_degree` in the GCN normalisation.

    Shapes: ``x`` (n, d), ``aux`` (n, c), ``edge_index`` (2, E) with one self-loop per node,
    ``s_a`` (E,), ``count`` (n,). Returns ``z`` (n, k), ``z1``, ``xhat``, ``edge_index``,
    ``edge_weight`` (normalised), ``degree``.
    """
    # the count of each node travels with its row; the model sorts the edges by target itself
    return model(x, aux, edge_index, s_a, degree_fn=lambda ei, w, n: sampled_degree(ei, w, count, n))


class SampledModule(nn.Module):
    """``sampled_forward`` as a module, so that DDP can wrap it (DDP hooks the wrapper's
    ``forward``); it shares its parameters with ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, aux: Tensor, edge_index: Tensor, s_a: Tensor, count: Tensor) -> dict[str, Tensor]:
        out = sampled_forward(self.model, x, aux, edge_index, s_a, count)
        # the classifier (Eq. 11) runs in the loss; computing it here too lets DDP see every
        # parameter in the graph of this forward pass
        out["logits"] = self.model.classify(out["z"])
        return out


# -- batches ---------------------------------------------------------------------------------------
class BatchFetcher:
    """Turns a loader batch (``n_id``, local ``edge_index``, ``s_a``, ``count``) into the
    model's input: features/aux of the batch's nodes read from row arrays (memory maps
    allowed), one self-loop per node (S^a_ii as :func:`~lagnh_pyg.graph.build_graph` sets
    it), everything moved to ``device``.

    Args:
        features: (M, d) array indexable by sorted int64 rows (np.memmap, ndarray) or a
            torch tensor.
        aux: (N, c) aux semantics of the graph's nodes (array or tensor), indexed by node.
        rows: optional (N,) map from graph node to row of ``features`` (the training split's
            dataset rows); None: node i is row i.
        device: torch device.
    """

    def __init__(self, features, aux, rows: np.ndarray | None = None, device: str | torch.device = "cpu") -> None:
        self.features, self.aux, self.rows = features, aux, rows
        self.device = torch.device(device)

    @staticmethod
    def _take(arr, nodes: np.ndarray, rows: np.ndarray | None = None) -> Tensor:
        if isinstance(arr, Tensor):
            return arr[torch.from_numpy(nodes)].to(torch.float32)
        rows = nodes if rows is None else rows[nodes]
        order = np.argsort(rows, kind="stable")  # sequential reads from the memory map
        out = np.empty((len(rows), arr.shape[1]), dtype=np.float32)
        out[order] = arr[rows[order]]
        return torch.from_numpy(out)

    def __call__(self, batch: Data) -> Data:
        nodes = batch.n_id.numpy()
        n = len(nodes)
        x = self._take(self.features, nodes, self.rows).to(self.device, non_blocking=True)
        aux = self._take(self.aux, nodes).to(self.device, non_blocking=True)
        au = torch.nn.functional.normalize(aux, dim=1)
        loops = torch.arange(n, device=self.device).repeat(2, 1)
        ei = torch.cat([batch.edge_index.to(self.device), loops], dim=1)
        s_a = torch.cat([batch.s_a.to(self.device, torch.float32), (au * au).sum(1).clamp_min(0)])
        return Data(x=x, aux=aux, aux_unit=au, edge_index=ei, s_a=s_a, count=batch.count.to(self.device),
                    batch_size=int(batch.batch_size), n_id=batch.n_id, num_nodes=n)


def make_sampled_loader(topology: Data, num_neighbors: Sequence[int], seeds: Tensor | None, batch_size: int, *,
                        shuffle: bool = True, seed: int | None = None, backend: str = "auto", **kwargs):
    """PyG loader of sampled subgraphs of ``topology`` around ``seeds`` (all nodes if None)."""
    return make_neighbor_loader(topology, num_neighbors, seeds, batch_size=batch_size, shuffle=shuffle, seed=seed,
                                backend=backend, **kwargs)


# -- the step and the epoch -------------------------------------------------------------------------
def _seeds_only(out: Mapping[str, Tensor], b: int) -> dict[str, Tensor]:
    return {k: (v[:b] if k in ("z", "z1", "xhat", "logits") else v) for k, v in out.items()}


def sampled_step(trainer, batch: Data, module: nn.Module | None = None) -> dict[str, float]:
    """One step on a sampled subgraph (from :class:`BatchFetcher`): a discriminator update on
    the seeds' codes, then ``g_steps`` generator updates with every loss over the seeds.

    Mirrors :meth:`~lagnh_pyg.train.Trainer.graph_step` (same order of random draws), so
    that one batch holding every node with all neighbours sampled reproduces it.

    Args:
        trainer: a :class:`~lagnh_pyg.train.Trainer`.
        batch: the fetched batch; its first ``batch.batch_size`` nodes are the seeds.
        module: the forward to use (a DDP-wrapped :class:`SampledModule`); default: the
            trainer's model.
    """
    trainer.model.train()
    fwd = module if module is not None else SampledModule(trainer.model)
    fwd.train()
    b = int(batch.batch_size)
    x, aux, au = batch.x, batch.aux, batch.aux_unit

    def forward():
        return _seeds_only(fwd(x, aux, batch.edge_index, batch.s_a, batch.count), b)

    return trainer.adversarial_step(forward, x[:b], aux[:b], au[:b])


def sampled_epoch(trainer, loader, fetch: Callable[[Data], Data], *, module: nn.Module | None = None,
                  max_batches: int | None = None, on_batch: Callable[[int], None] | None = None) -> dict[str, float]:
    """One pass over ``loader`` (or its first ``max_batches`` batches); mean loss terms."""
    sums: dict[str, float] = {}
    batches = 0
    for batch in loader:
        terms = sampled_step(trainer, fetch(batch), module)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        batches += 1
        if on_batch is not None:
            on_batch(batches)
        if max_batches is not None and batches >= max_batches:
            break
    out = {k: v / max(batches, 1) for k, v in sums.items()}
    out["batches"] = float(batches)
    return out


# -- the run -----------------------------------------------------------------------------------------
def _feature_stats(features, rows: np.ndarray, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Mean and std of the training rows, read from the memory map in chunks (float64 sums)."""
    s1 = np.zeros(features.shape[1], np.float64)
    s2 = np.zeros(features.shape[1], np.float64)
    for s in range(0, len(rows), chunk):
        block = np.asarray(features[rows[s : s + chunk]], dtype=np.float64)
        s1 += block.sum(0)
        s2 += (block * block).sum(0)
    n = len(rows)
    mean = s1 / n
    var = np.maximum(s2 - n * mean * mean, 0) / max(n - 1, 1)  # unbiased, as torch.std
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()


def _average_gradients_hook(ctx):
    import torch.distributed as dist

    def hook(p: Tensor) -> None:
        dist.all_reduce(p.grad)
        p.grad.div_(ctx.world_size)

    return hook


def sampled_train_run(data_dir, cfg, bits: int, out_dir, *, resume: bool = False, device: str = "auto",
                      progress: bool = True, distributed: bool = False):
    """:func:`~lagnh_pyg.train.train_run` for ``train.mode: sampled`` (it dispatches here).

    Writes the same run directory. Up to ``graph.EXACT_MAX_NODES`` training nodes the graph is
    :func:`~lagnh_pyg.graph.build_graph`'s (exact kNN) and the run ends like a full-graph run:
    sigma calibrated and the encoder cache (``neighbours`` encoding) computed on the whole
    graph. Beyond, the topology comes from :func:`~lagnh_pyg.large_graph.build_topology`
    (memory-mapped, IVF), features stay on disk, sigma is calibrated on sampled batches and
    no encoder cache is written (encode with ``--encoding self``).

    With ``distributed`` (under ``torchrun``) each rank trains on its shard of the seed nodes
    with a replica of the graph; the generator is wrapped in PyTorch DDP, the discriminator's
    gradients are averaged by hooks; rank 0 alone writes the run directory.
    """
    import time
    from pathlib import Path

    from .data.store import Dataset
    from .device import resolve_device
    from .distributed import DistContext, init_distributed, shutdown
    from .errors import InputError
    from .graph import EXACT_MAX_NODES, build_graph, self_mass
    from .run import write_run_meta
    from .train import (
        CHECKPOINT_FILE,
        ENCODER_FILE,
        LOG_FILE,
        Trainer,
        _choose_anchors,
        _progress,
        _read_log,
        _save_encoder_cache,
        record_epoch,
        resume_checkpoint,
        save_checkpoint,
    )
    from .utils import atomic_path, set_threads, sha256_file

    dev = resolve_device(device)
    ctx = init_distributed(dev) if distributed else DistContext()
    try:
        if ctx.enabled and dev.startswith("cuda"):
            dev = f"cuda:{ctx.local_rank}"
        out = Path(out_dir)
        ds = Dataset.open(data_dir)
        ckpt_path = out / CHECKPOINT_FILE
        ck = resume_checkpoint(out, cfg, bits, ds, dev) if resume else None
        if not resume and ctx.is_main and out.exists() and any(out.iterdir()):
            raise InputError(f"run directory {out} already exists; choose another --out, remove it, or pass --resume")
        ctx.barrier()
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        if cfg.train.threads:
            set_threads(cfg.train.threads)

        rows = ds.split("train")
        n = len(rows)
        A = ds.aux_rows(rows)  # N x c; small next to the features, which stay memory-mapped
        torch.manual_seed(cfg.train.seed)
        trainer = Trainer(cfg, ds.feature_dim, ds.aux_dim, bits, dev)
        if cfg.model.attention == "anchors":
            trainer.model.attention.set_anchors(
                torch.from_numpy(_choose_anchors(A, cfg.model.anchors, cfg.train.seed)).to(dev))
        if cfg.model.feature_norm == "standard":
            mean, std = _feature_stats(ds.features, rows)
            trainer.model.feature_mean.copy_(mean.to(dev))
            trainer.model.feature_std.copy_(std.clamp_min(1e-6).to(dev))

        t0 = time.perf_counter()
        graph = None
        if n <= EXACT_MAX_NODES:
            X = ds.feature_rows(rows)
            labels = ds.label_rows(rows) if ds.has_labels else None
            graph = build_graph(X, A, cfg.graph.k, cfg.graph.sources, cfg.graph.index, labels)
            topo = topology_of_graph(graph)
            stats = graph.stats
            fetch = BatchFetcher(X, A, None, dev)
        else:
            from .large_graph import build_topology

            topo = build_topology(ds.features, A, cfg.graph.k, cfg.graph.sources, rows, seed=cfg.train.seed,
                                  aux_by_node=True)
            stats = topo.stats
            fetch = BatchFetcher(ds.features, A, rows, dev)
        del topo.stats
        stats["seconds"] = time.perf_counter() - t0
        logger.info(f"graph: {stats['nodes']} nodes, {stats['edges']} edges, degree mean {stats['degree_mean']:.1f} "
                    f"(max {stats['degree_max']}), built in {stats['seconds']:.1f}s")
        seeds = ctx.shard(torch.arange(n))
        loader = make_sampled_loader(topo, cfg.train.num_neighbors, seeds, cfg.train.seed_batch_size, shuffle=True,
                                     seed=cfg.train.seed + 7919 * ctx.rank)
        module: nn.Module = SampledModule(trainer.model)
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            module = DDP(module, device_ids=[ctx.local_rank] if dev.startswith("cuda") else None)
            for p in trainer.disc.parameters():
                torch.distributed.broadcast(p.data, 0)
                p.register_post_accumulate_grad_hook(_average_gradients_hook(ctx))
        if ck is not None:
            trainer.load_state(ck)
            logger.info(f"resuming {out} from epoch {trainer.epoch}")
        meta = {"bits": bits, "feature_dim": ds.feature_dim, "aux_dim": ds.aux_dim, "data_fingerprint": ds.fingerprint,
                "n_train": n}
        log_path = out / LOG_FILE
        if ctx.is_main:
            log_lines = _read_log(log_path, trainer.epoch) if resume else []
            with atomic_path(log_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in log_lines))
        max_batches = cfg.train.max_batches or None
        epochs = cfg.train.epochs
        bar = _progress(progress and ctx.is_main, epochs, trainer.epoch)
        try:
            while trainer.epoch < epochs:
                t0 = time.perf_counter()
                terms = sampled_epoch(trainer, loader, fetch, module=module, max_batches=max_batches)
                terms = {k: ctx.all_reduce_mean(v) for k, v in terms.items()}
                trainer.epoch += 1
                if ctx.is_main:
                    with open(log_path, "a") as log:
                        record_epoch(trainer, cfg, terms, time.perf_counter() - t0, log, ckpt_path, meta, epochs, bar)
        finally:
            if bar is not None:
                bar.close()

        if not ctx.is_main:
            ctx.barrier()
            return out
        model = trainer.model.eval()
        cache = None
        if graph is not None:
            g = graph.to(dev)
            with torch.no_grad():
                xhat = model.attentive_features(g.x, g.aux)
                model.update_sigma2(xhat, g.edge_index)
                fwd = model(g.x, g.aux, g.edge_index, g.s_a)
                sm = self_mass(fwd["edge_index"], fwd["edge_weight"], n)
            logger.info(f"final graph: sigma^2 {float(model.sigma2):.4g}, mean self-loop share {sm:.3f}")
            cache = {"xhat": fwd["xhat"], "z1": fwd["z1"], "degree": fwd["degree"], "aux_unit": g.aux_unit}
        else:
            model.update_sigma2(*_sampled_sigma_inputs(model, loader, fetch))
            logger.info(f"final sigma^2 {float(model.sigma2):.4g} (from sampled batches); {n} training nodes are "
                        "too many for the neighbours encoding's cache: encode with --encoding self")
        save_checkpoint(ckpt_path, trainer, cfg, meta={**meta, "complete": True})
        if cache is not None:
            _save_encoder_cache(out / ENCODER_FILE, cache, sha256_file(ckpt_path)[:16])
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(cfg.to_yaml())
        write_run_meta(out, method="lagnh", bits=bits, data=ds, model_file=CHECKPOINT_FILE, config=cfg.to_dict(),
                       extra={"n_train": n, "epochs_trained": trainer.epoch, "graph": stats,
                              "world_size": ctx.world_size})
        ctx.barrier()
        return out
    finally:
        shutdown(ctx)


@torch.no_grad()
def _sampled_sigma_inputs(model, loader, fetch, batches: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 3's 'auto' sigma^2 on the final model from a few sampled batches: their attentive
    features' squared distances over the sampled edges (mean = the full graph's in
    expectation). Returns (xhat, edge_index, d2) stacked over the batches."""
    xs, eis, d2s, offset = [], [], [], 0
    for i, batch in enumerate(loader):
        b = fetch(batch)
        xhat = model.attentive_features(b.x, b.aux)
        ei, _ = sort_by_target(b.edge_index, b.s_a)
        xs.append(xhat)
        eis.append(ei + offset)
        d2s.append(edge_sq_dist(xhat, ei))
        offset += b.num_nodes
        if i + 1 >= batches:
            break
    return torch.cat(xs), torch.cat(eis, 1), torch.cat(d2s)
