"""Fit and encoding time of the shallow baselines at the paper's scale.

Fits each method on 5,000 x 4,096 non-negative float32 features (fc7-like: ReLU of a
low-rank signal plus noise) and encodes 150,000 items in chunks of 8,192, as
``lagnh encode`` does. Encoding cost does not depend on the values, so the chunks reuse one
pool of 8,192 generated rows (generation is not timed). Prints seconds.

Usage: python benchmarks/bench_baselines.py [--bits 64] [--threads 2] [--methods lsh,itq]
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--encode", type=int, default=150_000)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="BLAS threads (0: leave the environment's)")
    ap.add_argument("--methods", default="lsh,sklsh,sh,pcah,itq,sgh")
    args = ap.parse_args()
    if args.threads > 0:  # before numpy loads BLAS
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import numpy as np

    from lagnh_pyg.baselines import make_baseline

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((64, args.dim), dtype=np.float32)

    def features(n: int) -> np.ndarray:
        X = rng.standard_normal((n, 64), dtype=np.float32) @ basis
        X += rng.standard_normal((n, args.dim), dtype=np.float32)
        return np.maximum(X, 0, out=X)

    train, pool = features(args.train), features(args.chunk)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"fit on {args.train} x {args.dim} float32, encode {args.encode} items in chunks of {args.chunk}; "
          f"{args.bits} bits; OMP_NUM_THREADS={threads}, {os.cpu_count()} cores")
    print(f"{'method':<7} {'fit s':>7} {'encode s':>9} {'items/s':>10}")
    for name in args.methods.split(","):
        t = time.perf_counter()
        model = make_baseline(name, args.bits, seed=0).fit(train)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        for start in range(0, args.encode, args.chunk):
            model.encode(pool[: min(args.chunk, args.encode - start)])
        enc_s = time.perf_counter() - t
        print(f"{name:<7} {fit_s:7.2f} {enc_s:9.2f} {args.encode / enc_s:10.0f}", flush=True)


if __name__ == "__main__":
    main()
