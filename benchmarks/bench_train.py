"""Benchmark LAGNH training (not a test): seconds per epoch, total time, peak memory, and
MAP@1000 against ITQ and sign-of-PCA codes on the same data.

Usage::

    # (a) the COCO setting on synthetic features: 5,000 nodes, 4096-d, 32 bits, full vs faithful
    # vs sampled (s/epoch each, and each mode's ratio to full: the goal is faithful/full <= 1.3)
    python benchmarks/bench_train.py timing --n-train 5000 --dim 4096 --epochs 3
    # (b) configs/demo.yaml on 5,000 x 1280-d, and (c) accuracy on any dataset directory
    python benchmarks/bench_train.py accuracy DATA_DIR --config configs/demo.yaml --bits 32 \
        [--set key=value ...] [--faithful] [--self]

MAP is protocol 'lagnh' (rank by Hamming distance, ties in database order; AP@K divided by
the relevant items in the top K; mean over queries with at least one relevant item in the
database), computed by ``lagnh_pyg.metrics`` when present, else by the evaluator below.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def map_at_k(q_codes: np.ndarray, db_codes: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
             topk: int = 1000) -> float:
    """MAP@topk, protocol 'lagnh' (codes: (n, bits) real or +-1; positive = 1-bit)."""
    try:
        from lagnh_pyg.metrics import mean_average_precision

        return float(mean_average_precision(np.where(q_codes > 0, 1, -1).astype(np.int8),
                                            np.where(db_codes > 0, 1, -1).astype(np.int8),
                                            q_labels, db_labels, topk=topk, protocol="lagnh"))
    except ImportError:
        pass
    qb = (q_codes > 0).astype(np.float32) * 2 - 1
    db = (db_codes > 0).astype(np.float32) * 2 - 1
    bits = qb.shape[1]
    ql, dl = q_labels.astype(np.float32), db_labels.astype(np.float32)
    aps, counted = [], 0
    for s in range(0, len(qb), 256):
        ham = 0.5 * (bits - qb[s : s + 256] @ db.T)
        rel_all = (ql[s : s + 256] @ dl.T) > 0
        for i in range(ham.shape[0]):
            if not rel_all[i].any():
                continue
            counted += 1
            order = np.argsort(ham[i], kind="stable")[:topk]
            rel = rel_all[i, order]
            r = rel.sum()
            if r == 0:
                aps.append(0.0)
                continue
            hits = np.cumsum(rel)
            aps.append(float((hits[rel] / (np.flatnonzero(rel) + 1)).sum() / r))
    return float(np.sum(aps) / max(counted, 1))


def pca_sign(train: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    return mean, vt[:bits].T


def itq(train: np.ndarray, bits: int, iters: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ITQ (Gong et al. 2013): PCA then an orthogonal rotation minimising quantisation loss."""
    mean, w = pca_sign(train, bits)
    v = (train - mean) @ w
    rng = np.random.default_rng(seed)
    r, _ = np.linalg.qr(rng.standard_normal((bits, bits)))
    for _ in range(iters):
        b = np.where(v @ r > 0, 1.0, -1.0)
        u, _, vt2 = np.linalg.svd(b.T @ v)
        r = (u @ vt2).T
    return mean, w @ r


def baselines(data_dir: str, bits: int) -> dict[str, float]:
    from lagnh_pyg.data.store import Dataset

    ds = Dataset.open(data_dir)
    tr, q, db = ds.split("train"), ds.split("query"), ds.split("database")
    X = ds.feature_rows(tr)
    Q, D = ds.feature_rows(q), ds.feature_rows(db)
    ql, dl = ds.label_rows(q), ds.label_rows(db)
    out = {}
    for name, fit in (("pca-sign", pca_sign), ("itq", itq)):
        mean, w = fit(X, bits)
        out[name] = map_at_k((Q - mean) @ w, (D - mean) @ w, ql, dl)
    return out


