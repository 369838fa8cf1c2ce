"""What every public estimator shares: scikit-learn's conventions over a run directory.

An estimator's constructor only stores its hyper-parameters (validated by ``fit``, as
scikit-learn's are); ``get_params`` / ``set_params`` read and write them, so ``clone``,
``Pipeline`` and ``GridSearchCV`` work. ``fit`` returns the estimator; the fitted state's names
end in ``_`` (``n_features_in_``, ``aux_dim_``). Codes come two ways: ``transform`` gives ±1
(``int8``, (n, bits)) and ``encode`` the packed form every file of the project uses
(``numpy.packbits(codes > 0, axis=1)``: uint8, (n, bits / 8)).

The data are numpy arrays in memory (``X`` (n, d) features, ``aux`` (n, c) side input, one row
per item), or a dataset directory (``lagnh data ...``): ``fit`` reads its training split,
``transform``/``encode`` every item in row order.

``save(path)`` writes a run directory, the format ``lagnh train`` and ``lagnh baseline``
write (:mod:`lagnh_pyg.rundir`), so ``lagnh encode``, ``search`` and ``serve`` use it, and
``cls.load(path)`` reads one the command line wrote. A model fitted on arrays keeps them in the
run directory as its dataset (``data/``: every item is a training, query and database item), so
that the command line can encode and search it too.

Input checks raise :class:`~lagnh_pyg.errors.InputError` (a ``ValueError``) with scikit-learn's
wording where its checks expect it ("Found array with 0 sample(s)", "X has 3 features, but ITQ
is expecting 4 features as input", "Reshape your data").
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..baselines.base import as_features
from ..errors import InputError


class NotFittedError(InputError, AttributeError):
    """An estimator used before ``fit`` (scikit-learn's ``NotFittedError`` is also both a
    ``ValueError`` and an ``AttributeError``)."""


def is_dataset_path(X: Any) -> bool:
    """Whether ``X`` names a dataset directory (a ``str`` or path) rather than holding data."""
    return isinstance(X, (str, os.PathLike))


def check_array(X: Any, what: str, owner: str, n_features: int | None = None) -> np.ndarray:
    """``X`` as a C-contiguous finite float32 (n, d) array (:func:`~lagnh_pyg.baselines.base.as_features`),
    refused with scikit-learn's wording where its checks expect it.

    Args:
        X: array-like (an object array of numbers is read as numbers).
        what: its name in messages (``X``, ``aux``).
        owner: the estimator's class name. n_features: the width it must have (after fit).
    """
    import scipy.sparse as sp

    if sp.issparse(X):
        raise InputError(f"{owner} does not take sparse input: pass a dense array ({what}.toarray())")
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise InputError(f"Complex data not supported: {what} has dtype {X.dtype}")
    if X.dtype.kind == "O":
        X = X.astype(np.float64)  # numbers held as objects; anything else raises TypeError here
    if X.dtype.kind not in "biuf":
        raise InputError(f"{what} must be numeric, got dtype {X.dtype}")
    if X.ndim == 1:
        raise InputError(f"Expected 2D array, got 1D array instead: {what} has shape {X.shape}. Reshape your data "
                         "either using array.reshape(-1, 1) if your data has a single feature or array.reshape(1, -1) "
                         "if it contains a single sample.")
    if X.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (items x dimensions), got shape {X.shape}")
    if X.shape[0] < 1:
        raise InputError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[1] < 1:
        raise InputError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if n_features is not None and X.shape[1] != n_features:
        raise InputError(f"{what} has {X.shape[1]} features, but {owner} is expecting {n_features} features as input.")
    return as_features(X, what)  # float32, C-contiguous, finite


def check_aux(aux: Any, n: int, owner: str, n_aux: int | None = None) -> np.ndarray | None:
    """``aux`` (or None) checked as :func:`check_array` and as a dataset's aux is: one row per
    item, scores in [0, 1] (detector confidences, tag indicators; an all-zero row: no aux)."""
    if aux is None:
        return None
    A = check_array(aux, "aux", owner, n_aux)
    if len(A) != n:
        raise InputError(f"X has {n} rows but aux has {len(A)}: give one aux row per item")
    if A.min() < 0 or A.max() > 1:
        raise InputError(f"aux values must lie in [0, 1] (detector scores, tag indicators); found range "
                         f"[{A.min():g}, {A.max():g}]")
    return A


class HashingEstimator:
    """The base of the public estimators (:class:`~lagnh_pyg.estimators.LAGNH` and the baselines).

    A subclass names its run directories' method (``method``) and implements ``_fit_arrays``,
    ``_fit_dataset``, ``_codes`` (±1 codes of checked arrays), ``_save_into`` and ``_load_run``.
    """

    method: ClassVar[str] = ""

    # -- hyper-parameters (scikit-learn's conventions) ----------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters, by name (``deep`` is accepted for scikit-learn: there are no
        nested estimators)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> HashingEstimator:
        """Set hyper-parameters by name (checked by the next ``fit``); returns the estimator."""
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise InputError(f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                                 f"Valid parameters are: {sorted(valid)!r}.")
            setattr(self, name, value)
        return self

    def _defaults(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {p.name: p.default for p in sig.parameters.values() if p.default is not p.empty}

    def __repr__(self) -> str:
        defaults = self._defaults()
        shown = [f"{k}={v!r}" for k, v in self.get_params().items()
                 if k not in defaults or not _same(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self):
        """Tags for scikit-learn (imported only when scikit-learn asks): an unsupervised
        transformer of dense, finite input whose output, codes, keeps no input dtype."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=[]), input_tags=InputTags())

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_in_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: call fit() first, "
                                 f"or {type(self).__name__}.load(RUN_DIR)")

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, aux: Any = None) -> HashingEstimator:
        """Learn codes from ``X``: (n, d) features with their ``aux`` ((n, c), one row per item,
        when the method uses it), or a dataset directory (its training split). ``y`` is ignored
        (no labels: the methods are unsupervised; scikit-learn's convention). Returns ``self``."""
        if is_dataset_path(X):
            if aux is not None:
                raise InputError("a dataset directory holds its own aux: do not pass aux= with it")
            self._fit_dataset(Path(X))
            return self
        X = check_array(X, "X", type(self).__name__)
        self._fit_arrays(X, check_aux(aux, len(X), type(self).__name__))
        return self

    def fit_transform(self, X: Any, y: Any = None, *, aux: Any = None) -> np.ndarray:
        """``fit(X, aux=aux)`` then ``transform(X, aux=aux)``."""
        return self.fit(X, aux=aux).transform(X, aux=aux)

    # -- codes --------------------------------------------------------------------------------
    def transform(self, X: Any, *, aux: Any = None) -> np.ndarray:
        """The ±1 codes (int8, (n, bits)) of items ``X`` (n, d) with their ``aux`` (n, c), or of
        every item of a dataset directory (in row order). Each item is encoded on its own: its
        code never depends on the other items."""
        self._check_fitted()
        if is_dataset_path(X):
            if aux is not None:
                raise InputError("a dataset directory holds its own aux: do not pass aux= with it")
            return self._dataset_codes(Path(X))
        name = type(self).__name__
        X = check_array(X, "X", name, self.n_features_in_)
        return self._codes(X, check_aux(aux, len(X), name, self.aux_dim_))

    def encode(self, X: Any, aux: Any = None) -> np.ndarray:
        """The packed codes (uint8, (n, bits / 8): ``numpy.packbits(codes > 0, axis=1)``, the
        first bit the most significant) of ``X`` and ``aux`` as in :meth:`transform`."""
        return np.packbits(self.transform(X, aux=aux) > 0, axis=1)

    def _dataset_codes(self, data_dir: Path, chunk: int = 8192) -> np.ndarray:
        from ..data.store import Dataset

        ds = Dataset.open(data_dir)
        if ds.feature_dim != self.n_features_in_:
            raise InputError(f"dataset {ds.root} has {ds.feature_dim}-d features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        parts = [self._codes(check_array(feats, "features", type(self).__name__),
                             check_array(aux, "aux", type(self).__name__))
                 for _, feats, aux in ds.iter_rows(np.arange(ds.n), chunk)]
        return np.concatenate(parts)

    # -- run directories ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model as run directory ``path`` (which must not exist), the format of
        ``lagnh train`` / ``lagnh baseline``: ``lagnh encode PATH``, ``search`` and ``serve``
        use it, and ``load`` reads it back. Atomic: ``path`` appears complete or not at all."""
        from ..codes import check_bits
        from ..files import atomic_dir
        from ..ownership import check_writable_target

        self._check_fitted()
        check_bits(self._fitted_bits())  # a run directory stores packed codes
        path = check_writable_target(path, "path", directory=True)
        if path.exists():
            raise InputError(f"{path} already exists; save into a new directory")
        with atomic_dir(path) as tmp:
            self._save_into(Path(tmp))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> HashingEstimator:
        """The fitted estimator of run directory ``path`` (written by ``save`` or by the command
        line), with the hyper-parameters it was fitted with."""
        from ..rundir import Run

        run = Run.open(path)
        if run.method != cls.method:
            raise InputError(f"{run.root} holds a run of {run.method}, not of {cls.method}; "
                             f"load it with the {run.method} estimator")
        return cls._load_run(run)

    # -- what a subclass implements -------------------------------------------------------------
    def _fitted_bits(self) -> int:
        raise NotImplementedError

    def _fit_arrays(self, X: np.ndarray, aux: np.ndarray | None) -> None:
        raise NotImplementedError

    def _fit_dataset(self, data_dir: Path) -> None:
        raise NotImplementedError

    def _codes(self, X: np.ndarray, aux: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _save_into(self, directory: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _load_run(cls, run) -> HashingEstimator:
        raise NotImplementedError


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b


def write_array_dataset(out: Path, X: np.ndarray, aux: np.ndarray, source: str, chunk: int = 65536) -> Path:
    """Training arrays as a dataset directory, the form a run fitted on arrays keeps them in:
    every item is in the train, query and database splits (the command line then encodes and
    searches them all); ids are row numbers."""
    from ..data.store import DatasetWriter

    rows = np.arange(len(X))
    with DatasetWriter(out, len(X), X.shape[1], aux.shape[1], provenance={"source": source}) as w:
        for s in range(0, len(X), chunk):
            w.write_rows(s, X[s : s + chunk], aux[s : s + chunk], None)
        w.set_splits(train=rows, query=rows, database=rows)
    return out


def copy_run(run_root: Path, directory: Path) -> None:
    """Copy a run directory's files into ``directory`` (its lock file aside)."""
    import shutil

    from ..rundir import LOCK_FILE

    for item in run_root.iterdir():
        if item.name == LOCK_FILE:
            continue
        if item.is_dir():
            shutil.copytree(item, directory / item.name)
        else:
            shutil.copy2(item, directory / item.name)
