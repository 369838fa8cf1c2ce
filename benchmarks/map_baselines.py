"""MAP@K of the six baselines on a dataset directory, through the same path as the CLI.

For each method and code length: ``fit_run`` (= ``lagnh baseline``), ``encode_splits``
(= ``lagnh encode --split all``), then ``mean_average_precision`` on the query and database
codes. Prints a Markdown table with the protocol named.

Usage: python benchmarks/map_baselines.py DATA_DIR [--bits 16,32,64,128] [--topk 1000]
           [--protocol lagnh] [--methods lsh,sklsh,sh,pcah,itq,sgh] [--seed 0]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--bits", default="16,32,64,128")
    ap.add_argument("--methods", default="lsh,sklsh,sh,pcah,itq,sgh")
    ap.add_argument("--topk", type=int, default=1000)
    ap.add_argument("--protocol", default="lagnh")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from lagnh_pyg.baselines import fit_run
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.encoders import encode_splits
    from lagnh_pyg.metrics import mean_average_precision
    from lagnh_pyg.rundir import Run

    ds = Dataset.open(args.data_dir)
    qlab, dlab = ds.label_rows(ds.split("query")), ds.label_rows(ds.split("database"))
    bits_list = [int(b) for b in args.bits.split(",")]
    print(f"{ds.root}: {ds.n} items, {ds.feature_dim}-d; train {len(ds.split('train'))}, "
          f"query {len(qlab)}, database {len(dlab)}; MAP@{args.topk}, protocol '{args.protocol}', seed {args.seed}")
    print("| method | " + " | ".join(f"{b} bits" for b in bits_list) + " | fit s (at each length) |")
    print("|---|" + "---|" * len(bits_list) + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods.split(","):
            maps, fits = [], []
            for bits in bits_list:
                t = time.perf_counter()
                run = Run.open(fit_run(name, args.data_dir, bits, Path(tmp) / f"{name}{bits}", seed=args.seed))
                fits.append(time.perf_counter() - t)
                encode_splits(run, ["query", "database"])
                maps.append(mean_average_precision(run.load_codes("query"), run.load_codes("database"), qlab, dlab,
                                                   topk=args.topk, protocol=args.protocol))
            print(f"| {name} | " + " | ".join(f"{m:.4f}" for m in maps) + " | "
                  + " / ".join(f"{f:.1f}" for f in fits) + " |", flush=True)


if __name__ == "__main__":
    main()
