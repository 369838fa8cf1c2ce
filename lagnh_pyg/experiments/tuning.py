"""Choosing a baseline's hyper-parameters where its paper is silent -- on the training data only.

The training split is divided (seeded) into a *fit* part and a *validation* part; each grid
point is fitted on the fit part, and the validation items are ranked, as queries, against
the fit items, as the database, with the training items' labels. The query and database
splits are never read. The report lists every grid point; the chosen values go into
``configs/baselines/<method>.yaml`` by hand, with the report as their provenance.

With ``inputs=both`` (or ``aux``) fixed, the fit and validation items are hashed from their own
features and aux, so ``aux_weight`` can be tuned like any other parameter;
:mod:`lagnh_pyg.experiments.same_inputs` chooses it this way for Table 3's same-inputs block.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.store import Dataset
from ..errors import InputError
from ..files import write_json_atomic, write_text
from ..metrics import PROTOCOL_DESCRIPTIONS, check_protocol, mean_average_precision
from ..report.provenance import provenance, provenance_markdown
from ..report.tables import markdown_table

#: how far :func:`sweep_weights` may go past the grid's edge: on the demo's detector aux
#: CIBHash's validation MAP still rose from 64 to 1024 at 64 bits
EXTEND_MAX = 4096.0
EXTEND_MIN = 1 / 64


def validation_split(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, validation)`` rows of the training split: a seeded random ``fraction`` validates."""
    if not 0 < fraction < 1:
        raise InputError(f"validation fraction must lie in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(round(fraction * len(train))))
    if n_val >= len(train):
        raise InputError(f"the training split ({len(train)} items) is too small to hold out {fraction:.0%}")
    return np.sort(train[perm[n_val:]]), np.sort(train[perm[:n_val]])


def sweep_weights(weights: Sequence[float], score: Callable[[float], dict[str, Any]],
                  extend: bool = True) -> dict[str, Any]:
    """Score every weight of the grid ``weights`` (``score(w)``: a dict with the weight's
    ``validation_map``, kept in its result with anything else it holds) and pick the
    highest (ties: the first in grid order). With ``extend`` and a grid of two or more weights,
    a pick at the grid's largest weight is followed by 2w, 4w, ... (at most :data:`EXTEND_MAX`)
    and one at its smallest nonzero weight by w/2, w/4, ... (at least :data:`EXTEND_MIN`), each
    scored, until two in a row fail to beat the best so far (one dip is forgiven: a validation
    MAP is noisy) or the bound is passed. Returns ``{"aux_weight", "validation_map",
    "results": [{"aux_weight", "validation_map", "extended"}, ...]}`` in the order scored."""
    results = [{"aux_weight": float(w), **score(w), "extended": False} for w in weights]
    best = max(results, key=lambda r: r["validation_map"])
    w0 = best["aux_weight"]
    if extend and len(weights) >= 2 and (w0 == max(weights) or 0 < w0 == min(weights)):
        factor = 2.0 if w0 == max(weights) else 0.5
        w, misses = w0 * factor, 0
        while (w <= EXTEND_MAX if factor > 1 else w >= EXTEND_MIN) and misses < 2:
            r = {"aux_weight": float(w), **score(w), "extended": True}
            results.append(r)
            if r["validation_map"] > best["validation_map"]:
                best, misses = r, 0
            else:
                misses += 1
            w *= factor
    return {"aux_weight": best["aux_weight"], "validation_map": best["validation_map"], "results": results}


@dataclass
class ValidationData:
    """The training split divided into a fit part and a validation part, with what each needs:
    features, aux (what ``inputs=aux|both`` hash) and labels. The query and database splits
    are never read."""

    ds: Dataset
    fit_idx: np.ndarray
    val_idx: np.ndarray
    X_fit: np.ndarray
    X_val: np.ndarray
    A_fit: np.ndarray
    A_val: np.ndarray
    L_fit: np.ndarray
    L_val: np.ndarray

    @classmethod
    def of(cls, ds: Dataset, fraction: float = 0.2, seed: int = 0) -> ValidationData:
        ds.require_labels("validation")
        fit_idx, val_idx = validation_split(ds.split("train"), fraction, seed)
        return cls(ds, fit_idx, val_idx, ds.feature_rows(fit_idx), ds.feature_rows(val_idx), ds.aux_rows(fit_idx),
                   ds.aux_rows(val_idx), ds.label_rows(fit_idx), ds.label_rows(val_idx))

    def score(self, method: str, bits: int, params: Mapping[str, Any], *, seed: int = 0, topk: int | None = 1000,
              protocol: str = "lagnh", device: str = "cpu") -> dict[str, Any]:
        """Fit ``method`` with ``params`` on the fit part (its aux too when ``inputs`` reads it);
        return the validation items' MAP@K against the fit items, each encoded from its own
        features and aux, with the fit's seconds and augmentation."""
        from ..baselines import DeepBaseline, make_baseline

        model = make_baseline(method, bits, seed, **params)
        t0 = time.perf_counter()
        if isinstance(model, DeepBaseline):
            model.device = device
            views = self.ds.views_of(self.fit_idx) if model.uses_views and self.ds.has_views else None
            model.fit(self.X_fit, views=views, aux=self.A_fit)
        else:
            model.fit(self.X_fit, aux=self.A_fit)
        seconds = time.perf_counter() - t0
        score = mean_average_precision(model.encode(self.X_val, self.A_val), model.encode(self.X_fit, self.A_fit),
                                       self.L_val, self.L_fit, topk, protocol)
        return {"validation_map": score, "fit_seconds": seconds, "augmentation": model.fit_info.get("augmentation")}


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
    fixed: Mapping[str, Any] | None = None,
    extend_weights: bool = False,
) -> Path:
    """Fit ``method`` at every point of ``grid`` on the fit part; score each on the validation
    part; write ``tune-<method>-<bits>bits.{md,json}`` into ``out_dir``. Returns the .md path.

    ``fixed`` parameters (e.g. ``inputs=both``) apply to every grid point; with ``inputs=aux``
    or ``both`` the fit and validation items' aux is passed too (``--grid aux_weight=...``).
    With ``extend_weights`` and a grid over ``aux_weight`` alone, a best weight at the grid's
    edge is followed past it as Table 3's same-inputs block does
    (:func:`sweep_weights`); the extra points are listed too.
    """
    from ..baselines import load_params, make_baseline

    check_protocol(protocol)
    ds = Dataset.open(data_dir)
    base, source = load_params(method)
    base = {**base, **(fixed or {})}
    keys = list(grid)
    if extend_weights and keys != ["aux_weight"]:
        raise InputError(f"--extend-weights follows aux_weight past its grid's edge: give --grid aux_weight=... and no other "
                         f"--grid (got {', '.join(keys) or 'none'})")
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    for point in points:  # every grid point validated before the first fit
        make_baseline(method, bits, seed, **{**base, **point})
    data = ValidationData.of(ds, fraction, seed)
    def score(point: dict[str, Any]) -> dict[str, Any]:
        return data.score(method, bits, {**base, **point}, seed=seed, topk=topk, protocol=protocol, device=device)

    if extend_weights:
        swept = sweep_weights([float(p["aux_weight"]) for p in points], lambda w: score({"aux_weight": w}), True)
        results = [{"params": {"aux_weight": r.pop("aux_weight")}, **r} for r in swept["results"]]
    else:
        results = [{"params": point, **score(point)} for point in points]
    rows = [[*r["params"].values(), f"{r['validation_map']:.4f}", f"{r['fit_seconds']:.1f}"]
            + (["yes" if r["extended"] else ""] if extend_weights else []) for r in results]
    best = max(results, key=lambda r: r["validation_map"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"tune-{method}-{bits}bits"
    prov = provenance(dataset=str(ds.root.resolve()), data_fingerprint=ds.fingerprint, method=method, bits=bits,
                      base_config=source, fixed=dict(fixed or {}), seed=seed, fit_items=len(data.fit_idx),
                      validation_items=len(data.val_idx), protocol=protocol, extend_weights=extend_weights,
                      protocol_description=PROTOCOL_DESCRIPTIONS[protocol],
                      topk="all" if topk is None else topk, device=device,
                      model_selection="validation items of the training split against the other training items; "
                                      "the query and database splits are not read")
    fixed_note = "".join(f", {k}={v}" for k, v in (fixed or {}).items())
    head = (f"# Validation sweep: {method}, {bits} bits{fixed_note}\n\nMAP@{'all' if topk is None else topk} (protocol {protocol}) of "
            f"{len(data.val_idx)} held-out training items against the other {len(data.fit_idx)}; every grid point is listed. "
            f"Best: {best['params']} ({best['validation_map']:.4f}).\n\n")
    body = markdown_table([*keys, "validation MAP", "fit s", *(["past the grid"] if extend_weights else [])], rows)
    write_text(stem.with_suffix(".md"), head + body + "\n" + provenance_markdown(prov))
    write_json_atomic(stem.with_suffix(".json"), {"method": method, "bits": bits, "fixed": dict(fixed or {}),
                                                  "results": results, "best": best, "provenance": prov})
    return stem.with_suffix(".md")
