"""Why a baseline falls short: statistics of its codes, and the two diagnostics quoted in
docs/results/table3-demo.md.

    codes REPORT_DIR      per run of an accuracy report: bit balance (mean |bit mean|), mean
                          |correlation| between two bits, distinct database codes
    deepbit DATA          DeepBit on a validation split of DATA's training items (seed 0):
                          validation MAP and bit correlation after 1 epoch, 20 epochs of
                          stage 1, without the even-distribution term, and with the defaults;
                          LSH and ITQ for reference
    deepbit-init DATA     DeepBit with the official Caffe initialisation of its latent layer
                          (N(0, 0.01), zero bias) against PyTorch's default, lr 0.01 / 0.001,
                          with and without centring (same validation split)
    ssdh DATA             SSDH's semantic structure on 2,000 training items: how many pairs it
                          calls similar / dissimilar and how often those share a label

Usage: python benchmarks/baseline_diagnostics.py codes reports/table3
"""

import argparse
import glob
import os

import numpy as np


def bit_stats(codes: np.ndarray) -> tuple[float, float]:
    """(mean |bit mean|, mean |correlation| between two bits) of +-1 codes (n, bits)."""
    c = codes.astype(np.float64)
    balance = float(np.abs(c.mean(0)).mean())
    c -= c.mean(0)
    s = c.std(0) + 1e-12
    r = (c.T @ c) / len(c) / np.outer(s, s)
    return balance, float(np.abs(r[~np.eye(len(r), dtype=bool)]).mean())


def codes(report: str) -> None:
    print("| run | balance | mean abs corr | distinct database codes |\n|---|---|---|---|")
    for d in sorted(glob.glob(os.path.join(report, "runs", "*"))):
        p = os.path.join(d, "codes", "database.npy")
        if os.path.isfile(p):
            packed = np.load(p)
            bal, corr = bit_stats(np.unpackbits(packed, axis=1).astype(np.int8) * 2 - 1)
            print(f"| {os.path.basename(d)} | {bal:.3f} | {corr:.3f} | {len(np.unique(packed, axis=0))} |")


def deepbit(data: str) -> None:
    from lagnh_pyg.baselines import make_baseline
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.experiments.tuning import validation_split
    from lagnh_pyg.metrics import mean_average_precision

    ds = Dataset.open(data)
    fit, val = validation_split(ds.split("train"), 0.2, 0)
    Xf, Xv, Lf, Lv = ds.feature_rows(fit), ds.feature_rows(val), ds.label_rows(fit), ds.label_rows(val)
    views = ds.views_of(fit) if ds.has_views else None
    cases = [("lsh", "lsh", {}), ("itq", "itq", {}),
             ("deepbit, 1 epoch, no stage 2", "deepbit", {"epochs": 1, "invariance_epochs": 0}),
             ("deepbit, 20 epochs of stage 1", "deepbit", {"epochs": 20, "invariance_epochs": 0}),
             ("deepbit, 20 epochs of stage 1, beta 0", "deepbit", {"epochs": 20, "invariance_epochs": 0, "beta": 0}),
             ("deepbit, defaults", "deepbit", {})]
    print("| model (32 bits) | validation MAP | balance | mean abs corr |\n|---|---|---|---|")
    for label, name, params in cases:
        m = make_baseline(name, 32, 0, **params)
        m.fit(Xf, views=views) if name == "deepbit" else m.fit(Xf)
        cf = m.encode(Xf)
        mp = mean_average_precision(m.encode(Xv), cf, Lv, Lf, 1000, "lagnh")
        bal, corr = bit_stats(cf)
        print(f"| {label} | {mp:.4f} | {bal:.3f} | {corr:.3f} |", flush=True)


def deepbit_init(data: str) -> None:
    import torch

    from lagnh_pyg.baselines.deepbit import DeepBit
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.experiments.tuning import validation_split
    from lagnh_pyg.metrics import mean_average_precision

    class OfficialInit(DeepBit):
        """fc8_kevin of the official prototxt: gaussian weights, std 0.01, bias 0."""

        def build(self, d: int):
            net = super().build(d)
            with torch.no_grad():
                net[0].weight.normal_(0, 0.01)
                net[0].bias.zero_()
            return net

    ds = Dataset.open(data)
    fit, val = validation_split(ds.split("train"), 0.2, 0)
    Xf, Xv, Lf, Lv = ds.feature_rows(fit), ds.feature_rows(val), ds.label_rows(fit), ds.label_rows(val)
    views = ds.views_of(fit) if ds.has_views else None
    print("| initialisation | params (32 bits) | validation MAP | balance | mean abs corr |\n|---|---|---|---|---|")
    for label, cls in (("pytorch default", DeepBit), ("official N(0, 0.01)", OfficialInit)):
        for params in ({"lr": 0.01}, {"lr": 0.001}, {"lr": 0.001, "centre": "no"}):
            m = cls(32, 0, **params).fit(Xf, views=views)
            cf = m.encode(Xf)
            mp = mean_average_precision(m.encode(Xv), cf, Lv, Lf, 1000, "lagnh")
            bal, corr = bit_stats(cf)
            print(f"| {label} | {params} | {mp:.4f} | {bal:.3f} | {corr:.3f} |", flush=True)


def ssdh(data: str) -> None:
    import torch

    from lagnh_pyg.baselines.deep import cosine_matrix
    from lagnh_pyg.baselines.ssdh import half_gaussian_thresholds
    from lagnh_pyg.data.store import Dataset

    ds = Dataset.open(data)
    rows = ds.split("train")[:2000]
    X = torch.from_numpy(ds.feature_rows(rows))
    L = ds.label_rows(rows).astype(np.float32)
    iu = np.triu_indices(len(rows), 1)
    d = (1 - cosine_matrix(X)).numpy()[iu]
    share = ((L @ L.T) > 0)[iu]
    print(f"pairs sharing a label: {share.mean():.3f}")
    print("| alpha = beta | similar pairs | of which share a label | dissimilar pairs | of which share a label |")
    print("|---|---|---|---|---|")
    for a in (0.5, 1.0, 2.0):
        lo, hi, _ = half_gaussian_thresholds(d, a, a)
        sim, dis = d < lo, d > hi
        print(f"| {a:g} | {sim.mean():.3f} | {share[sim].mean():.3f} | {dis.mean():.3f} | {share[dis].mean():.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("codes", "deepbit", "deepbit-init", "ssdh"))
    ap.add_argument("path", help="an accuracy report directory (codes) or a dataset directory")
    args = ap.parse_args()
    {"codes": codes, "deepbit": deepbit, "deepbit-init": deepbit_init, "ssdh": ssdh}[args.what](args.path)


if __name__ == "__main__":
    main()
