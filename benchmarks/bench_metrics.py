"""Speed of the retrieval metrics: popcount variants, exact MAP@K at the paper's scale, curves.

    .venv/bin/python benchmarks/bench_metrics.py                 # 5,000 x 150,000 at 64 bits
    .venv/bin/python benchmarks/bench_metrics.py --ndb 20000     # quicker

Prints seconds for each step and the peak resident memory. Codes and labels are random
(80 classes, ~2.4 labels an item, like MS COCO), so the MAP values are meaningless; the
times are what this measures. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    print(f"{label:<58} {dt:8.2f} s")
    return out, dt


def popcount_variants(q: np.ndarray, db: np.ndarray, rows: int) -> None:
    """Hamming distances of ``rows`` queries to the whole database, three ways, scaled to all."""
    qs = q[:rows]
    qw = np.ascontiguousarray(qs).view(np.uint64)
    dw = np.ascontiguousarray(db).view(np.uint64)
    xbuf = np.empty((rows, len(db)), np.uint64)
    dbuf = np.empty((rows, len(db)), np.uint8)

    def xor_bitcount():
        for w in range(qw.shape[1]):
            np.bitwise_xor(qw[:, w, None], dw[None, :, w], out=xbuf)
            np.bitwise_count(xbuf, out=dbuf, casting="unsafe")

    lut = np.array([i.bit_count() for i in range(256)], np.uint8)

    def xor_lut8():
        (lut[qs[:, None, :] ^ db[None, :, :]]).sum(2, dtype=np.uint8)

    def torch_popcount():
        import torch

        tq = torch.from_numpy(qw.view(np.int64).copy())
        td = torch.from_numpy(dw.view(np.int64).copy())
        x = tq[:, None, :] ^ td[None, :, :]
        # torch has no popcount: SWAR bit tricks on int64
        x = x - ((x >> 1) & 0x5555555555555555)
        x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
        ((x * 0x0101010101010101) >> 56).sum(-1)

    xor_bitcount()  # warm the buffers (first-touch page faults are not the kernel's cost)
    for name, fn, n in (("XOR uint64 + numpy.bitwise_count (used)", xor_bitcount, rows),
                        ("XOR uint8 + 256-entry lookup table", xor_lut8, rows),
                        ("torch int64 XOR + SWAR popcount", torch_popcount, rows)):
        t0 = time.perf_counter()
        fn()
        dt = (time.perf_counter() - t0) * len(q) / n
        print(f"  distances {len(q)} x {len(db)}, {name:<40} {dt:8.2f} s (extrapolated from {n} queries)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nq", type=int, default=5000)
    ap.add_argument("--ndb", type=int, default=150_000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--topk", type=int, default=1000)
    ap.add_argument("--skip-full", action="store_true", help="skip MAP over the whole ranking")
    args = ap.parse_args()

    from lagnh_pyg.metrics import evaluate_retrieval, hamming_rank, mean_average_precision

    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (args.nq, args.bits // 8), dtype=np.uint8)
    db = rng.integers(0, 256, (args.ndb, args.bits // 8), dtype=np.uint8)
    p = 2.4 / args.classes
    ql = (rng.random((args.nq, args.classes)) < p).astype(np.uint8)
    dl = (rng.random((args.ndb, args.classes)) < p).astype(np.uint8)
    print(f"{args.nq} queries x {args.ndb} database items, {args.bits} bits, {args.classes} classes; "
          f"{os.cpu_count()} CPUs visible, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    popcount_variants(q, db, rows=min(16, args.nq))
    m, _ = timed(f"mean_average_precision MAP@{args.topk} (protocol lagnh)", mean_average_precision,
                 q, db, ql, dl, topk=args.topk, protocol="lagnh")
    print(f"  MAP@{args.topk} (protocol lagnh) = {m:.4f}")
    r, _ = timed(f"evaluate_retrieval MAP@{args.topk} + P@K + PR curves", evaluate_retrieval,
                 q, db, ql, dl, topk=args.topk)
    assert r.map == m
    timed("hamming_rank top-1000 (exact, ties by database order)", hamming_rank, q, db, 1000)
    try:
        import faiss

        ix = faiss.IndexBinaryFlat(args.bits)
        ix.add(db)
        timed("faiss IndexBinaryFlat.search k=1000 (for comparison)", ix.search, q, 1000)
    except ImportError:
        pass
    if not args.skip_full:
        m_all, _ = timed("mean_average_precision over the whole ranking (topk=None)", mean_average_precision,
                         q, db, ql, dl, topk=None)
        print(f"  MAP@all (protocol lagnh) = {m_all:.4f}")
    print(f"peak resident memory: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
