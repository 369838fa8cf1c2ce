"""LAGNH as a scikit-learn estimator: ``LAGNH(bits=32).fit(X, aux=A).encode(X, A)``.

The estimator is the command line's training and encoding, called from Python: ``fit`` runs
:func:`~lagnh_pyg.training.train_run` (a dataset directory in, a run directory out; arrays in
memory are first written as a dataset) and the codes come from the run's encoder
(:mod:`lagnh_pyg.encode`, the ``neighbours`` encoding by default: one item, one code). The run
directory is the fitted state: ``save`` copies it, ``load`` opens one ``lagnh train`` wrote.

Hyper-parameters come from the config system (:mod:`lagnh_pyg.config`): ``config`` names a
shipped config (``demo``, the default, ``coco``, ``nuswide``), a YAML file, or a mapping, and
each keyword override sets one config key, its section and field joined by a double underscore
(scikit-learn's nesting)::

    LAGNH(bits=64, config="demo", train__epochs=80, graph__k=20, variant="no-att")
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .base import HashingEstimator, copy_run, write_array_dataset
from .baselines import ARRAYS_SOURCE

_OWN = ("bits", "config", "device")


def config_params() -> list[str]:
    """The keyword form of every LAGNH config key: ``train.epochs`` -> ``train__epochs``."""
    from ..config import valid_keys

    return [key.replace(".", "__") for key in valid_keys()]


class LAGNH(HashingEstimator):
    """LAGNH, Lightweight Augmented Graph Network Hashing (Cui et al., ACM MM 2021), on PyTorch Geometric.

    Items are the nodes of a kNN graph over their features and their aux (the side input:
    detector scores or tags, in [0, 1]); an attention over aux vectors, GCN layers, an
    adversarial regulariser and a similarity reconstruction learn the codes without labels
    (the method page gives the equations). Without aux, only ``variant="no-aux"`` (the
    paper's ablation, which ranks below ITQ) can be fitted.

    Example::

        model = LAGNH(bits=32, train__epochs=20).fit(X, aux=A)   # or .fit("data/mine")
        codes = model.encode(X_new, aux=A_new)                    # packed uint8, (n, 4)
        model.save("runs/mine32")                                 # lagnh encode / search / serve it

    Args:
        bits: the code length, a multiple of 8.
        config: the config the overrides apply to: a shipped config's name (``demo``,
            ``coco``, ``nuswide``), a YAML file, or a mapping of sections.
        device: where it trains and encodes: ``auto`` (a GPU when visible), ``cpu``, ``cuda[:N]``.
        **overrides: config keys written ``section__field`` (``train__epochs=40``,
            ``graph__k=10``) or ``variant``; names and values are checked by ``fit``.

    Fitted attributes: ``run_dir_`` (the run directory: a temporary one after ``fit``, the
    loaded one after ``load``), ``encoder_`` (:class:`~lagnh_pyg.encode.LagnhEncoder`),
    ``n_features_in_``, ``aux_dim_``, ``config_`` (the resolved :class:`~lagnh_pyg.config.Config`).
    Pickling a fitted model carries its run directory's files.
    """

    method = "lagnh"

    def __init__(self, bits: int = 32, config: Any = "demo", *, device: str = "auto", **overrides: Any) -> None:
        self.bits = bits
        self.config = config
        self.device = device
        self._overrides = dict(overrides)  # names and values are checked by fit (scikit-learn's convention)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """``bits``, ``config``, ``device`` and the config overrides given."""
        return {**{name: getattr(self, name) for name in _OWN}, **self._overrides}

    def set_params(self, **params: Any) -> LAGNH:
        """Set ``bits``, ``config``, ``device`` or config overrides (``train__epochs=...``; an
        unknown key is refused by the next ``fit``)."""
        for name, value in params.items():
            if name in _OWN:
                setattr(self, name, value)
            else:
                self._overrides[name] = value
        return self

    def resolved_config(self):
        """The :class:`~lagnh_pyg.config.Config` ``fit`` trains with (the config, the overrides,
        the variant applied), validated: a bad value raises here."""
        from ..config import Config, load_config

        keys = set(config_params())
        unknown = sorted(set(self._overrides) - keys)
        if unknown:
            raise InputError(f"LAGNH has no parameter {', '.join(unknown)}: besides bits, config and device it takes "
                             "config keys written section__field, e.g. train__epochs=40 (lagnh_pyg.config lists them)")
        source = self.config if isinstance(self.config, (Mapping, Config)) or self.config is None else str(self.config)
        return load_config(source, [(k.replace("__", "."), v) for k, v in self._overrides.items()])

    # -- fitting ------------------------------------------------------------------------------
    def _prepare(self):
        from ..codes import check_bits

        check_bits(self.bits)
        return self.resolved_config()

    def _fit_arrays(self, X: np.ndarray, aux: np.ndarray | None) -> None:
        from ..rundir import attach_dataset

        cfg = self._prepare()
        if aux is None and cfg.variant != "no-aux":
            raise InputError("LAGNH learns from each item's aux (detector scores, tags): pass aux= (n, c) in [0, 1], "
                             "or variant='no-aux' (the paper's ablation without it)")
        if len(X) <= cfg.graph.k:
            raise InputError(f"LAGNH links every item to its graph.k={cfg.graph.k} nearest: it needs more than "
                             f"{cfg.graph.k} samples, got {len(X)} sample{'s' if len(X) != 1 else ''} "
                             "(or lower graph__k)")
        work = tempfile.TemporaryDirectory(prefix="lagnh-")
        data = write_array_dataset(Path(work.name) / "data", X, aux if aux is not None else np.zeros((len(X), 1),
                                   np.float32), ARRAYS_SOURCE)
        run = self._train(data, cfg, work)
        attach_dataset(run, data)  # the run keeps its training items: save() copies one directory
        self._fitted(run, work)

    def _fit_dataset(self, data_dir: Path) -> None:
        cfg = self._prepare()
        work = tempfile.TemporaryDirectory(prefix="lagnh-")
        self._fitted(self._train(data_dir, cfg, work), work)

    def _train(self, data: Path, cfg, work: tempfile.TemporaryDirectory) -> Path:
        from ..device import resolve_device
        from ..training import train_run

        return train_run(data, cfg, int(self.bits), Path(work.name) / "run", device=resolve_device(self.device),
                         progress=False)

    def _fitted(self, run_dir: Path, work: tempfile.TemporaryDirectory | None) -> None:
        from ..checkpoint import stored_config
        from ..device import resolve_device
        from ..encoders import load_encoder
        from ..rundir import Run

        run = Run.open(run_dir)
        self.encoder_ = load_encoder(run, resolve_device(self.device))
        self.config_ = stored_config(run.meta["config"], run.meta_path)
        self.run_dir_ = run.root
        self.n_features_in_ = int(run.meta["feature_dim"])
        self.aux_dim_ = int(run.meta["aux_dim"])
        self._work = work  # removed with the estimator (a loaded run directory is the user's)

    # -- codes --------------------------------------------------------------------------------
    def _codes(self, X: np.ndarray, aux: np.ndarray | None) -> np.ndarray:
        from ..baselines.base import signs

        if aux is None:
            if self.config_.variant != "no-aux":
                raise InputError("this LAGNH model encodes each item with its aux: pass aux= (one row per item)")
            aux = np.zeros((len(X), self.aux_dim_), np.float32)  # the no-aux model reads no aux
        return signs(self.encoder_.encode(X, aux))

    # -- run directories ----------------------------------------------------------------------
    def _fitted_bits(self) -> int:
        return self.encoder_.bits

    def _save_into(self, directory: Path) -> None:
        copy_run(self.run_dir_, directory)

    @classmethod
    def _load_run(cls, run) -> LAGNH:
        est = cls(bits=run.bits, config=run.meta["config"])
        est._fitted(run.root, None)
        return est

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("encoder_", "_work", "run_dir_")}
        if "run_dir_" in self.__dict__:
            from ..rundir import LOCK_FILE

            root = self.run_dir_
            state["_run_files"] = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                                   if p.is_file() and p.name != LOCK_FILE}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        files = state.pop("_run_files", None)
        self.__dict__.update(state)
        if files is not None:  # a fitted model: its run directory again, in a new temporary one
            work = tempfile.TemporaryDirectory(prefix="lagnh-")
            root = Path(work.name) / "run"
            for rel, data in files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(data)
            self._fitted(root, work)