def lagnh_map(data_dir: str, config: str, bits: int, sets: list[str], encodings: list[str]) -> dict:
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.encode import load_lagnh_encoder
    from lagnh_pyg.rundir import Run
    from lagnh_pyg.training import train_run

    ds = Dataset.open(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = train_run(data_dir, config, bits, Path(tmp) / "run", overrides=sets, device="cpu", progress=False)
        train_s = time.perf_counter() - t0
        log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
        run = Run.open(run_dir)
        res = {"train_seconds": round(train_s, 1), "epochs": len(log),
               "seconds_per_epoch": round(float(np.mean([r["seconds"] for r in log])), 3)}
        q, db = ds.split("query"), ds.split("database")
        ql, dl = ds.label_rows(q), ds.label_rows(db)
        for enc_name in encodings:
            enc = load_lagnh_encoder(run, "cpu", encoding=enc_name)
            t0 = time.perf_counter()
            codes = {}
            for split, idx in (("query", q), ("database", db)):
                parts = []
                step = 8192 - 8192 % getattr(enc, "encode_chunk_multiple", 1)
                for s in range(0, len(idx), step):
                    part = idx[s : s + step]
                    parts.append(enc.encode(ds.feature_rows(part), ds.aux_rows(part)))
                codes[split] = np.concatenate(parts)
            res[f"encode_seconds[{enc_name}]"] = round(time.perf_counter() - t0, 1)
            res[f"map[{enc_name}]"] = round(map_at_k(codes["query"], codes["database"], ql, dl), 4)
    return res


def timing(args) -> None:
    """Seconds per epoch and peak RSS per mode on synthetic features, measured one after the
    other in this process; then each mode's seconds per epoch relative to full mode's (the
    issue-10 goal: faithful / full <= 1.3 with configs/coco.yaml)."""
    import resource

    from lagnh_pyg.data.synthetic import SyntheticSpec, generate
    from lagnh_pyg.training import train_run

    per_epoch = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(SyntheticSpec(n=args.n_train + 2000, dim=args.dim, classes=80, junk_tags=0,
                               n_train=args.n_train, n_query=1000, seed=0), data)
        for mode in args.modes:
            sets = [f"train.mode={mode}", f"train.epochs={args.epochs}", "train.checkpoint_every=0",
                    *args.set]
            t0, c0 = time.perf_counter(), time.process_time()
            run = train_run(data, args.config, args.bits, Path(tmp) / f"run-{mode}", overrides=sets, device="cpu",
                            progress=False)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
            per = [r["seconds"] for r in log]
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"mode": mode, "n_train": args.n_train, "dim": args.dim, "bits": args.bits,
                              "epochs": len(per), "seconds_per_epoch": round(float(np.mean(per)), 3),
                              "total_seconds_incl_graph_and_setup": round(total, 1),
                              # CPU seconds of the process: comparable between runs on a loaded machine
                              "cpu_seconds_incl_graph_and_setup": round(cpu, 1),
                              "peak_rss_mib_so_far": round(rss)}), flush=True)
            per_epoch[mode] = float(np.mean(per))
    if "full" in per_epoch:
        ratios = {f"{m}/full": round(v / per_epoch["full"], 2) for m, v in per_epoch.items() if m != "full"}
        print(json.dumps({"seconds_per_epoch_ratio": ratios, "config": args.config}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--n-train", type=int, default=5000)
    t.add_argument("--dim", type=int, default=4096)
    t.add_argument("--bits", type=int, default=32)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--config", default="configs/coco.yaml")
    t.add_argument("--modes", nargs="+", default=["full", "faithful", "sampled"])
    t.add_argument("--set", action="append", default=[])
    a = sub.add_parser("accuracy")
    a.add_argument("data_dir")
    a.add_argument("--config", default="configs/demo.yaml")
    a.add_argument("--bits", type=int, default=32)
    a.add_argument("--set", action="append", default=[])
    a.add_argument("--encodings", nargs="+", default=None)
    a.add_argument("--no-baselines", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.cmd == "timing":
        timing(args)
        return
    if not args.no_baselines:
        print(json.dumps({"data": args.data_dir, "bits": args.bits, **baselines(args.data_dir, args.bits)}), flush=True)
    encodings = args.encodings
    if encodings is None:
        faithful = any(s.replace(" ", "") == "train.mode=faithful" for s in args.set)
        encodings = ["faithful"] if faithful else ["neighbours"]
    res = lagnh_map(args.data_dir, args.config, args.bits, args.set, encodings)
    print(json.dumps({"config": args.config, "set": args.set, **res}), flush=True)


if __name__ == "__main__":
    main()
