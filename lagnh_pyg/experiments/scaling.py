"""The scaling experiment: cost of LAGNH's graph and training versus the number of nodes N.

For each N a synthetic dataset (N training nodes + 1,000 queries, 512-d, the database = the
training items) is generated, then a *fresh subprocess* (so peak memories do not mix)
measures:

* graph build seconds — exact FAISS kNN (:func:`~lagnh_pyg.graph.build_graph`) up to
  ``full_max`` nodes, its chunked PCA+IVF backend over the memory map
  (:func:`~lagnh_pyg.knn.ivf_knn`) beyond;
* seconds per full-graph epoch (one step of :class:`~lagnh_pyg.training.FullGraphSource`,
  timed after a warm-up epoch) where N <= ``full_max``;
* seconds per sampled epoch with the default sampled settings (1,024 seeds a batch, fan-out
  [5, 3], one generator update a batch): ``epochs`` true epochs (every node a seed once an
  epoch), or, with ``max_batches``, the first ``max_batches`` batches of one (the report says
  which) — features read from the memory map per batch; ``seeds_per_s`` = seed nodes a second;
* peak RSS of the process (``ru_maxrss``);
* MAP@1000 (protocol ``lagnh``) of the sampled model's codes for the 1,000 queries against a
  database subsample of at most ``db_max`` items, with the default ``neighbours`` encoding at
  every N (its cache built by layer-wise inference as ``lagnh train`` builds it; ``encoding``
  names it, ``cache_s`` / ``neighbour_index_s`` / ``encode_s`` time its three parts).

Example::

    lagnh experiment scaling --sizes 5000,20000,100000,1000000 --out reports/scaling
"""

from __future__ import annotations

