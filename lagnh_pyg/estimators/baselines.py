"""The baselines as scikit-learn estimators: ``ITQ(bits=32).fit(X).encode(X)``.

One class per method of :mod:`lagnh_pyg.baselines`, made from its declaration: the constructor's
keywords are ``bits``, the method's parameters (``Param``), ``inputs`` and ``aux_weight`` (what it
hashes: the features, the aux or both, :class:`~lagnh_pyg.baselines.base.InputTransform`),
``seed`` and, for the deep methods, ``device``; each default is the one ``lagnh baseline`` uses
(the parameter's declaration, over which the method's shipped config, configs/baselines/NAME.yaml,
wins). So the estimator and the command line fit the same model from the same settings, and
either loads what the other saved.

``bits`` may be any positive integer while the codes stay in memory (``transform``); a run
directory (``save``) stores packed codes and needs a multiple of 8.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from .. import baselines as B
from ..errors import InputError
from .base import HashingEstimator, copy_run, write_array_dataset

#: the source a run's dataset records when an estimator fitted on in-memory arrays saves them
ARRAYS_SOURCE = "lagnh_pyg estimator fitted on in-memory arrays"


class BaselineEstimator(HashingEstimator):
    """A baseline of :mod:`lagnh_pyg.baselines` behind scikit-learn's conventions (see
    :mod:`lagnh_pyg.estimators.base`); the classes ``ITQ``, ``LSH``, ... are made from it.

    Fitted attributes: ``model_`` (the fitted :class:`~lagnh_pyg.baselines.base.HashingBaseline`),
    ``n_features_in_``, ``aux_dim_`` (None unless ``inputs`` reads the aux).
    """

    baseline: type[B.HashingBaseline] = B.HashingBaseline

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # only stores (scikit-learn's convention); the signature is the method's (see _estimator)
        bound = inspect.signature(type(self).__init__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    def _model(self) -> B.HashingBaseline:
        """An unfitted baseline of the current parameters (checked here)."""
        params = self.get_params()
        bits, seed = params.pop("bits"), params.pop("seed")
        params.pop("device", None)
        model = self.baseline(bits, seed, **params)
        if isinstance(model, B.DeepBaseline):
            from ..device import resolve_device

            model.device = resolve_device(self.device)
        return model

    def _fit_arrays(self, X: np.ndarray, aux: np.ndarray | None) -> None:
        model = self._model()
        if len(X) < 2:
            raise InputError(f"{type(self).__name__} needs at least 2 samples to fit, got {len(X)} sample")
        if model.uses_aux and aux is None:
            raise InputError(f"{type(self).__name__} with inputs={self.inputs!r} hashes each item's aux: "
                             "pass aux= (one row per item) or use inputs='visual'")
        model.fit(X, aux=aux if model.uses_aux else None)
        self._fitted(model, data=None, arrays=(X, aux))

    def _fit_dataset(self, data_dir: Path) -> None:
        from ..data.store import Dataset

        model = self._model()
        ds = Dataset.open(data_dir)
        B.fit_on_dataset(model, ds, getattr(model, "device", "cpu"))
        self._fitted(model, data=ds.root.resolve(), arrays=None)

    def _fitted(self, model: B.HashingBaseline, data: Path | None, arrays, run_root: Path | None = None) -> None:
        self.model_ = model
        self.n_features_in_ = int(model.feature_dim)
        self.aux_dim_ = model.aux_dim if model.uses_aux else None
        # what save() writes as the run's dataset: the dataset fitted on, or the arrays (kept by
        # reference, not copied), or, for a loaded run, the run directory itself
        self._data, self._arrays, self._run_root = data, arrays, run_root

    def _fitted_bits(self) -> int:
        return self.model_.bits

    def _codes(self, X: np.ndarray, aux: np.ndarray | None) -> np.ndarray:
        model = self.model_
        if model.uses_aux and aux is None:
            raise InputError(f"{type(self).__name__} was fitted with inputs={model.transform.inputs!r}: pass the "
                             "aux of the items to encode (aux=)")
        return model.encode(X, aux if model.uses_aux else None)

    def _save_into(self, directory: Path) -> None:
        from ..data.store import Dataset
        from ..rundir import DATA_DIR

        if self._run_root is not None:  # loaded from a run directory: the same directory again
            copy_run(self._run_root, directory)
            return
        if self._arrays is not None:
            X, aux = self._arrays
            data = write_array_dataset(directory / DATA_DIR, X, _aux_or_empty(aux, len(X)), ARRAYS_SOURCE)
            B.write_run(directory, self.model_, Dataset.open(data), data_dir=DATA_DIR)
        else:
            B.write_run(directory, self.model_, Dataset.open(self._data))

    @classmethod
    def _load_run(cls, run) -> BaselineEstimator:
        model = B.load_run_encoder(run)
        params = {**model.config, **model.transform.record()}
        est = cls(bits=model.bits, seed=model.seed, **{k: v for k, v in params.items() if k in cls._param_names()})
        est._fitted(model, data=None, arrays=None, run_root=run.root)
        return est


def _aux_or_empty(aux: np.ndarray | None, n: int) -> np.ndarray:
    """The aux a saved dataset holds: the one fitted with, or one all-zero column (a dataset
    always has aux; an all-zero row means "no aux" to every method)."""
    return aux if aux is not None else np.zeros((n, 1), np.float32)


#: the Python type of each kind of baseline parameter (:class:`~lagnh_pyg.baselines.base.Param`)
_KIND_TYPES = {"int": int, "float": float, "float|auto": float | str, "choice": str}


def _estimator(baseline: type[B.HashingBaseline]) -> type[BaselineEstimator]:
    """The estimator class of ``baseline``: its constructor's signature from the method's
    parameters, each default the one ``lagnh baseline`` uses (declaration < shipped config)."""
    shipped, _ = B.load_params(baseline.name)
    declared = [*baseline.params, *B.INPUT_PARAMS]
    defaults = {p.name: p.parse(shipped.get(p.name, p.default), baseline.name) for p in declared}
    kinds = {p.name: _KIND_TYPES[p.kind] for p in declared}
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("bits", P.POSITIONAL_OR_KEYWORD, default=32, annotation=int)]
    params += [P(name, P.KEYWORD_ONLY, default=value, annotation=kinds[name]) for name, value in defaults.items()]
    params += [P("seed", P.KEYWORD_ONLY, default=0, annotation=int)]
    deep = issubclass(baseline, B.DeepBaseline)
    if deep:
        params += [P("device", P.KEYWORD_ONLY, default="auto", annotation=str)]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        BaselineEstimator.__init__(self, *args, **kwargs)

    __init__.__signature__ = inspect.Signature(params)
    __init__.__doc__ = BaselineEstimator.__init__.__doc__
    name = baseline.__name__
    doc = _docstring(baseline, defaults, deep)
    cls = type(name, (BaselineEstimator,), {"__init__": __init__, "__doc__": doc, "baseline": baseline,
                                            "method": baseline.name, "__module__": __name__})
    __init__.__qualname__ = f"{name}.__init__"
    return cls


def _docstring(baseline: type[B.HashingBaseline], defaults: dict[str, Any], deep: bool) -> str:
    helps = {p.name: p.help for p in (*baseline.params, *B.INPUT_PARAMS)}
    lines = [f"{baseline.summary[:1].upper()}{baseline.summary[1:]} (``lagnh baseline {baseline.name}``).", "",
             "Example::", "",
             f"    codes = {baseline.__name__}(bits=32).fit(X_train).encode(X)   # packed uint8, (n, 4)", "",
             "Args:", "    bits: the code length (a multiple of 8 to save the model as a run directory)."]
    lines += [f"    {name}: {helps[name]} (default {value!r})." for name, value in defaults.items()]
    lines += ["    seed: the seed of every random choice of the fit."]
    if deep:
        lines += ["    device: where the network trains: auto (a GPU when visible), cpu or cuda[:N]."]
    lines += ["", "See :class:`~lagnh_pyg.estimators.baselines.BaselineEstimator` for the fitted attributes."]
    return "\n".join(lines)


LSH, SKLSH, SH, PCAH, ITQ, SGH = (_estimator(b) for b in B.SHALLOW)
UHBDNN, DeepBit, SSDH, SADH, TBH, CIBHash, BiHalf = (_estimator(b) for b in B.DEEP)
SHALLOW = (LSH, SKLSH, SH, PCAH, ITQ, SGH)
DEEP = (UHBDNN, DeepBit, SSDH, SADH, TBH, CIBHash, BiHalf)

__all__ = ["BaselineEstimator", "LSH", "SKLSH", "SH", "PCAH", "ITQ", "SGH", "UHBDNN", "DeepBit", "SSDH", "SADH", "TBH",
           "CIBHash", "BiHalf", "SHALLOW", "DEEP"]
