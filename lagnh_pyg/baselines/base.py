"""The interface every shallow hashing baseline implements, and its on-disk form.

A baseline is fitted once on the training features and then encodes any item on its own
(batch-independent), which is all ``lagnh encode`` needs::

    model = ITQ(bits=64, seed=0).fit(train_features)     # (n, d) float
    codes = model.encode(features)                        # (m, 64) int8, entries +1 / -1
    model.save("model.npz"); model = load_model("model.npz")

Codes follow the contract of :mod:`lagnh_pyg.codes`: bit ``j`` is 1 where the method's
real-valued embedding ``project(x)[j]`` is strictly positive (an exact 0 gives -1).

What a method hashes is chosen by two parameters every baseline takes (:class:`InputTransform`,
applied by ``fit`` and ``encode`` alike, so each item is encoded from its own inputs)::

    inputs=visual   the features as given (default; the paper's Table 3)
    inputs=aux      the L2-normalised aux vector only
    inputs=both     [x / ||x||, aux_weight * a / ||a||]: LAGNH's inputs, side by side

    model = ITQ(bits=32, inputs="both", aux_weight=0.5).fit(train_features, aux=train_aux)
    codes = model.encode(features, aux)                   # each item with its own aux

The fitted parameters are saved as a plain ``.npz`` (read back with ``allow_pickle=False``):
the arrays named in ``fitted``, plus ``method``, ``bits``, ``seed``, ``feature_dim`` and the
parameters, the input transform and fit diagnostics as JSON strings. A file without an input
transform (saved before it existed) loads as ``inputs=visual``.
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
from ..params import Constraint, Integer, Options, Real

MODEL_FORMAT = "lagnh-baseline"
#: the metadata of a model file besides its arrays (``inputs`` since the input transform)
SAVED_KEYS = ("format", "method", "bits", "seed", "feature_dim", "config", "inputs", "fit_info")


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

    @property
    def constraint(self) -> Constraint:
        """The constraint of :mod:`lagnh_pyg.params` this declaration stands for (numbers may
        come as the text of ``--set``)."""
        if self.kind == "choice":
            return Options(*self.choices, text=True)
        number = Integer if self.kind == "int" else Real
        return number(low=self.minimum, positive=self.positive, auto=self.kind == "float|auto", text=True)

    def parse(self, value: Any, method: str) -> Any:
        """Validate ``value`` (a Python value or the text of ``--set``); return it typed."""
        return self.constraint.check(f"{method} parameter {self.name}", value)

    def describe(self) -> str:
        return f"{self.name}={self.default}: {self.help}"


#: what ``inputs`` may be, and what each choice hashes (``lagnh baseline --help``, the README)
INPUT_CHOICES = {
    "visual": "x, the features as given (the default; the paper's Table 3)",
    "aux": "a/|a|, the L2-normalised aux alone",
    "both": "x/|x| and aux_weight * a/|a| side by side: both L2-normalised, concatenated (LAGNH's inputs)",
}
INPUT_PARAMS = (
    Param("inputs", "visual", "choice", "what the method hashes: " + "; ".join(f"{k}: {v}" for k, v in INPUT_CHOICES.items()),
          choices=tuple(INPUT_CHOICES)),
    Param("aux_weight", 1.0, "float", "inputs=both: the weight of the unit aux beside the unit features", minimum=0),
)


@dataclass(frozen=True)
class InputTransform:
    """What a baseline hashes: the features, the aux, or both (``inputs`` / ``aux_weight``).

    With ``x`` an item's features and ``a`` its aux vector (an all-zero row stays zero, never NaN):

    * ``visual``: ``x`` unchanged (float32);
    * ``aux``: ``a / ||a||``;
    * ``both``: ``[x / ||x||, aux_weight * a / ||a||]``, dimension ``d + c``.

    The transform is row-wise: each item's input depends on its own features and aux only,
    at fit time and at encode time alike.
    """

    inputs: str = "visual"
    aux_weight: float = 1.0

    @classmethod
    def from_params(cls, params: dict[str, Any], method: str) -> InputTransform:
        """Validate ``inputs`` and ``aux_weight`` (Python values or ``--set`` text)."""
        values = {p.name: p.parse(params.get(p.name, p.default), method) for p in INPUT_PARAMS}
        if values["inputs"] != "both" and values["aux_weight"] != 1.0:
            raise InputError(f"{method} parameter aux_weight={values['aux_weight']:g} weighs the aux of inputs=both only; "
                             f"add --set inputs=both or drop aux_weight (inputs is {values['inputs']})")
        return cls(values["inputs"], float(values["aux_weight"]))

    @property
    def uses_aux(self) -> bool:
        return self.inputs != "visual"

    def dim(self, feature_dim: int, aux_dim: int | None) -> int:
        """The dimension of the transformed input."""
        return {"visual": feature_dim, "aux": aux_dim or 0, "both": feature_dim + (aux_dim or 0)}[self.inputs]

    def record(self) -> dict[str, Any]:
        """The JSON form saved with the model and in ``run.json`` (``aux_weight`` with ``both`` only)."""
        return {"inputs": self.inputs, **({"aux_weight": self.aux_weight} if self.inputs == "both" else {})}

    def __call__(self, X: np.ndarray, A: np.ndarray | None) -> np.ndarray:
        """The (n, dim) float32 input of features ``X`` (n, d) and aux ``A`` (n, c), both checked."""
        from ..knn import l2_normalize

        if self.inputs == "visual":
            return X
        if self.inputs == "aux":
            return l2_normalize(A)
        out = np.empty((len(X), X.shape[1] + A.shape[1]), dtype=np.float32)
        out[:, : X.shape[1]] = l2_normalize(X)
        out[:, X.shape[1]:] = l2_normalize(A)
        out[:, X.shape[1]:] *= np.float32(self.aux_weight)
        return out


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
        bits: the code length: a positive integer; a multiple of 8 for a run directory (packed
            codes: :func:`~lagnh_pyg.baselines.make_baseline` and ``fit_run`` require it).
        seed: seed of every random choice of the fit (same seed, same data: same model).
        **params: the method's parameters (see ``params``); unknown names are an error.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[Sequence[Param]] = ()
    fitted: ClassVar[Sequence[str]] = ()
    batch_independent: ClassVar[bool] = True

    def __init__(self, bits: int, seed: int = 0, **params: Any) -> None:
        self.bits = check_bits(bits, packed=False)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        known = {p.name: p for p in (*self.params, *INPUT_PARAMS)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InputError(f"{self.name} has no parameter {', '.join(unknown)}; its parameters: {', '.join(known)}")
        self.config = {p.name: p.parse(params.get(p.name, p.default), self.name) for p in self.params}
        self.transform = InputTransform.from_params(params, self.name)
        self.feature_dim: int | None = None
        self.aux_dim: int | None = None  # recorded when the transform reads the aux
        self.fit_info: dict[str, Any] = {}

    # -- inputs -----------------------------------------------------------------------------
    @property
    def uses_aux(self) -> bool:
        """Whether ``fit`` and ``encode`` need the aux (``inputs`` is ``aux`` or ``both``)."""
        return self.transform.uses_aux

    @property
    def input_dim(self) -> int:
        """The dimension of what the method hashes (after the input transform)."""
        return self.transform.dim(self.feature_dim, self.aux_dim)

    def inputs_of(self, features: Any, aux: Any, what: str = "features", fitting: bool = False) -> np.ndarray:
        """What the method hashes for items with ``features`` (n, d) and ``aux`` (n, c): the
        checked float32 features, transformed by ``inputs`` (see :class:`InputTransform`).
        Fitting records d and c; afterwards they must match."""
        X = as_features(features, what, dim=None if fitting else self.feature_dim)
        if not self.uses_aux:
            return X
        if aux is None:
            raise InputError(f"{self.name} with inputs={self.transform.inputs} needs the aux of every item; "
                             "pass aux (one row per item) or use inputs=visual")
        A = as_features(aux, what.replace("features", "aux"), dim=None if fitting else self.aux_dim)
        if len(A) != len(X):
            raise InputError(f"{len(X)} feature rows but {len(A)} aux rows: give one aux row per item")
        if fitting:
            self.feature_dim, self.aux_dim = int(X.shape[1]), int(A.shape[1])
        return self.transform(X, A)

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, features: Any, aux: Any = None) -> HashingBaseline:
        """Fit on ``features`` ((n, d), any float; copied to float32) and, when ``inputs`` uses
        it, their ``aux`` ((n, c)). Returns ``self``."""
        X = self.inputs_of(features, aux, "training features", fitting=True)
        if X.shape[0] < 2:
            raise InputError(f"{self.name} needs at least 2 training items, got {X.shape[0]}")
        self._check_fit(X)
        start = time.perf_counter()
        self._fit(X, np.random.default_rng(self.seed))
        self.feature_dim = int(np.shape(features)[1])
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
        """(n, bits) int8 codes, +1 / -1, of items with ``features`` (n, d) and ``aux`` (n, c)
        (each item's own; ``aux`` is not read with ``inputs=visual``)."""
        if self.feature_dim is None:
            raise InputError(f"{self.name} model is not fitted; call fit() or load a saved model")
        return signs(self.project(self.inputs_of(features, aux)))

    def saved_meta(self) -> dict[str, str]:
        """The metadata every model file carries, as strings (see the module docstring)."""
        return {"format": MODEL_FORMAT, "method": self.name, "bits": str(self.bits), "seed": str(self.seed),
                "feature_dim": str(self.feature_dim), "config": json.dumps(self.config),
                "inputs": json.dumps({**self.transform.record(), "aux_dim": self.aux_dim}),
                "fit_info": json.dumps(self.fit_info)}

    @classmethod
    def from_saved_meta(cls, meta: Any, path: Path) -> HashingBaseline:
        """An unfitted model with the saved settings; ``feature_dim`` and ``aux_dim`` restored.

        ``meta`` maps the keys of :meth:`saved_meta` to strings (or 0-d arrays); a file without
        ``inputs`` predates the input transform and hashed the features: ``inputs=visual``."""
        inputs = json.loads(str(meta["inputs"])) if "inputs" in meta else {"inputs": "visual"}
        aux_dim = inputs.pop("aux_dim", None)
        model = cls(int(meta["bits"]), int(meta["seed"]), **json.loads(str(meta["config"])), **inputs)
        model.feature_dim = int(meta["feature_dim"])
        model.aux_dim = None if aux_dim is None else int(aux_dim)
        if model.uses_aux and model.aux_dim is None:
            raise InputError(f"{path} hashes inputs={model.transform.inputs} but does not record the aux dimension")
        model.fit_info = json.loads(str(meta["fit_info"]))
        return model

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted parameters to ``path`` (.npz, atomically)."""
        if self.feature_dim is None:
            raise InputError(f"{self.name} model is not fitted; nothing to save")
        arrays = {key: np.asarray(getattr(self, key)) for key in self.fitted}
        meta = {key: np.array(int(value) if key in ("bits", "seed", "feature_dim") else value)
                for key, value in self.saved_meta().items()}
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **meta, **arrays)
        return path

    @classmethod
    def _from_npz(cls, z: Any, path: Path) -> HashingBaseline:
        model = cls.from_saved_meta({key: z[key] for key in SAVED_KEYS if key in z.files}, path)
        missing = [key for key in cls.fitted if key not in z.files]
        if missing:
            raise InputError(f"{path} lacks the fitted array(s) {', '.join(missing)} of {cls.name}")
        for key in cls.fitted:
            setattr(model, key, z[key])
        return model

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in {**self.config, **self.transform.record()}.items()
                         if k != "inputs" or v != "visual")
        return f"{type(self).__name__}(bits={self.bits}, seed={self.seed}{params})"


def linear_embedding(X: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """``(X - mean) @ projection`` without a centred copy of X: ``X @ P - mean @ P`` (float32)."""
    out = X @ projection
    out -= (mean.astype(np.float64) @ projection.astype(np.float64)).astype(np.float32)
    return out
