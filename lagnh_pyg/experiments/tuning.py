"""Choosing a baseline's hyper-parameters where its paper is silent -- on the training data only.

The training split is divided (seeded) into a *fit* part and a *validation* part; each grid
point is fitted on the fit part, and the validation items are ranked, as queries, against
the fit items, as the database, with the training items' labels. The query and database
splits are never read. The report lists every grid point; the chosen values go into
``configs/baselines/<method>.yaml`` by hand, with the report as their provenance.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.store import Dataset
from ..errors import InputError
from ..files import write_json_atomic, write_text
from ..metrics import PROTOCOL_DESCRIPTIONS, check_protocol, mean_average_precision
from ..report.provenance import provenance, provenance_markdown
from ..report.tables import markdown_table


def validation_split(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, validation)`` rows of the training split: a seeded random ``fraction`` validates."""
    if not 0 < fraction < 1:
        raise InputError(f"validation fraction must lie in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(round(fraction * len(train))))
    if n_val >= len(train):
        raise InputError(f"the training split ({len(train)} items) is too small to hold out {fraction:.0%}")
    return np.sort(train[perm[n_val:]]), np.sort(train[perm[:n_val]])


def tune_baseline(
    method: str,
    data_dir: str | Path,
    bits: int,
    grid: Mapping[str, Sequence[Any]],
    out_dir: str | Path,
    *,
    seed: int = 0,
    fraction: float = 0.2,
    topk: int | None = 1000,
    protocol: str = "lagnh",
    device: str = "cpu",
) -> Path:
    """Fit ``method`` at every point of ``grid`` on the fit part; score each on the validation
    part; write ``tune-<method>-<bits>bits.{md,json}`` into ``out_dir``. Returns the .md path."""
    from ..baselines import DeepBaseline, load_params, make_baseline

    check_protocol(protocol)
    ds = Dataset.open(data_dir)
    ds.require_labels("validation")
    fit_idx, val_idx = validation_split(ds.split("train"), fraction, seed)
    X_fit, X_val = ds.feature_rows(fit_idx), ds.feature_rows(val_idx)
    L_fit, L_val = ds.label_rows(fit_idx), ds.label_rows(val_idx)
    base, source = load_params(method)
    keys = list(grid)
    rows, results = [], []
    for values in itertools.product(*(grid[k] for k in keys)):
        params = {**base, **dict(zip(keys, values))}
        model = make_baseline(method, bits, seed, **params)
        t0 = time.perf_counter()
        if isinstance(model, DeepBaseline):
            model.device = device
            views = ds.views_of(fit_idx) if model.uses_views and ds.has_views else None
            model.fit(X_fit, views=views)
        else:
            model.fit(X_fit)
        seconds = time.perf_counter() - t0
        score = mean_average_precision(model.encode(X_val), model.encode(X_fit), L_val, L_fit, topk, protocol)
        results.append({"params": dict(zip(keys, values)), "validation_map": score, "fit_seconds": seconds,
                        "augmentation": model.fit_info.get("augmentation")})
        rows.append([*values, f"{score:.4f}", f"{seconds:.1f}"])
    best = max(results, key=lambda r: r["validation_map"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"tune-{method}-{bits}bits"
    prov = provenance(dataset=str(ds.root.resolve()), data_fingerprint=ds.fingerprint, method=method, bits=bits,
                      base_config=source, seed=seed, fit_items=len(fit_idx), validation_items=len(val_idx),
                      protocol=protocol, protocol_description=PROTOCOL_DESCRIPTIONS[protocol],
                      topk="all" if topk is None else topk, device=device,
                      model_selection="validation items of the training split against the other training items; "
                                      "the query and database splits are not read")
    head = (f"# Validation sweep: {method}, {bits} bits\n\nMAP@{'all' if topk is None else topk} (protocol {protocol}) of "
            f"{len(val_idx)} held-out training items against the other {len(fit_idx)}; every grid point is listed. "
            f"Best: {best['params']} ({best['validation_map']:.4f}).\n\n")
    body = markdown_table([*keys, "validation MAP", "fit s"], rows)
    write_text(stem.with_suffix(".md"), head + body + "\n" + provenance_markdown(prov))
    write_json_atomic(stem.with_suffix(".json"), {"method": method, "bits": bits, "results": results, "best": best,
                                                  "provenance": prov})
    return stem.with_suffix(".md")
