"""Where the time of a sampled training step goes, next to a full-graph step on the same nodes.

Single-threaded by default (ratios, not absolute seconds, are what to read on a shared machine).
Phases of a sampled epoch: sampling (the loader), feature gather (BatchFetcher), and inside
the step the attention (Eq. 1-2), edge weights (Eq. 3-5), degree estimate, GCN, loss terms and
backward + optimiser (the rest of the step).

Usage::

    python benchmarks/profile_sampled.py DATA_DIR [--config configs/demo.yaml] [--batches 4]
        [--set train.seed_batch_size=512 ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy

TIMES: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


@contextmanager
def timed(name: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        TIMES[name] += time.perf_counter() - t
        COUNTS[name] += 1


def wrap(obj, attr: str, name: str) -> None:
    """Replace ``obj.attr`` by a timed copy (forward only; backward lands in 'backward+opt')."""
    fn = getattr(obj, attr)

    def timed_fn(*a, **kw):
        with timed(name):
            return fn(*a, **kw)

    setattr(obj, attr, timed_fn)


def instrument(trainer) -> None:
    import lagnh_pyg.nn.lagnh as lagnh_mod
    import lagnh_pyg.training.sampled as sampled_mod

    m = trainer.model
    wrap(m, "attentive_features", "attention")
    wrap(m, "edge_weights", "edge weights (Eq. 3-5)")
    wrap(m.generator, "forward", "GCN (2 layers)")
    if hasattr(m.generator, "forward_rows"):  # absent in checkouts before it (the 'before' profiles)
        wrap(m.generator, "forward_rows", "GCN (2 layers)")
    wrap(trainer, "generator_losses", "loss terms")
    wrap(trainer, "discriminator_update", "discriminator update")
    wrap(sampled_mod, "sampled_degree", "degree estimate")
    wrap(lagnh_mod, "normalize_edge_weight", "normalisation")
    wrap(lagnh_mod, "sort_by_target", "sort edges")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--batches", type=int, default=0, help="sampled batches to time (0: one epoch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lagnh_pyg.config import load_config
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.graph import build_graph, topology_of_graph
    from lagnh_pyg.training import SampledSource, Trainer
    from lagnh_pyg.training.runner import choose_anchors
    from lagnh_pyg.training.sampled import BatchFetcher, SampledModule
    from lagnh_pyg.training.sources import sampled_step_of

    cfg = load_config(args.config, ["train.mode=sampled", *args.overrides])
    ds = Dataset.open(args.data_dir)
    rows = ds.split("train")
    X, A = ds.feature_rows(rows), ds.aux_rows(rows)
    n = len(rows)
    torch.manual_seed(0)
    trainer = Trainer(cfg, ds.feature_dim, ds.aux_dim, args.bits)
    trainer.model.attention.set_anchors(torch.from_numpy(choose_anchors(A, cfg.model.anchors, 0)))
    trainer.model.set_feature_stats(torch.from_numpy(X))
    graph = build_graph(X, A, cfg.graph.k, cfg.graph.sources, cfg.graph.index)
    topo = topology_of_graph(graph)

    # the full-graph epoch first (the reference: the config without the --set overrides),
    # same process, same model sizes
    full_cfg = load_config(args.config)
    ref = Trainer(full_cfg, ds.feature_dim, ds.aux_dim, args.bits)
    ref.model.load_state_dict(trainer.model.state_dict())
    t = time.perf_counter()
    reps = 2
    for _ in range(reps):
        ref.graph_step(graph)
    full_s = (time.perf_counter() - t) / reps
    print(f"{n} nodes, {graph.edge_index.shape[1]} edges (self-loops included); threads {args.threads}")
    print(f"full-graph epoch (1 D + {full_cfg.train.g_steps} G steps on all nodes): {full_s:.3f} s")

    instrument(trainer)
    source = SampledSource(SampledModule(trainer.model), topo, BatchFetcher(X, A), cfg.train.num_neighbors, None,
                           cfg.train.seed_batch_size, seed=0, g_steps=cfg.train.sampled_g_steps)
    fetch = source.fetch
    it = iter(source.loader)
    nodes = edges = seeds = batches = 0
    t_all = time.perf_counter()
    while True:
        with timed("sampling"):
            batch = next(it, None)
        if batch is None:
            break
        with timed("feature gather"):
            b = fetch(batch)
        with timed("step (all)"):
            trainer.step(sampled_step_of(source.module, b, source.g_steps))
        nodes += b.num_nodes
        edges += b.edge_index.shape[1]
        seeds += b.batch_size
        batches += 1
        if args.batches and batches >= args.batches:
            break
    total = time.perf_counter() - t_all
    print(f"sampled: {batches} batches of {cfg.train.seed_batch_size} seeds, fan-out {cfg.train.num_neighbors}, "
          f"g_steps {cfg.train.sampled_g_steps}: {total:.3f} s; mean {nodes / batches:.0f} nodes, {edges / batches:.0f} edges "
          f"a batch ({nodes / seeds:.1f} nodes per seed); {seeds / total:.0f} seeds/s")
    if not args.batches or batches * cfg.train.seed_batch_size >= n:
        print(f"sampled epoch / full epoch: {total / full_s:.2f}x")
    else:
        est = total * n / seeds
        print(f"sampled epoch (extrapolated from {seeds} seeds) / full epoch: {est / full_s:.2f}x")
    report(total)


def report(total: float) -> None:
    """Print each phase's seconds and share of ``total`` (backward + optimiser = the rest of the step)."""
    inner = sum(v for k, v in TIMES.items() if k not in ("sampling", "feature gather", "step (all)"))
    TIMES["backward+opt+rest"] = TIMES["step (all)"] - inner
    order = ["sampling", "feature gather", "step (all)", "attention", "edge weights (Eq. 3-5)", "sort edges",
             "degree estimate", "normalisation", "GCN (2 layers)", "loss terms", "discriminator update",
             "backward+opt+rest"]
    for k in order:
        if k in TIMES:
            print(f"  {k:<24} {TIMES[k]:8.3f} s  {100 * TIMES[k] / total:5.1f}%  ({COUNTS.get(k, 0)} calls)")


if __name__ == "__main__":
    main()