import gc
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SCALING_CONFIG: dict[str, Any] = {
    # a small generator so that 2 CPU cores finish the 1M row; the graph is the default one
    "graph": {"k": 10},
    "model": {"anchors": 256, "att_dim": 128, "hidden": 256},
    # the sampled settings are the defaults (train.seed_batch_size, num_neighbors, sampled_g_steps)
    "train": {"mode": "sampled", "lr": 1e-3},
}


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def measure(data_dir: str | os.PathLike, *, bits: int = 32, full_max: int = 20000, max_batches: int = 0,
            db_max: int = 20000, threads: int = 2, device: str = "auto", seed: int = 0,
            epochs: int = 1) -> dict[str, Any]:
    """One row of the table, in this process (run it in a fresh one: peak RSS is per process).

    The trainer, the graph and the sampled batch source are made as ``lagnh train`` makes them
    (:func:`~lagnh_pyg.training.runner.new_trainer`, ``training_graph``, ``sampled_source``);
    training goes through the one loop (:func:`~lagnh_pyg.training.fit`) with the full-graph
    and the sampled batch sources, writing no run directory.
    """
    import torch

    from ..config import load_config
    from ..data.store import Dataset
    from ..device import resolve_device
    from ..knn import EXACT_MAX_NODES
    from ..runtime import drop_mapped_pages, set_threads
    from ..training import FullGraphSource, fit
    from ..training.runner import new_trainer, sampled_source, training_graph

    set_threads(threads)
    dev = resolve_device(device)
    cfg = load_config(SCALING_CONFIG, [("train.seed", seed), ("train.max_batches", max_batches)])
    ds = Dataset.open(data_dir)
    rows = ds.split("train")
    n = len(rows)
    A = ds.aux_rows(rows)
    row: dict[str, Any] = {"N": n, "device": dev}

    t0 = time.perf_counter()
    X = ds.feature_rows(rows) if n <= min(full_max, EXACT_MAX_NODES) else None  # else chunked, memory-mapped
    graph, stats = training_graph(cfg, ds, rows, A, X)
    row["index"] = stats["index"]
    row["graph_s"] = time.perf_counter() - t0
    row["rss_after_graph_gib"] = _peak_rss_gib()

    row["full_epoch_s"] = None
    if X is not None:
        tr = new_trainer(cfg, ds, rows, A, X, bits, dev)
        g = graph.to(dev)
        log = fit(tr, FullGraphSource(tr.model, g), 2, sync=lambda: _sync(dev))  # the first epoch warms up
        row["full_epoch_s"] = log[1]["seconds"]
        del tr, g

    tr = new_trainer(cfg, ds, rows, A, X, bits, dev)
    source, topo = sampled_source(tr, graph, ds, rows, A, X, cfg, dev)
    row["edges"] = int(topo.edge_index.shape[1]) // 2
    batches_per_epoch = len(source.loader)
    capped = bool(max_batches) and batches_per_epoch > max_batches
    log = fit(tr, source, 1 if capped else epochs, sync=lambda: _sync(dev))
    row["sampled_s"] = log[0]["seconds"]  # one epoch (the first)
    row["sampled_batches"] = int(log[0]["batches"])
    row["sampled_epochs"] = len(log)
    row["batches_per_true_epoch"] = batches_per_epoch
    row["sampled_capped"] = capped
    row["s_per_batch"] = row["sampled_s"] / max(row["sampled_batches"], 1)
    seeds = sum(min(n, int(r["batches"]) * cfg.train.seed_batch_size) for r in log)
    row["seeds_per_s"] = seeds / max(sum(r["seconds"] for r in log), 1e-9)
    row["loss_g"] = log[-1]["loss_g"]
    # trained: the loader (its sampler's arrays) and the topology are not needed again (the
    # cache below walks ``graph``), nor are the features' mapped pages that the batches read
    # (at 1M nodes: 0.7 GB of topology and up to 2 GiB of pages, not held through the cache)
    del source, topo
    gc.collect()
    drop_mapped_pages(ds.features)
    row.update(_map_of_codes(tr.model.eval(), graph, ds, rows, cfg, dev, db_max, seed))
    row["peak_rss_gib"] = _peak_rss_gib()
    if dev.startswith("cuda"):
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def _map_of_codes(model, graph, ds, rows: np.ndarray, cfg, dev: str, db_max: int, seed: int) -> dict[str, Any]:
    """MAP@1000 of the codes: queries vs a database subsample, with the default
    ``neighbours`` encoding at every N. Its cache is built as ``lagnh train`` builds it
    (:func:`~lagnh_pyg.training.runner.fill_encoder_cache`: sigma^2 calibrated on the
    whole graph, layer-wise inference in node chunks, written by blocks to a temporary
    :class:`~lagnh_pyg.cache_file.EncoderCacheFile` and read back memory-mapped), the training
    neighbours by :func:`~lagnh_pyg.encode.dataset_neighbours` (chunked IVF past
    ``EXACT_MAX_NODES``)."""
    import tempfile

    from ..cache_file import EncoderCacheFile, load_encoder_cache
    from ..codes import pack_codes
    from ..encode import LagnhEncoder, dataset_neighbours
    from ..metrics import mean_average_precision
    from ..rundir import Run
    from ..training.encoder_cache import cache_shapes
    from ..training.runner import fill_encoder_cache

    with tempfile.TemporaryDirectory(prefix="lagnh-scaling-cache-") as tmp:
        t0 = time.perf_counter()
        run = Run(Path(tmp), {"model_fingerprint": "scaling"})
        store = EncoderCacheFile(tmp, cache_shapes(model, len(rows)), run.encoder_cache_path.name)
        try:
            fill_encoder_cache(model, ds, graph, None, store)
            store.commit(tmp, "scaling")
        finally:
            store.abort(tmp)
        cache_s = time.perf_counter() - t0
        cache = load_encoder_cache(run, {"xhat", "z1", "degree", "aux_unit"})
        t0 = time.perf_counter()
        near = dataset_neighbours(ds, cfg, model)
        index_s = time.perf_counter() - t0
        enc = LagnhEncoder(model, "neighbours", near, cache, device=dev)
        q = ds.split("query")
        db = ds.split("database")
        rng = np.random.default_rng(seed)
        if len(db) > db_max:
            db = np.sort(rng.choice(db, size=db_max, replace=False))
        t0 = time.perf_counter()
        qc = pack_codes(enc.encode(ds.feature_rows(q), ds.aux_rows(q)))
        dbc = np.concatenate([pack_codes(enc.encode(f, a)) for _, f, a in ds.iter_rows(db, 8192)])
        encode_s = time.perf_counter() - t0
        del enc, cache
    return {"encoding": "neighbours", "cache_s": cache_s, "neighbour_index_s": index_s, "encode_s": encode_s,
            "db_size": len(db),
            "map1000": mean_average_precision(qc, dbc, ds.label_rows(q), ds.label_rows(db), 1000, "lagnh")}


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def generate_data(n: int, out: Path, dim: int = 512, seed: int = 0) -> Path:
    from ..data.synthetic import SyntheticSpec, generate

    if (out / "manifest.json").is_file():
        return out
    return generate(SyntheticSpec(n=n + 1000, dim=dim, n_train=n, n_query=1000, train_in_database=True, seed=seed),
                    out, overwrite=True)


