"""Reference points for docs/results/data-size.md: what the demo's inputs allow without training,
and where the trained codes lose.

    .venv/bin/python benchmarks/data_size_refs.py /work/cache/demo50k/dataset [--runs RUN ...]

Prints, for the dataset's queries against its database (MAP@1000, protocol lagnh):
  * the MAP of ranking by cosine on the raw features, on the aux, and on their unweighted sum,
    and by Hamming distance on the binarised aux (also through lagnh_pyg.metrics, as a check of
    this script's AP formula);
  * the share of the database items' 10 nearest training items (cosine on features) that share
    a label with them, for the first 5,000 / 20,000 / ... training items (the demo's larger
    training sets extend the smaller ones, so these are the smaller sets);
  * for each run directory given (with codes from `lagnh encode`), the MAP over all queries and
    split into the queries whose binarised aux equals their labels and the others.
Not a test; one thread, ~2 min at 50,000 training items.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lagnh_pyg, not an installed copy

from lagnh_pyg.data.store import Dataset  # noqa: E402
from lagnh_pyg.metrics import evaluate_retrieval, mean_average_precision  # noqa: E402

TOPK = 1000


def unit(m) -> np.ndarray:
    m = np.asarray(m, np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def ap_at_k(sim: np.ndarray, lq: np.ndarray, ldb: np.ndarray, k: int = TOPK) -> np.ndarray:
    """AP@k of each query for a real-valued ranking (higher first, ties by database order):
    the formula of lagnh_pyg.metrics, which only ranks Hamming distances."""
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    rel = (lq[:, None, :] & ldb[order]).any(-1)
    cum = np.cumsum(rel, 1)
    num = (np.where(rel, cum, 0) / np.arange(1, k + 1)).sum(1)
    return np.divide(num, cum[:, -1], out=np.zeros(len(rel)), where=cum[:, -1] > 0)


def reference_rankings(ds: Dataset, q: np.ndarray, db: np.ndarray) -> None:
    x, a, lab = ds.features, np.asarray(ds.aux_rows()), ds.require_labels().astype(bool)
    lq, ldb = lab[q], lab[db]
    counted = (lq.astype(np.int64) @ ldb.T.astype(np.int64) > 0).any(1)  # protocol lagnh
    s_feat = unit(x[q]) @ unit(x[db]).T
    s_aux = unit(a[q]) @ unit(a[db]).T
    for name, sim in [("cosine on features", s_feat), ("cosine on aux", s_aux),
                      ("cosine on features + cosine on aux", s_feat + s_aux)]:
        print(f"{name:<44} MAP@{TOPK} {ap_at_k(sim, lq, ldb)[counted].mean():.4f}")
    bq, bdb = a[q] > 0, a[db] > 0
    ham = -(bq[:, None, :] != bdb[None]).sum(-1).astype(np.float32)
    own = ap_at_k(ham, lq, ldb)[counted].mean()
    pkg = mean_average_precision(bq, bdb, lab[q], lab[db], topk=TOPK, protocol="lagnh")
    print(f"{'Hamming on binarised aux':<44} MAP@{TOPK} {own:.4f} (lagnh_pyg.metrics: {pkg:.4f})")


def neighbour_purity(ds: Dataset, db: np.ndarray, train: np.ndarray, k: int = 10, chunk: int = 2000) -> None:
    lab = ds.require_labels().astype(bool)
    xdb, xtr, ldb, ltr = unit(ds.features[db]), unit(ds.features[train]), lab[db], lab[train]
    for n in sorted({5000, 20000, 50000, len(train)} & set(range(k + 1, len(train) + 1))):
        share = []
        for s in range(0, len(db), chunk):
            nn = np.argpartition(-(xdb[s:s + chunk] @ xtr[:n].T), k, axis=1)[:, :k]
            share.append((ldb[s:s + chunk, None, :] & ltr[:n][nn]).any(-1).mean(1))
        print(f"first {n:>7,} training items: top-{k} feature neighbours of the database sharing a label "
              f"{np.concatenate(share).mean():.4f}")


def split_by_aux(ds: Dataset, q: np.ndarray, db: np.ndarray, runs: list[Path]) -> None:
    lab = ds.require_labels()
    aq, adb = np.asarray(ds.aux_rows(q)), np.asarray(ds.aux_rows(db))
    exact = ((aq > 0) == (lab[q] > 0)).all(1)
    print(f"queries whose binarised aux equals their labels: {exact.mean():.3f}; "
          f"database items: {((adb > 0) == (lab[db] > 0)).all(1).mean():.3f}")
    counted = (lab[q].astype(np.int64) @ lab[db].T.astype(np.int64) > 0).any(1)
    rows = [("cosine on aux", ap_at_k(unit(aq) @ unit(adb).T, lab[q] > 0, lab[db] > 0), counted)]
    for run in runs:
        r = evaluate_retrieval(np.load(run / "codes/query.npy"), np.load(run / "codes/database.npy"),
                               lab[q], lab[db], topk=TOPK, protocol="lagnh", curves=False)
        rows.append((str(run), r.ap, r.counted))
    for name, ap, c in rows:
        ok, bad = c & exact, c & ~exact
        print(f"{name}: MAP {ap[c].mean():.4f}; aux = labels {ap[ok].mean():.4f} (n={ok.sum()}); "
              f"aux wrong {ap[bad].mean():.4f} (n={bad.sum()})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--runs", type=Path, nargs="*", default=[])
    args = p.parse_args()
    ds = Dataset.open(args.data)
    q, db, train = ds.split("query"), ds.split("database"), ds.split("train")
    t, w = time.process_time(), time.perf_counter()
    reference_rankings(ds, q, db)
    neighbour_purity(ds, db, train)
    split_by_aux(ds, q, db, args.runs)
    print(f"cpu {time.process_time() - t:.1f} s, wall {time.perf_counter() - w:.1f} s")


if __name__ == "__main__":
    main()
