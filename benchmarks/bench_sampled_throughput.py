"""Seed nodes per second of sampled training at large N (goal: >= 2,000 at 1M nodes on 2 cores).

Builds the chunked kNN graph of a dataset's training split (features stay memory-mapped),
then times ``--batches`` seed batches of the default sampled settings (or --set overrides)
after one warm-up batch; prints graph seconds, seeds/s, nodes per batch and peak RSS.
``--profile`` adds the per-phase times of the timed batches (sampling, feature gather, and
inside the step the phases of ``benchmarks/profile_sampled.py``); ``--topology FILE`` keeps
the sampling topology in a file (built and saved the first time, loaded afterwards) so that
repeated step measurements skip the graph build.

Usage::

    python benchmarks/bench_sampled_throughput.py DATA_DIR [--batches 20] [--threads 2] [--profile]
        [--topology /tmp/topo.pt] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy


def topology(ds, rows, aux, cfg, path: str | None):
    """(sampling topology, graph seconds or None when loaded from ``path``)."""
    from torch_geometric.data import Data

    from lagnh_pyg.graph import build_graph, topology_of_graph

    if path and os.path.isfile(path):
        t = torch.load(path, weights_only=True)
        return Data(edge_index=t["edge_index"], s_a=t["s_a"], count=t["count"], num_nodes=int(t["num_nodes"])), None
    t0 = time.perf_counter()
    graph = build_graph(ds.features, aux, cfg.graph.k, cfg.graph.sources, "chunked", rows=rows)
    graph_s = time.perf_counter() - t0
    topo = topology_of_graph(graph)
    print(f"graph {graph_s:.1f} s wall ({graph.stats['index']}, {graph.stats['edges']} edges)")
    if path:
        torch.save({"edge_index": topo.edge_index, "s_a": topo.s_a, "count": topo.count,
                    "num_nodes": topo.num_nodes}, path)
    return topo, graph_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--topology", default=None, help="file keeping the sampling topology between runs")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()

    from lagnh_pyg.config import load_config
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.experiments.scaling import SCALING_CONFIG
    from lagnh_pyg.runtime import set_threads
    from lagnh_pyg.training import SampledSource
    from lagnh_pyg.training.runner import new_trainer
    from lagnh_pyg.training.sampled import BatchFetcher, SampledModule
    from lagnh_pyg.training.sources import sampled_step_of

    sys.path.insert(0, os.path.dirname(__file__))
    import profile_sampled as prof

    set_threads(args.threads)
    cfg = load_config(SCALING_CONFIG, args.overrides)
    ds = Dataset.open(args.data_dir)
    rows = ds.split("train")
    aux = ds.aux_rows(rows)
    topo, graph_s = topology(ds, rows, aux, cfg, args.topology)
    tr = new_trainer(cfg, ds, rows, aux, None, 32, "cpu")  # as lagnh train makes it (sampled: features mapped)
    source = SampledSource(SampledModule(tr.model), topo, BatchFetcher(ds.features, aux, rows), cfg.train.num_neighbors,
                           None, cfg.train.seed_batch_size, 0, g_steps=cfg.train.sampled_g_steps)
    it = iter(source.loader)
    tr.step(sampled_step_of(source.module, source.fetch(next(it)), source.g_steps))  # warm-up
    if args.profile:
        prof.instrument(tr)
    nodes = seeds = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
        with prof.timed("sampling"):
            batch = next(it)
        with prof.timed("feature gather"):
            b = source.fetch(batch)
        with prof.timed("step (all)"):
            tr.step(sampled_step_of(source.module, b, source.g_steps))
        nodes += b.num_nodes
        seeds += int(b.batch_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    graph = f"graph {graph_s:.0f} s" if graph_s is not None else f"graph loaded from {args.topology}"
    print(f"N={len(rows)} threads={args.threads} seeds/batch={cfg.train.seed_batch_size} fan-out={cfg.train.num_neighbors} "
          f"g_steps/batch={cfg.train.sampled_g_steps}: {graph}; "
          f"{seeds / wall:,.0f} seeds/s wall, {seeds / cpu * args.threads:,.0f} seeds/s at full use of "
          f"{args.threads} cores (CPU time {cpu:.1f} s for {wall:.1f} s wall); {nodes / args.batches:,.0f} nodes a batch; "
          f"peak RSS {rss:.2f} GiB; load average {os.getloadavg()[0]:.2f}")
    if args.profile:
        prof.report(wall)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
