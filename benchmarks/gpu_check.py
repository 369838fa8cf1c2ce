"""GPU check: seconds of the COCO-size full-graph training and of the 1M row of
``lagnh experiment scaling`` (one sampled epoch with the default sampled settings: 1,024
seeds a batch, fan-out [5, 3], one generator update a batch), the default config (configs/demo.yaml: denoised semantics, S^d,
the codes' rotation) on the COCO-size data, encoding throughput (items/s) and MAP@1000 of
each run, and peak GPU memory. Run through benchmarks/gpu_check.sh. FAISS may be the CPU
build (faiss-cpu): the kNN graph and the neighbour search then run on the CPU cores; the
report says which.

    python benchmarks/gpu_check.py [--smoke] [--work /tmp/gpu_check] [--parts coco,big,default]

--smoke: tiny sizes on whatever device there is (a CPU check that the script runs).
--parts: which of the three runs (``default`` alone on a CPU gives the figure to set
against the GPU's: the same data, config and seed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (the CLI does the same)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy

from lagnh_pyg.data.synthetic import SyntheticSpec, generate  # noqa: E402
from lagnh_pyg.device import faiss_has_gpu, resolve_device  # noqa: E402
from lagnh_pyg.encoders import encode_splits  # noqa: E402
from lagnh_pyg.ownership import remove_owned  # noqa: E402
from lagnh_pyg.retrieval import evaluate_run  # noqa: E402
from lagnh_pyg.rundir import Run  # noqa: E402
from lagnh_pyg.training import train_run  # noqa: E402

MARKER = ".lagnh-gpu-check"  # marks --work as this script's own scratch folder


def _peak_gpu() -> str:
    if not torch.cuda.is_available():
        return "n/a (no CUDA)"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def _encode_rate(run_dir: Path, dev: str, encoding: str) -> str:
    """Encode the run's query and database splits; items/s of the whole call (loading included)."""
    run = Run.open(run_dir)
    ds = run.dataset()
    n = len(ds.split("query")) + len(ds.split("database"))
    t0 = time.perf_counter()
    encode_splits(run, ["query", "database"], device=dev, encoder_options={"encoding": encoding})
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    s = time.perf_counter() - t0
    m = evaluate_run(run_dir, plots=False).summary["map"]
    return f"encoding ({encoding}) of {n} items: {s:.1f} s = {n / s:,.0f} items/s; MAP@1000 (protocol lagnh) {m:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU check of the script)")
    ap.add_argument("--work", default="/tmp/gpu_check")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--parts", default="coco,big,default", help="comma-separated: coco, big, default")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    if not parts or parts - {"coco", "big", "default"}:
        raise SystemExit(f"error: --parts takes coco, big and default, comma-separated; got {a.parts!r}")
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.work)
    remove_owned(work, (), markers=(MARKER,))  # never a --work folder this script did not make
    work.mkdir(parents=True)
    (work / MARKER).touch()
    dev = resolve_device("auto")
    print(f"device {dev}" + (f" ({torch.cuda.get_device_name()})" if dev == "cuda" else "")
          + f", GPU FAISS: {faiss_has_gpu()}", flush=True)

    # COCO size: 5,000 training nodes, 4,096-d, 32 bits (300 full-graph epochs with configs/coco.yaml)
    n, dim, epochs = (300, 64, 3) if a.smoke else (5000, 4096, 300)
    if parts & {"default", "coco"}:
        coco = generate(SyntheticSpec(n=n + 1000, dim=dim, classes=80, junk_tags=0, n_train=n, n_query=1000,
                                      train_in_database=True), work / "coco")
    if "default" in parts:
        default_part(a, coco, work, dev, n, dim)
    if "coco" in parts:
        coco_part(a, coco, work, dev, n, dim, epochs)
    if "big" in parts:
        big_part(a, work, dev)
    shutil.rmtree(work, ignore_errors=True)


