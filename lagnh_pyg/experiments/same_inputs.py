"""Table 3's "same inputs" block: baselines that hash LAGNH's inputs, and rankings that do not hash.

LAGNH sees every item's visual features ``x`` and its aux ``a`` (detections or tags); the
paper's baselines see ``x`` alone. The same-inputs block gives every baseline
``inputs=both``: ``[x/|x|, w a/|a|]`` (:class:`~lagnh_pyg.baselines.base.InputTransform`),
queries and database items each with their own aux, as LAGNH encodes them.

* **The weight ``w``** (``aux_weight``) is chosen per method and code length on the training
  data only: each weight of a small grid is fitted on the fit part of the training split and
  scored by the validation part's MAP@K against the fit part
  (:class:`~lagnh_pyg.experiments.tuning.ValidationData`); the highest wins (ties: the first
  in grid order). When the winner is the grid's largest weight, the sweep goes on past it,
  doubling the weight while the validation MAP still rises (two steps without a gain end it;
  up to :data:`EXTEND_MAX`); when it is the smallest (and not 0), halving it (down to
  :data:`EXTEND_MIN`): a method whose best weight lies outside the grid is not held at the
  grid's edge (:func:`sweep_weights`).
  The query and database splits are never read.
* **Reference rows** rank the database by cosine similarity, without codes
  (:func:`lagnh_pyg.metrics.evaluate_cosine`, ties by database order as for codes): on the
  features, on the aux, and on the concatenation with weight 1 and with its own weight chosen
  on the validation split the same way. They bound what a hash of these inputs can give.

Every choice is cached in ``REPORT_DIR/choices/<name>.json`` with what decided it (dataset,
method config, grid, validation split, K, protocol), so a later run on the same report
directory reuses it, and with it the finished runs that used it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..baselines.base import InputTransform
from ..errors import InputError
from ..files import write_json_atomic
from .common import ExperimentSpec
from .tuning import EXTEND_MAX, EXTEND_MIN, ValidationData, sweep_weights

logger = logging.getLogger(__name__)

#: the aux weights tried on the validation split (up to 64: on the demo data several baselines'
#: validation MAP still rose at 16)
AUX_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
#: the validation split of the training data (the share held out and its seed)
VALIDATION = {"fraction": 0.2, "seed": 0}
CHOICES_DIR = "choices"


def check_weights(weights: Sequence[Any]) -> tuple[float, ...]:
    """The aux-weight grid as floats: finite, >= 0, no repeats."""
    out = []
    for w in weights:
        value = InputTransform.from_params({"inputs": "both", "aux_weight": w}, "--aux-weights").aux_weight
        if value in out:
            raise InputError(f"--aux-weights lists {value:g} twice")
        out.append(value)
    if not out:
        raise InputError("--aux-weights: give at least one weight")
    return tuple(out)


class Validation:
    """The training split's validation data of one spec, read once when first needed."""

    def __init__(self, spec: ExperimentSpec) -> None:
        self.spec = spec
        self._data: ValidationData | None = None

    @property
    def data(self) -> ValidationData:
        if self._data is None:
            self._data = ValidationData.of(self.spec.dataset, **VALIDATION)
        return self._data

    def key(self) -> dict[str, Any]:
        s = self.spec
        return {"data_fingerprint": s.dataset.fingerprint, "validation": VALIDATION,
                "topk": "all" if s.topk is None else s.topk, "protocol": s.protocol}


def _cached(spec: ExperimentSpec, name: str, key: dict[str, Any], compute: Callable[[], dict]) -> dict[str, Any]:
    """``compute()``, or its stored result when ``REPORT_DIR/choices/<name>.json`` has the same key."""
    path = spec.out_dir / CHOICES_DIR / f"{name}.json"
    key = json.loads(json.dumps(key))  # the JSON form, as it will be read back
    if spec.reuse and path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("key") == key and "result" in old:
            logger.info("[%s] reusing the choice in %s", name, path)
            return {**old["result"], "reused": True}
    result = compute()
    write_json_atomic(path, {"key": key, "result": result})
    return {**result, "reused": False}


def _extend_key(extend: bool) -> dict[str, Any]:
    """The cache key's entry for a sweep that may go past the grid's edge (none without ``extend``,
    so that the keys of plain sweeps stay as they were)."""
    return {"extend": {"max": EXTEND_MAX, "min": EXTEND_MIN}} if extend else {}


