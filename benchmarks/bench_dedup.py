"""`lagnh dedup` at scale: 1M clustered 64-bit codes, the new path against the old one.

The codes are clustered as a trained model's are, not uniform: ``n / cluster`` centres in a
64-d space (the "classes"), each item its centre plus its own direction; the codes are signs
of a random projection (LSH) of centre + ``--code-spread`` x own direction, so a cluster's
codes are close (~45 neighbours within radius 2, some identical: as a trained model puts a
class's pictures together), while the features are centre + ``--feature-spread`` x own
direction (cluster-mates at cosine ~0.75: different pictures of one class). 1% of the items
are replaced by near-copies of another item (noise ``--copy-noise`` on both): the duplicates.

Two paths, each timed in this process:

* ``new``: :func:`lagnh_pyg.dedup.find_duplicates`: the range search, each chunk's matches
  as arrays, feature confirmation (cosine >= ``--min-cosine``), star groups; JSON written.
* ``old``: the per-item loop that ``lagnh dedup`` ran before (copied below verbatim: per-pair
  union-find and a ``json.dumps`` per item), on the first ``--n-old`` items (it takes ~40 min
  at 1M), with the new path on the same items for the ratio.

    python benchmarks/bench_dedup.py                     # 1M codes, radius 2; old path on 100k
    python benchmarks/bench_dedup.py --radius 4 --n 200000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def clustered(n: int, cluster: int, code_spread: float, feature_spread: float, copy_noise: float, bits: int = 64,
              dim: int = 64, seed: int = 0):
    """(packed codes, features, planted (copy, original) pairs)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // cluster), dim)).astype(np.float32)
    C = centres[rng.integers(0, len(centres), n)]
    own = rng.standard_normal((n, dim)).astype(np.float32)
    copies = rng.choice(n, n // 100, replace=False)
    originals = rng.integers(0, n, len(copies))
    C[copies] = C[originals]
    own[copies] = own[originals] + copy_noise * rng.standard_normal((len(copies), dim)).astype(np.float32)
    W = rng.standard_normal((dim, bits)).astype(np.float32)
    codes = np.packbits((C + code_spread * own) @ W > 0, axis=1)
    return codes, C + feature_spread * own, np.stack([copies, originals], 1)


class _UnionFind:  # the old path's, verbatim
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def old_find_duplicates(codes, ids, radius, out_json, chunk=4096):
    """``lagnh_pyg.dedup.find_duplicates`` before the rewrite (no confirmation, components)."""
    from lagnh_pyg.dedup import range_neighbours

    uf = _UnionFind(len(codes))
    n_pairs = 0
    with open(out_json, "w") as f:
        f.write("{")
        for s, lims, D, I in range_neighbours(codes, radius, chunk):
            for q in range(len(lims) - 1):
                i = s + q
                if lims[q + 1] - lims[q] <= 1:
                    f.write(("," if i else "") + "\n" + json.dumps(ids[i]) + ": []")
                    continue
                d, p = D[lims[q] : lims[q + 1]], I[lims[q] : lims[q + 1]]
                keep = p != i
                p = p[keep][np.lexsort((p[keep], d[keep]))]
                if len(p):
                    n_pairs += int((p > i).sum())
                    for j in p[p > i]:
                        uf.union(i, int(j))
                f.write(("," if i else "") + "\n" + json.dumps(ids[i]) + ": " + json.dumps([ids[j] for j in p]))
        f.write("\n}\n")
    roots = np.array([uf.find(i) for i in range(len(codes))])
    return n_pairs, int((np.bincount(roots) > 1).sum())


def timed(fn, *a, **k):
    """``(result, (wall seconds, CPU seconds of this process))``: on a shared machine the wall
    time also counts waiting for a core; the CPU time does not."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    return out, (round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1))


def main() -> None:
    from lagnh_pyg.dedup import find_duplicates, range_neighbours

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-old", type=int, default=100_000, help="items the old path runs on (0 = skip it)")
    ap.add_argument("--radius", type=int, default=2)
    ap.add_argument("--cluster", type=int, default=100, help="mean items per cluster")
    ap.add_argument("--code-spread", type=float, default=0.1)
    ap.add_argument("--feature-spread", type=float, default=0.6)
    ap.add_argument("--copy-noise", type=float, default=0.02)
    ap.add_argument("--min-cosine", type=float, default=0.9)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    codes, X, planted = clustered(args.n, args.cluster, args.code_spread, args.feature_spread, args.copy_noise)
    ids = [f"item{j:07d}" for j in range(args.n)]

    def features(pos):
        return X[pos], np.ones(len(pos), bool)

    out = {"n": args.n, "radius": args.radius, "bits": 64, "cluster": args.cluster, "code_spread": args.code_spread,
           "feature_spread": args.feature_spread,
           "distinct_codes": int(len(np.unique(codes, axis=0))), "threads_env": os.environ.get("OMP_NUM_THREADS"),
           "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_res, out["range_search_s"] = timed(lambda: sum(len(I) for _, _, _, I in range_neighbours(codes, args.radius)))
        out["mean_neighbours"] = round(n_res / args.n - 1, 1)
        res, out["new_s"] = timed(find_duplicates, codes, ids, args.radius, tmp / "new.json", features=features,
                                  min_cosine=args.min_cosine)
        found = {(min(a, b), max(a, b)) for a, b in planted.tolist() if a != b}
        dups = json.loads((tmp / "new.json").read_text())
        hit = sum(1 for a, b in found if ids[b] in dups[ids[a]])
        out["new"] = {"candidates": res.n_candidates, "confirmed_pairs": res.n_pairs, "groups": res.n_groups,
                      "planted_pairs_found": hit, "planted_pairs": len(found)}
        if args.n_old:
            m = min(args.n_old, args.n)
            sub_codes, sub_ids = codes[:m], ids[:m]
            (_, _), out["old_sub_s"] = timed(old_find_duplicates, sub_codes, sub_ids, args.radius, tmp / "old.json")
            _, out["new_sub_s"] = timed(find_duplicates, sub_codes, sub_ids, args.radius, tmp / "n2.json",
                                        features=features, min_cosine=args.min_cosine)
            _, out["new_sub_unconfirmed_s"] = timed(find_duplicates, sub_codes, sub_ids, args.radius, tmp / "n3.json")
            same = (tmp / "old.json").read_text() == (tmp / "n3.json").read_text()
            out.update(n_old=m, old_over_new_wall=round(out["old_sub_s"][0] / out["new_sub_s"][0], 2),
                       old_over_new_cpu=round(out["old_sub_s"][1] / out["new_sub_s"][1], 2),
                       unconfirmed_json_identical_to_old=same)
    out["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
