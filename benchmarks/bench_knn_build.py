"""Seconds and recall of the large-graph kNN build (lagnh_pyg.graph.build_graph, index=chunked).

Generates (once, under --cache) a synthetic dataset of N training items, then builds the
sampling topology with the chosen IVF parameters and reports the CPU seconds (process time: comparable on a loaded machine) of each kNN (visual,
aux) and of the union, plus the visual kNN's recall@k against exact cosine kNN on a sample of
nodes. Run single-threaded to compare settings; --threads 2 for the figure of goal 2.

Usage::

    python benchmarks/bench_knn_build.py --n 200000 [--nlist-mult 1] [--nprobe 8] [--pca-dim 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy


def dataset(n: int, cache: Path) -> Path:
    from lagnh_pyg.experiments.scaling import generate_data

    out = cache / f"syn{n}"
    if not (out / "manifest.json").is_file():
        generate_data(n, out)
    return out


def recall(features, rows: np.ndarray, ids_of, k: int, sample: int = 1000, seed: int = 0) -> float:
    """Mean |approx kNN ∩ exact kNN| / k over ``sample`` random nodes (cosine, self excluded)."""
    import faiss

    from lagnh_pyg.knn import l2_normalize

    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(len(rows), size=min(sample, len(rows)), replace=False))
    queries = l2_normalize(features[rows[q]])
    best_s = np.full((len(q), k + 1), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), k + 1), dtype=np.int64)
    for s in range(0, len(rows), 65536):  # exact search over the memory map in chunks
        block = l2_normalize(features[rows[s : s + 65536]])
        sims, ids = faiss.knn(queries, block, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
        cs, ci = np.concatenate([best_s, sims], 1), np.concatenate([best_i, ids + s], 1)
        top = np.argsort(-cs, axis=1)[:, : k + 1]
        best_s, best_i = np.take_along_axis(cs, top, 1), np.take_along_axis(ci, top, 1)
    hits = 0
    for j, node in enumerate(q):
        exact = set(best_i[j][best_i[j] != node][:k].tolist())
        hits += len(exact & set(ids_of(node).tolist()))
    return hits / (len(q) * k)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cache", default="/tmp/lagnh-bench")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pca-dim", type=int, default=64)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument("--nlist-mult", type=float, default=1.0, help="nlist = mult * sqrt(N)")
    ap.add_argument("--sources", default="both")
    args = ap.parse_args()

    import faiss
    import torch

    from lagnh_pyg import graph as graph_mod
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.knn import phase

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    ds = Dataset.open(dataset(args.n, Path(args.cache)))
    rows = ds.split("train")
    A = ds.aux_rows(rows)
    times, visual, phases = {}, {}, {"visual kNN": {}, "aux kNN": {}, "union": {}}
    orig = graph_mod.ivf_knn

    def timed_knn(arr, k, r=None, **kw):
        if args.nlist_mult != 1.0:
            kw["nlist"] = int(args.nlist_mult * np.sqrt(len(rows)))
            kw["train_size"] = max(65536, 40 * kw["nlist"])
        name = "aux kNN" if kw.get("mask") is not None else "visual kNN"
        t = time.process_time()
        out = orig(arr, k, r, **kw, timings=phases[name])
        times[name] = time.process_time() - t
        if name == "visual kNN":
            visual["ids"] = out[1]
        return out

    def timed(fn, name):
        def run(*a, **kw):
            with phase(phases["union"], name):
                return fn(*a, **kw)
        return run

    graph_mod.ivf_knn = timed_knn
    for fn, name in ((graph_mod._edges_from_knn, "edge lists"), (graph_mod._symmetric_with_self_loops, "symmetrise + union"),
                     (graph_mod.edge_aux_similarity, "S^a per edge"), (graph_mod.graph_stats, "graph stats")):
        setattr(graph_mod, fn.__name__, timed(fn, name))
    t, cpu = time.perf_counter(), time.process_time()
    topo = graph_mod.build_graph(ds.features, A, args.k, args.sources, "chunked", rows=rows,
                                 pca_dim=args.pca_dim or None, nprobe=args.nprobe)
    wall, total = time.perf_counter() - t, time.process_time() - cpu
    with phase(phases["union"], "sampling topology"):
        graph_mod.topology_of_graph(topo)
    rest = total - sum(times.values())
    for part, ph in phases.items():
        print(f"  {part}: " + ", ".join(f"{k} {w:.1f} s wall / {c:.1f} s CPU" for k, (w, c) in ph.items()))
    rec = recall(ds.features, rows, lambda i: visual["ids"][i], args.k) if "ids" in visual else float("nan")
    agree = float("nan")
    if ds.has_labels and "ids" in visual:  # what the graph is for: neighbours that share a label
        labels = ds.label_rows(rows).astype(bool)
        ids = visual["ids"]
        ok = ids >= 0
        src = np.repeat(np.arange(len(rows)), ids.shape[1])[ok.reshape(-1)]
        agree = float((labels[src] & labels[ids[ok]]).any(1).mean())
    print(f"N={len(rows)} threads={args.threads} pca={args.pca_dim} nprobe={args.nprobe} nlist_mult={args.nlist_mult}: "
          f"wall {wall:.1f} s (loaded); CPU {total:.1f} s = "
          + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + f", union+S^a {rest:.1f} s; edges {topo.stats['edges']}; visual recall@{args.k} {rec:.3f}, "
          f"visual edges sharing a label {agree:.3f}")


if __name__ == "__main__":
    main()