def choose_aux_weight(spec: ExperimentSpec, validation: Validation, method: str, bits: int,
                      weights: Sequence[float], device: str = "cpu", extend: bool = False) -> dict[str, Any]:
    """The ``aux_weight`` of ``method`` with ``inputs=both`` at ``bits``, chosen on the
    validation split (:func:`sweep_weights`, past the grid's edge with ``extend``):
    ``{"aux_weight", "validation_map", "results": [per weight], "seconds"}``."""
    from ..baselines import load_params

    base = load_params(method)[0]
    key = {"method": method, "bits": int(bits), "weights": list(weights), "config": base or None,
           "seed": VALIDATION["seed"], **validation.key(), **_extend_key(extend)}

    def score(w: float) -> dict[str, Any]:
        params = {**base, "inputs": "both", "aux_weight": w}
        r = validation.data.score(method, bits, params, seed=VALIDATION["seed"], topk=spec.topk,
                                  protocol=spec.protocol, device=device)
        logger.info("[%s %d bits] aux_weight %g: validation MAP %.4f", method, bits, w, r["validation_map"])
        return r

    def compute() -> dict[str, Any]:
        t0 = time.perf_counter()
        return {**sweep_weights(weights, score, extend), "seconds": time.perf_counter() - t0}

    return _cached(spec, f"aux_weight-{method}-{bits}bits", key, compute)


#: the reference rows: (name, inputs, aux weight or None = chosen on the validation split)
REFERENCES = (
    ("cosine on features", "visual", 1.0),
    ("cosine on aux", "aux", 1.0),
    ("cosine on [features, aux]", "both", 1.0),
    ("cosine on [features, aux], tuned weight", "both", None),
)


class TransformedRows:
    """The rows ``idx`` of a dataset as a baseline with ``transform`` sees them, read on demand
    (``rows[a:b]``): the cosine reference scans a database of any size in bounded memory."""

    def __init__(self, ds, idx, transform: InputTransform) -> None:
        self.ds, self.idx, self.transform = ds, idx, transform
        self.shape = (len(idx), transform.dim(ds.feature_dim, ds.aux_dim))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        part = self.idx[rows]
        aux = self.ds.aux_rows(part) if self.transform.uses_aux else None
        return self.transform(self.ds.feature_rows(part), aux)


def _cosine_map(transform: InputTransform, q, db, spec: ExperimentSpec):
    """MAP@K of cosine ranking of the items ``q`` against ``db`` (both: ``(features, aux, labels)``,
    or ``db`` as ``(TransformedRows, labels)``)."""
    from ..metrics import evaluate_cosine

    db_vectors = db[0] if len(db) == 2 else transform(db[0], db[1])
    return evaluate_cosine(transform(q[0], q[1]), db_vectors, q[2], db[-1], spec.topk, spec.protocol)


def cosine_references(spec: ExperimentSpec, validation: Validation, weights: Sequence[float],
                      extend: bool = False) -> list[dict[str, Any]]:
    """The reference rows: MAP@K of cosine ranking of the queries against the database on the
    features, the aux, ``[x/|x|, a/|a|]`` and ``[x/|x|, w a/|a|]`` with ``w`` chosen on the
    validation split (cached; :func:`sweep_weights`, past the grid's edge with ``extend``).
    Each row: ``name``, ``inputs``, ``aux_weight``, ``map``, ``pk``, ``seconds``; the tuned row
    also ``validation`` (every weight's validation MAP)."""
    from ..metrics import COSINE_TIE

    key = {"weights": list(weights), **validation.key(), "references": [list(r) for r in REFERENCES],
           "cosine_tie": COSINE_TIE, **_extend_key(extend)}

    def compute() -> dict[str, Any]:
        v = validation.data

        def score(w: float) -> dict[str, Any]:
            return {"validation_map": _cosine_map(InputTransform("both", w), (v.X_val, v.A_val, v.L_val),
                                                  (v.X_fit, v.A_fit, v.L_fit), spec).map}

        tuned = sweep_weights(weights, score, extend)
        val = tuned["results"]
        ds = spec.dataset
        q, db = ds.split("query"), ds.split("database")
        queries, L_db = (ds.feature_rows(q), ds.aux_rows(q), ds.label_rows(q)), ds.label_rows(db)
        rows = []
        for name, inputs, w in REFERENCES:
            w = tuned["aux_weight"] if w is None else w
            t0 = time.perf_counter()
            transform = InputTransform(inputs, w if inputs == "both" else 1.0)
            res = _cosine_map(transform, queries, (TransformedRows(ds, db, transform), L_db), spec)
            row = {"name": name, "inputs": inputs, "aux_weight": w if inputs == "both" else None, "map": res.map,
                   "pk_cutoffs": res.pk_cutoffs.tolist(), "pk": res.pk.tolist(),
                   "seconds": time.perf_counter() - t0}
            if name.endswith("tuned weight"):
                row["validation"] = val
            rows.append(row)
            logger.info("[reference] %s: MAP %.4f", name, res.map)
        return {"rows": rows}

    return _cached(spec, "cosine-references", key, compute)["rows"]
