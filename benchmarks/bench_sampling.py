"""Neighbour-sampling throughput: our pure-torch sampler vs PyG's NeighborLoader (if installed).

Prints seconds for one pass over all seed nodes of a symmetrised random 10-NN graph.
Usage: python benchmarks/bench_sampling.py [--nodes 100000] [--threads 1]
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy

from lagnh_pyg.sampling import has_compiled_sampler, make_neighbor_loader  # noqa: E402


def knn_like_graph(n: int, k: int, seed: int = 0) -> Data:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (n * k,), generator=g)
    dst = torch.arange(n).repeat_interleave(k)
    ei = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    ei = torch.unique(ei[:, ei[0] != ei[1]], dim=1)
    return Data(edge_index=ei, num_nodes=n)


def run(backend: str, data: Data, fanout, batch_size: int) -> tuple[float, int]:
    t = time.perf_counter()
    loader = make_neighbor_loader(data, fanout, batch_size=batch_size, seed=0, backend=backend)
    nodes = 0
    for b in loader:
        nodes += b.n_id.numel()
    return time.perf_counter() - t, len(loader)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = knn_like_graph(args.nodes, args.k)
    print(f"graph: {args.nodes} nodes, {data.num_edges} edges; threads={args.threads}")
    for fanout in ([10, 10], [-1, -1]):
        secs, batches = run("torch", data, fanout, args.batch_size)
        line = f"fanout {fanout}: torch sampler {secs:.2f} s for {batches} batches"
        if has_compiled_sampler():
            ref, _ = run("pyg", data, fanout, args.batch_size)
            line += f"; PyG NeighborLoader {ref:.2f} s (ratio {secs / ref:.2f})"
        else:
            line += "; PyG NeighborLoader unavailable (no pyg-lib/torch-sparse)"
        print(line)


if __name__ == "__main__":
    main()
