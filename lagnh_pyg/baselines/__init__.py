"""Shallow hashing baselines on deep features, behind one interface.

Six methods of the paper's comparison (METHOD.md, last table)::

    lsh    sign random projections of centred features          (Charikar 2002)
    sklsh  shift-invariant kernel LSH                            (Raginsky & Lazebnik 2009)
    sh     spectral hashing                                      (Weiss, Torralba & Fergus 2008)
    pcah   sign of centred PCA projections
    itq    PCA + iterative quantisation                          (Gong et al. 2013)
    sgh    scalable graph hashing with feature transformation    (Jiang & Li 2015)

Each is a :class:`~lagnh_pyg.baselines.base.HashingBaseline`: ``fit(train_features)``,
``encode(features) -> (n, bits)`` codes in {-1, +1}, ``save(path)`` / :func:`load_model`.
:func:`fit_run` fits one on a dataset's training split and writes a run directory that
``lagnh encode``, ``evaluate``, ``index`` and ``search`` read exactly like a LAGNH run::

    from lagnh_pyg.baselines import fit_run
    run_dir = fit_run("itq", "data/coco", bits=64, out_dir="runs/itq64", seed=0)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..run import register_method
from .base import MODEL_FORMAT, HashingBaseline, Param
from .itq import ITQ
from .lsh import LSH
from .pcah import PCAH
from .sgh import SGH
from .sh import SH
from .sklsh import SKLSH

logger = logging.getLogger(__name__)

BASELINES: dict[str, type[HashingBaseline]] = {cls.name: cls for cls in (LSH, SKLSH, SH, PCAH, ITQ, SGH)}
MODEL_FILE = "model.npz"

for _name in BASELINES:
    register_method(_name, "lagnh_pyg.baselines:load_run_encoder")


def baseline_class(name: str) -> type[HashingBaseline]:
    """The class of baseline ``name`` (case-insensitive)."""
    cls = BASELINES.get(str(name).lower())
    if cls is None:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return cls


def make_baseline(name: str, bits: int, seed: int = 0, **params: Any) -> HashingBaseline:
    """An unfitted baseline ``name`` with code length ``bits`` and the given parameters."""
    return baseline_class(name)(bits, seed, **params)


def load_model(path: str | os.PathLike) -> HashingBaseline:
    """Read a fitted baseline saved by :meth:`HashingBaseline.save` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"baseline model file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != MODEL_FORMAT:
                raise InputError(f"{path} is not a {MODEL_FORMAT} model file")
            return baseline_class(str(z["method"]))._from_npz(z, path)
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as e:  # a truncated or foreign .npz, bad JSON
        raise InputError(f"cannot read baseline model {path}: {e}") from None


def load_run_encoder(run, device: str = "cpu") -> HashingBaseline:
    """The encoder of a baseline run (the factory registered in :mod:`lagnh_pyg.run`).

    Baselines run on the CPU with NumPy/BLAS; ``device`` is accepted and ignored.
    """
    model = load_model(run.model_path)
    if model.name != run.method:
        raise InputError(f"{run.model_path} holds a {model.name} model but {run.root}/run.json says {run.method}")
    return model


def fit_run(
    name: str,
    data_dir: str | os.PathLike,
    bits: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    **params: Any,
) -> Path:
    """Fit baseline ``name`` on the training split of ``data_dir``; write run directory ``out_dir``.

    The run directory (``model.npz`` + ``run.json``, see :mod:`lagnh_pyg.run`) is built in a
    temporary sibling and renamed into place, so it exists only once complete. ``out_dir``
    must not exist.

    Args:
        name: lsh, sklsh, sh, pcah, itq or sgh.
        data_dir: a dataset directory (only its ``train`` split is read).
        bits: code length, a positive multiple of 8.
        out_dir: the run directory to create.
        seed: seed of the method's random choices.
        **params: the method's parameters (``BASELINES[name].params``).

    Returns:
        ``Path(out_dir)``.
    """
    from ..data.store import Dataset
    from ..run import write_run_meta
    from ..utils import atomic_dir

    out_dir = Path(out_dir)
    model = make_baseline(name, bits, seed, **params)  # validates name, bits and parameters first
    if out_dir.exists():
        raise InputError(f"output directory {out_dir} already exists; choose another --out or remove it")
    ds = Dataset.open(data_dir)
    train = ds.split("train")
    logger.debug("fitting %s (%d bits) on %d training items of %s", model.name, model.bits, len(train), ds.root)
    model.fit(ds.feature_rows(train))
    with atomic_dir(out_dir) as tmp:
        model.save(tmp / MODEL_FILE)
        write_run_meta(
            tmp,
            method=model.name,
            bits=model.bits,
            data=ds,
            model_file=MODEL_FILE,
            config={"seed": model.seed, **model.config},
            extra={"fit": model.fit_info},
        )
    return out_dir


__all__ = [
    "BASELINES",
    "ITQ",
    "LSH",
    "PCAH",
    "SGH",
    "SH",
    "SKLSH",
    "HashingBaseline",
    "Param",
    "baseline_class",
    "fit_run",
    "load_model",
    "load_run_encoder",
    "make_baseline",
]
