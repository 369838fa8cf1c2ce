"""The interface every shallow hashing baseline implements, and its on-disk form.

A baseline is fitted once on the training features and then encodes any item on its own
(batch-independent), which is all ``lagnh encode`` needs::

    model = ITQ(bits=64, seed=0).fit(train_features)     # (n, d) float
    codes = model.encode(features)                        # (m, 64) int8, entries +1 / -1
    model.save("model.npz"); model = load_model("model.npz")

Codes follow the contract of :mod:`lagnh_pyg.codes`: bit ``j`` is 1 where the method's
real-valued embedding ``project(x)[j]`` is strictly positive (an exact 0 gives -1).

The fitted parameters are saved as a plain ``.npz`` (read back with ``allow_pickle=False``):
the arrays named in ``fitted``, plus ``method``, ``bits``, ``seed``, ``feature_dim`` and the
parameters and fit diagnostics as JSON strings.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..codes import check_bits
from ..errors import InputError
from ..files import atomic_path

MODEL_FORMAT = "lagnh-baseline"


@dataclass(frozen=True)
class Param:
    """One tunable parameter of a baseline (``--set name=value`` on the command line).

    Args:
        name: the parameter's name. default: its default value.
        kind: ``int``, ``float``, ``float|auto`` (a number or the string ``auto``) or
            ``choice`` (one of ``choices``).
        help: one line for ``lagnh baseline --help``.
        minimum: smallest allowed number (inclusive), if any.
        positive: numbers must be > 0.
    """

    name: str
    default: Any
    kind: str
    help: str
    minimum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] = ()

    def parse(self, value: Any, method: str) -> Any:
        """Validate ``value`` (a Python value or the text of ``--set``); return it typed."""
        where = f"{method} parameter {self.name}"
        if self.kind == "choice":
            if str(value) not in self.choices:
                raise InputError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
            return str(value)
        if self.kind == "float|auto" and str(value).strip().lower() == "auto":
            return "auto"
        expected = "an integer" if self.kind == "int" else "a number" + (" or 'auto'" if "auto" in self.kind else "")
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            raise InputError(f"{where} must be {expected}, got {value!r}")
        if self.kind == "int":
            if not number.is_integer():
                raise InputError(f"{where} must be {expected}, got {value!r}")
            number = int(number)
        if not np.isfinite(number):
            raise InputError(f"{where} must be finite, got {value!r}")
        if self.positive and number <= 0:
            raise InputError(f"{where} must be positive, got {value!r}")
        if self.minimum is not None and number < self.minimum:
            raise InputError(f"{where} must be at least {self.minimum:g}, got {value!r}")
        return number

    def describe(self) -> str:
        return f"{self.name}={self.default}: {self.help}"


def as_features(features: Any, what: str = "features", dim: int | None = None) -> np.ndarray:
    """A C-contiguous float32 (n, d) copy or view of ``features``, checked finite."""
    X = np.asarray(features)
    if X.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (items x dims), got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise InputError(f"{what} must be numeric, got dtype {X.dtype}")
    if dim is not None and X.shape[1] != dim:
        raise InputError(f"{what} have {X.shape[1]} dimensions but the model was fitted on {dim}-d features")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise InputError(f"{what} contain NaN or inf (first at row {row}, column {col}); clean the features first")
    return X


def signs(embedding: np.ndarray) -> np.ndarray:
    """The codes of a real-valued embedding: +1 where strictly positive, else -1 (int8)."""
    return np.where(embedding > 0, np.int8(1), np.int8(-1))


def fix_column_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its entry of largest magnitude is positive.

    Eigenvectors are defined up to sign; fixing it makes fitted models reproducible across
    LAPACK builds (a flipped bit never changes a Hamming distance, but it changes the file).
    """
    idx = np.argmax(np.abs(vectors), axis=0)
    flip = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    flip[flip == 0] = 1
    return vectors * flip


