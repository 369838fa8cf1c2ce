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
    deepbit-steps DATA    DeepBit's stage 1 stopped after 0 ... 100 gradient steps (early
                          stopping), seeds 0-2, 32 bits
    deepbit-official DATA the official Caffe pipeline emulated on the features (its stage-1
                          loss layers pass no gradient; ReLU codes thresholded at the mean
                          activation) against LSH, 16/32/64 bits, seeds 0-2
    ssdh DATA             SSDH's semantic structure on 2,000 training items: how many pairs it
                          calls similar / dissimilar and how often those share a label

Usage: python benchmarks/baseline_diagnostics.py codes reports/table3
"""

import argparse
import glob
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy


def bit_stats(codes: np.ndarray) -> tuple[float, float]:
    """(mean |bit mean|, mean |correlation| between two bits) of +-1 codes (n, bits)."""
    c = codes.astype(np.float64)
    balance = float(np.abs(c.mean(0)).mean())
    c -= c.mean(0)
    s = c.std(0) + 1e-12
    r = (c.T @ c) / len(c) / np.outer(s, s)
    return balance, float(np.abs(r[~np.eye(len(r), dtype=bool)]).mean())


def validation_data(data: str):
    """(fit features, validation features, fit labels, validation labels, fit views or None) of
    the validation split every diagnostic here uses (seed 0, 20% of the training items)."""
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.experiments.tuning import validation_split

    ds = Dataset.open(data)
    fit, val = validation_split(ds.split("train"), 0.2, 0)
    views = ds.views_of(fit) if ds.has_views else None
    return ds.feature_rows(fit), ds.feature_rows(val), ds.label_rows(fit), ds.label_rows(val), views


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
    from lagnh_pyg.metrics import mean_average_precision

    Xf, Xv, Lf, Lv, views = validation_data(data)
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
    from lagnh_pyg.metrics import mean_average_precision

    class OfficialInit(DeepBit):
        """fc8_kevin of the official prototxt: gaussian weights, std 0.01, bias 0."""

        def build(self, d: int):
            net = super().build(d)
            with torch.no_grad():
                net[0].weight.normal_(0, 0.01)
                net[0].bias.zero_()
            return net

    Xf, Xv, Lf, Lv, views = validation_data(data)
    print("| initialisation | params (32 bits) | validation MAP | balance | mean abs corr |\n|---|---|---|---|---|")
    for label, cls in (("pytorch default", DeepBit), ("official N(0, 0.01)", OfficialInit)):
        for params in ({"lr": 0.01}, {"lr": 0.001}, {"lr": 0.001, "centre": "no"}):
            m = cls(32, 0, **params).fit(Xf, views=views)
            cf = m.encode(Xf)
            mp = mean_average_precision(m.encode(Xv), cf, Lv, Lf, 1000, "lagnh")
            bal, corr = bit_stats(cf)
            print(f"| {label} | {params} | {mp:.4f} | {bal:.3f} | {corr:.3f} |", flush=True)


def deepbit_steps(data: str) -> None:
    """Early stopping: the paper's stage 1 (quantisation + even distribution, SGD, the defaults)
    stopped after a given number of gradient steps; 0 steps is the initial random layer."""
    import torch

    from lagnh_pyg.baselines.deep import minibatches
    from lagnh_pyg.baselines.deepbit import DeepBit, even_distribution_loss, quantization_loss
    from lagnh_pyg.metrics import mean_average_precision

    class Stopped(DeepBit):
        def _train(self, X, views, gen) -> None:
            c, done = self.config, 0
            opt = torch.optim.SGD(self.net.parameters(), lr=c["lr"], momentum=0.9)
            while done < self.steps:
                for idx in minibatches(len(X), c["batch_size"], gen, drop_last=True):
                    if done == self.steps:
                        break
                    F = torch.sigmoid(self.net(self.inputs(X[idx])))
                    loss = c["alpha"] * quantization_loss(F) + c["beta"] * even_distribution_loss(F)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    done += 1

    Xf, Xv, Lf, Lv, views = validation_data(data)
    print("| seed | stage-1 steps (batch 128; 31 = one epoch) | validation MAP | balance | mean abs corr |")
    print("|---|---|---|---|---|")
    for seed in (0, 1, 2):
        for steps in (0, 1, 3, 10, 31, 100):
            m = Stopped(32, seed)
            m.steps = steps
            m.fit(Xf, views=views)
            cf = m.encode(Xf)
            bal, corr = bit_stats(cf)
            mp = mean_average_precision(m.encode(Xv), cf, Lv, Lf, 1000, "lagnh")
            print(f"| {seed} | {steps} | {mp:.4f} | {bal:.3f} | {corr:.3f} |", flush=True)


def official_deepbit_codes(Xf, Xv, views, bits: int, seed: int, centre: bool):
    """Codes of the official Caffe pipeline, emulated on features (kevinlin311tw/cvpr16-deepbit).

    fc8 ~ N(0, 0.01), bias 0, then ReLU. Stage 1: both loss layers take fc8 twice as their
    bottoms and write +g to one and -g to the other; Caffe splits a blob read twice and sums
    the two diffs, so fc8 receives no loss gradient, only weight decay, which scales W (the
    bias has decay 0) and leaves the codes below unchanged -- skipped here. Stage 2 (5,000
    iterations, batch 32, lr 1e-4 x 0.1 every 1,000, momentum 0.9, weight decay 5e-4, bias lr
    x 2): the transform loss, weight 0.001, ``sum_n ||F(view_n) - F(x_n)||^2 / 2B`` (its
    backward ignores the rotation weights). Codes (run_cifar10.m): ``F(x) > t``, t the mean of
    all training activations."""
    import torch

    g = torch.Generator().manual_seed(seed)
    X, V = torch.from_numpy(Xf), torch.from_numpy(np.asarray(views, dtype=np.float32))
    mean = X.mean(0) if centre else torch.zeros(X.shape[1])
    W = (torch.randn(bits, X.shape[1], generator=g) * 0.01).requires_grad_()
    b = torch.zeros(bits, requires_grad=True)

    def F(x):
        return torch.relu((x - mean) @ W.T + b)

    opt = torch.optim.SGD([{"params": [W], "weight_decay": 5e-4}, {"params": [b], "lr": 2e-4}], lr=1e-4, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1000, 0.1)
    for _ in range(5000):
        idx = torch.randint(len(X), (32,), generator=g)
        k = torch.randint(V.shape[1], (32,), generator=g)
        loss = 0.001 * ((F(V[idx, k]) - F(X[idx])) ** 2).sum() / (2 * 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        t = F(X).mean()
        return [(F(torch.from_numpy(A)) > t).numpy().astype(np.int8) * 2 - 1 for A in (Xf, Xv)]


def deepbit_official(data: str) -> None:
    """The official DeepBit pipeline (:func:`official_deepbit_codes`) against LSH, three seeds."""
    from lagnh_pyg.baselines import make_baseline
    from lagnh_pyg.metrics import mean_average_precision

    Xf, Xv, Lf, Lv, views = validation_data(data)
    print("| model | bits | seed | validation MAP | balance | mean abs corr |\n|---|---|---|---|---|---|")
    for bits in (16, 32, 64):
        for seed in (0, 1, 2):
            m = make_baseline("lsh", bits, seed).fit(Xf)
            rows = [("lsh", m.encode(Xf), m.encode(Xv))]
            for centre in (False, True):
                cf, cv = official_deepbit_codes(Xf, Xv, views, bits, seed, centre)
                rows.append((f"official deepbit, {'centred' if centre else 'raw'} input", cf, cv))
            for label, cf, cv in rows:
                bal, corr = bit_stats(cf)
                mp = mean_average_precision(cv, cf, Lv, Lf, 1000, "lagnh")
                print(f"| {label} | {bits} | {seed} | {mp:.4f} | {bal:.3f} | {corr:.3f} |", flush=True)


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
    ap.add_argument("what", choices=("codes", "deepbit", "deepbit-init", "deepbit-steps", "deepbit-official", "ssdh"))
    ap.add_argument("path", help="an accuracy report directory (codes) or a dataset directory")
    args = ap.parse_args()
    {"codes": codes, "deepbit": deepbit, "deepbit-init": deepbit_init, "deepbit-steps": deepbit_steps,
     "deepbit-official": deepbit_official, "ssdh": ssdh}[args.what](args.path)


if __name__ == "__main__":
    main()