def coco_part(a, coco: Path, work: Path, dev: str, n: int, dim: int, epochs: int) -> None:
    """configs/coco.yaml (the paper's settings) on the COCO-size data, 300 full-graph epochs."""
    over = [f"train.epochs={epochs}", "train.checkpoint_every=0"]
    if a.smoke:
        over += ["model.anchors=64", "graph.k=5"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_run(coco, "configs/coco.yaml", 32, work / "coco_run", overrides=over, device="auto", progress=False)
    if dev == "cuda":
        torch.cuda.synchronize()
    full_s = time.perf_counter() - t0
    log = [json.loads(line) for line in (work / "coco_run" / "log.jsonl").read_text().splitlines()]
    print(f"COCO-size full-graph training ({n} nodes, {dim}-d, 32 bits, {epochs} epochs): {full_s:.1f} s total "
          f"(incl. graph build), {sum(r['seconds'] for r in log):.1f} s in epochs; peak GPU memory {_peak_gpu()} "
          "[paper: 466 s on a GTX 1080 Ti]", flush=True)
    print("  " + _encode_rate(work / "coco_run", dev, "neighbours") + " [paper: 9.9 s for COCO]", flush=True)


def default_part(a, coco: Path, work: Path, dev: str, n: int, dim: int) -> None:
    """The default config (configs/demo.yaml, its 40 epochs) on the COCO-size data."""
    over = ["train.checkpoint_every=0"]
    if a.smoke:
        over += ["train.epochs=3", "model.anchors=64", "graph.k=5"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train_run(coco, "configs/demo.yaml", 32, work / "default_run", overrides=over, device="auto", progress=False)
    if dev == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    log = [json.loads(line) for line in (work / "default_run" / "log.jsonl").read_text().splitlines()]
    print(f"default config (configs/demo.yaml) on the COCO-size data ({n} nodes, {dim}-d, 32 bits, {len(log)} "
          f"full-graph epochs): {total:.1f} s total (incl. graph build, denoised semantics, rotation), "
          f"{sum(r['seconds'] for r in log):.1f} s in epochs; peak GPU memory {_peak_gpu()}", flush=True)
    print("  " + _encode_rate(work / "default_run", dev, "neighbours"), flush=True)


def big_part(a, work: Path, dev: str) -> None:
    """The 1M row of ``lagnh experiment scaling`` on this device: the same synthetic data
    (1M x 512-d, seed 0), config and protocol as the CPU row of docs/results/scaling.md, so the
    two compare directly. One true sampled epoch (the default sampled settings), the encoder
    cache over the whole graph, the neighbours encoding of the 1,000 queries and a 20,000-item
    database sample, MAP@1000 of those codes."""
    from lagnh_pyg.experiments.scaling import generate_data, measure

    n, dim = (3000, 32) if a.smoke else (1_000_000, 512)
    data = generate_data(n, work / "big", dim=dim)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    r = measure(data, full_max=0, threads=a.threads or (os.cpu_count() or 2), device=dev)
    total = time.perf_counter() - t0
    print(f"1M-node sampled epoch ({n} nodes, {dim}-d, {r['sampled_batches']} seed batches of 1,024, the default "
          f"fan-out; the scaling row's config): {r['sampled_s']:.1f} s = {r['seeds_per_s']:,.0f} seed nodes/s; whole "
          f"row {total:.1f} s (graph build {r['graph_s']:.1f} s, {r['index']}; encoder cache {r['cache_s']:.1f} s); "
          f"peak GPU memory {_peak_gpu()}, peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    m = 1000 + r["db_size"]
    print(f"  encoding (neighbours) of {m} items (the queries and a database sample): {r['encode_s']:.1f} s = "
          f"{m / r['encode_s']:,.0f} items/s (neighbour index {r['neighbour_index_s']:.1f} s before); "
          f"MAP@1000 (protocol lagnh) {r['map1000']:.4f}", flush=True)


if __name__ == "__main__":
    main()