def run_scaling(sizes: list[int], out_dir: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
                bits: int = 32, full_max: int = 20000, max_batches: int = 0, db_max: int = 20000,
                threads: int = 2, device: str = "auto", keep_data: bool = False, epochs: int = 1) -> Path:
    """Every size in its own subprocess; writes OUT/scaling.md, scaling.json, scaling.png."""
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root else out / "data"
    rows = []
    for n in sizes:
        made = not (root / f"syn{n}" / "manifest.json").is_file()  # a dataset found there is not ours to delete
        data = generate_data(n, root / f"syn{n}")
        cmd = [sys.executable, "-m", "lagnh_pyg.experiments.scaling", str(data), str(bits), str(full_max),
               str(max_batches), str(db_max), str(threads), device, str(epochs)]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        if res.returncode != 0:
            raise RuntimeError(f"scaling row N={n} failed:\n{res.stderr[-2000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        logger.info(f"N={n}: {row}")
        (out / "scaling.json").write_text(json.dumps(rows, indent=1))
        if made and not keep_data:
            shutil.rmtree(data, ignore_errors=True)
    write_scaling_report(rows, out, max_batches=max_batches, db_max=db_max, epochs=epochs)
    return out


def write_scaling_report(rows: list[dict], out: Path, *, max_batches: int, db_max: int, epochs: int = 1) -> Path:
    from ..report.plots import pyplot
    from ..report.provenance import provenance, provenance_markdown
    from ..report.tables import markdown_table

    header = ["N", "kNN index", "graph build s", "full-graph s/epoch", "sampled s/epoch (batches)", "seeds/s",
              "peak RSS GiB", "MAP@1000 (encoding)"]
    table = []
    for r in rows:
        samp = f"{r['sampled_s']:.1f} ({r['sampled_batches']}{' of ' + str(r['batches_per_true_epoch']) if r['sampled_capped'] else ', true epoch'})"
        table.append([r["N"], r["index"], f"{r['graph_s']:.1f}",
                      "-" if r["full_epoch_s"] is None else f"{r['full_epoch_s']:.2f}", samp,
                      f"{r.get('seeds_per_s', float('nan')):,.0f}", f"{r['peak_rss_gib']:.2f}",
                      f"{r['map1000']:.4f} ({r.get('encoding', 'self')})"])
    cfg = json.dumps(SCALING_CONFIG)
    md = [
        "# Scaling: LAGNH cost versus N",
        "",
        markdown_table(header, table),
        "",
        f"Synthetic data (512-d, 24 classes + 40 junk tags), N training nodes + min(1,000, (N + 1,000)/10) queries, database = the non-query items; each N measured "
        f"in a fresh process (peak RSS = that process's ru_maxrss, data generation excluded). Config: `{cfg}`, "
        f"32 bits. Graph: exact FAISS kNN where a full-graph epoch is timed, chunked PCA-64 + IVF (nlist = sqrt N, nprobe 8) "
        f"beyond. Full-graph epoch = one step over the whole graph (one D update, 5 G updates), measured after a "
        f"warm-up step, only where N <= the full-graph limit. Sampled training = the default sampled settings "
        f"(seed batches of 1,024, fan-out [5, 3], one D and one G update a batch), "
        + (f"epochs capped at {max_batches} seed batches where a true epoch has more (column says 'k of total'), "
           if max_batches else f"{epochs} true epoch(s): every training node a seed {epochs} time(s), ")
        + f"seeds/s over them. MAP@1000 (protocol lagnh) after that training, 1,000 queries against a random "
        f"database subsample of at most {db_max:,} items, with the default `neighbours` encoding at every N "
        f"(training-node cache by layer-wise inference over the whole graph, as `lagnh train` writes it; "
        f"training neighbours by exact FAISS up to 200,000 nodes, chunked PCA-64 + IVF with an exact re-rank beyond).",
        "",
        "![cost vs N](scaling.png)",
        "",
        provenance_markdown(provenance()),
    ]
    (out / "scaling.md").write_text("\n".join(md) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=110)
    ns = [r["N"] for r in rows]
    ax.plot(ns, [r["graph_s"] for r in rows], marker="o", label="graph build (s)")
    full = [(r["N"], r["full_epoch_s"]) for r in rows if r["full_epoch_s"] is not None]
    if full:
        ax.plot(*zip(*full), marker="o", label="full-graph epoch (s)")
    ax.plot(ns, [r["s_per_batch"] for r in rows], marker="o", label="sampled step (s / seed batch)")
    ax.plot(ns, [r["peak_rss_gib"] for r in rows], marker="s", linestyle="--", label="peak RSS (GiB)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (training nodes)")
    ax.set_title("LAGNH cost vs N (log-log)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scaling.png")
    plt.close(fig)
    return out / "scaling.md"


if __name__ == "__main__":  # one row, in a fresh process: python -m lagnh_pyg.experiments.scaling DATA ...
    a = sys.argv[1:]
    result = measure(a[0], bits=int(a[1]), full_max=int(a[2]), max_batches=int(a[3]), db_max=int(a[4]),
                     threads=int(a[5]), device=a[6], epochs=int(a[7]) if len(a) > 7 else 1)
    print(json.dumps(result))
