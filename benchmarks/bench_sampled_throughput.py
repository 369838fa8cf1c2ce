"""Seed nodes per second of sampled training at large N (goal: >= 2,000 at 1M nodes on 2 cores).

Builds the chunked kNN graph of a dataset's training split (features stay memory-mapped),
then times ``--batches`` seed batches of the default sampled settings (or --set overrides)
after one warm-up batch; prints graph seconds, seeds/s, nodes per batch and peak RSS.

Usage::

    python benchmarks/bench_sampled_throughput.py DATA_DIR [--batches 20] [--threads 2] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()

    from lagnh_pyg.config import load_config
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.experiments.scaling import SCALING_CONFIG, _fresh_trainer
    from lagnh_pyg.graph import build_graph, topology_of_graph
    from lagnh_pyg.training import SampledSource
    from lagnh_pyg.training.sampled import BatchFetcher, SampledModule
    from lagnh_pyg.training.sources import sampled_step_of
    from lagnh_pyg.utils import set_threads

    set_threads(args.threads)
    cfg = load_config(SCALING_CONFIG, args.overrides)
    ds = Dataset.open(args.data_dir)
    rows = ds.split("train")
    aux = ds.aux_rows(rows)
    t0 = time.perf_counter()
    graph = build_graph(ds.features, aux, cfg.graph.k, cfg.graph.sources, "chunked", rows=rows)
    graph_s = time.perf_counter() - t0
    topo = topology_of_graph(graph)
    tr = _fresh_trainer(cfg, ds, aux, rows, 32, "cpu", 0)
    source = SampledSource(SampledModule(tr.model), topo, BatchFetcher(ds.features, aux, rows), cfg.train.num_neighbors,
                           None, cfg.train.seed_batch_size, 0, g_steps=cfg.train.sampled_g_steps)
    it = iter(source.loader)
    tr.step(sampled_step_of(source.module, source.fetch(next(it)), source.g_steps))  # warm-up
    nodes = seeds = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
        b = source.fetch(next(it))
        tr.step(sampled_step_of(source.module, b, source.g_steps))
        nodes += b.num_nodes
        seeds += int(b.batch_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"N={len(rows)} threads={args.threads} seeds/batch={cfg.train.seed_batch_size} fan-out={cfg.train.num_neighbors} "
          f"g_steps/batch={cfg.train.sampled_g_steps}: graph {graph_s:.0f} s ({graph.stats['index']}); "
          f"{seeds / wall:,.0f} seeds/s wall (loaded), {seeds / cpu * args.threads:,.0f} seeds/s at full use of "
          f"{args.threads} cores (CPU time); {nodes / args.batches:,.0f} nodes a batch; peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