class HashingBaseline:
    """Base class of the shallow baselines: ``fit``, ``encode``, ``save``/``load``.

    Subclasses set ``name``, ``summary``, ``params`` and ``fitted`` (the attribute names of
    the fitted arrays), and implement ``_fit(X, rng)`` and ``project(X)``; optionally
    ``_check_fit(X)`` for method-specific limits (e.g. PCA needs ``bits <= d``).

    Args:
        bits: the code length (a positive multiple of 8).
        seed: seed of every random choice of the fit (same seed, same data: same model).
        **params: the method's parameters (see ``params``); unknown names are an error.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[Sequence[Param]] = ()
    fitted: ClassVar[Sequence[str]] = ()
    batch_independent: ClassVar[bool] = True

    def __init__(self, bits: int, seed: int = 0, **params: Any) -> None:
        self.bits = check_bits(bits)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            accepted = ", ".join(known) if known else "none"
            raise InputError(f"{self.name} has no parameter {', '.join(unknown)}; its parameters: {accepted}")
        self.config = {p.name: p.parse(params.get(p.name, p.default), self.name) for p in self.params}
        self.feature_dim: int | None = None
        self.fit_info: dict[str, Any] = {}

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, features: Any) -> HashingBaseline:
        """Fit on ``features`` ((n, d), any float; copied to float32). Returns ``self``."""
        X = as_features(features, "training features")
        if X.shape[0] < 2:
            raise InputError(f"{self.name} needs at least 2 training items, got {X.shape[0]}")
        self._check_fit(X)
        start = time.perf_counter()
        self._fit(X, np.random.default_rng(self.seed))
        self.feature_dim = int(X.shape[1])
        self.fit_info["fit_seconds"] = round(time.perf_counter() - start, 4)
        self.fit_info["train_items"] = int(X.shape[0])
        return self

    def _check_fit(self, X: np.ndarray) -> None:
        pass

    def _fit(self, X: np.ndarray, rng: np.random.Generator) -> None:
        raise NotImplementedError

    # -- encoding ---------------------------------------------------------------------------
    def project(self, X: np.ndarray) -> np.ndarray:
        """The real-valued (n, bits) embedding whose signs are the codes (X: float32)."""
        raise NotImplementedError

    def encode(self, features: Any, aux: Any = None) -> np.ndarray:
        """(n, bits) int8 codes, +1 / -1, of ``features`` (``aux`` is ignored: visual only)."""
        if self.feature_dim is None:
            raise InputError(f"{self.name} model is not fitted; call fit() or load a saved model")
        X = as_features(features, dim=self.feature_dim)
        return signs(self.project(X))

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted parameters to ``path`` (.npz, atomically)."""
        if self.feature_dim is None:
            raise InputError(f"{self.name} model is not fitted; nothing to save")
        arrays = {key: np.asarray(getattr(self, key)) for key in self.fitted}
        meta = {
            "format": np.array(MODEL_FORMAT),
            "method": np.array(self.name),
            "bits": np.array(self.bits),
            "seed": np.array(self.seed),
            "feature_dim": np.array(self.feature_dim),
            "config": np.array(json.dumps(self.config)),
            "fit_info": np.array(json.dumps(self.fit_info)),
        }
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **meta, **arrays)
        return path

    @classmethod
    def _from_npz(cls, z: Any, path: Path) -> HashingBaseline:
        model = cls(int(z["bits"]), int(z["seed"]), **json.loads(str(z["config"])))
        missing = [key for key in cls.fitted if key not in z.files]
        if missing:
            raise InputError(f"{path} lacks the fitted array(s) {', '.join(missing)} of {cls.name}")
        for key in cls.fitted:
            setattr(model, key, z[key])
        model.feature_dim = int(z["feature_dim"])
        model.fit_info = json.loads(str(z["fit_info"]))
        return model

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}(bits={self.bits}, seed={self.seed}{params})"


def linear_embedding(X: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``(X - mean) @ projection`` without a centred copy of X: ``X @ P - mean @ P`` (float32)."""
    out = X @ projection
    out -= (mean.astype(np.float64) @ projection.astype(np.float64)).astype(np.float32)
    return out
