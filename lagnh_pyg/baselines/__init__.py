"""Hashing baselines on deep features, behind one interface.

Six shallow methods of the paper's comparison (its Table 3)::

    lsh    sign random projections of centred features          (Charikar 2002)
    sklsh  shift-invariant kernel LSH                            (Raginsky & Lazebnik 2009)
    sh     spectral hashing                                      (Weiss, Torralba & Fergus 2008)
    pcah   sign of centred PCA projections
    itq    PCA + iterative quantisation                          (Gong et al. 2013)
    sgh    scalable graph hashing with feature transformation    (Jiang & Li 2015)

the paper's five deep ones and two modern ones, each a small torch network trained on the
features (see :mod:`lagnh_pyg.baselines.deep`)::

    uhbdnn   binary deep neural network                         (Do et al. 2016)
    deepbit  quantisation + even bits + rotation invariance      (Lin et al. 2016)
    ssdh     semantic structure from cosine distances            (Yang et al. 2018)
    sadh     similarity-adaptive discrete optimisation           (Shen et al. 2018)
    tbh      auto-encoding twin-bottleneck hashing               (Shen et al. 2020)
    cibhash  contrastive information bottleneck, two views       (Qiu et al. 2021)
    bihalf   bi-half layer, maximal bit entropy                  (Li & van Gemert 2021)

Hyper-parameters: each class's ``params`` (defaults from the paper or its official code),
mirrored in ``configs/baselines/<name>.yaml``, which :func:`fit_run` reads when present;
``--set key=value`` overrides both.

Each is a :class:`~lagnh_pyg.baselines.base.HashingBaseline`: ``fit(train_features, aux=...)``,
``encode(features, aux) -> (n, bits)`` codes in {-1, +1}, ``save(path)`` / :func:`load_model`.
Every one takes ``inputs=visual|aux|both`` and ``aux_weight`` (what it hashes:
:class:`~lagnh_pyg.baselines.base.InputTransform`; default ``visual``, the paper's Table 3).
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

from ..encoders import register_method
from ..errors import InputError
from .base import INPUT_CHOICES, INPUT_PARAMS, MODEL_FORMAT, HashingBaseline, InputTransform, Param
from .bihalf import BiHalf
from .cibhash import CIBHash
from .deep import DeepBaseline, load_safetensors_model
from .deepbit import DeepBit
from .itq import ITQ
from .lsh import LSH
from .pcah import PCAH
from .sadh import SADH
from .sgh import SGH
from .sh import SH
from .sklsh import SKLSH
from .ssdh import SSDH
from .tbh import TBH
from .uhbdnn import UHBDNN

logger = logging.getLogger(__name__)

SHALLOW = (LSH, SKLSH, SH, PCAH, ITQ, SGH)
DEEP = (UHBDNN, DeepBit, SSDH, SADH, TBH, CIBHash, BiHalf)
BASELINES: dict[str, type[HashingBaseline]] = {cls.name: cls for cls in (*SHALLOW, *DEEP)}

for _name in BASELINES:
    register_method(_name, "lagnh_pyg.baselines:load_run_encoder")


def baseline_class(name: str) -> type[HashingBaseline]:
    """The class of baseline ``name`` (case-insensitive)."""
    cls = BASELINES.get(str(name).lower())
    if cls is None:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return cls


def make_baseline(name: str, bits: int, seed: int = 0, **params: Any) -> HashingBaseline:
    """An unfitted baseline ``name`` with code length ``bits`` (a multiple of 8: its codes are
    stored packed) and the given parameters."""
    from ..codes import check_bits

    return baseline_class(name)(check_bits(bits), seed, **params)


def load_model(path: str | os.PathLike) -> HashingBaseline:
    """Read a fitted baseline saved by :meth:`HashingBaseline.save` (never unpickles):
    ``.npz`` for the shallow methods, ``.safetensors`` for the deep ones."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"baseline model file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_safetensors_model(path, BASELINES)
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
    """The encoder of a baseline run (the factory registered in :mod:`lagnh_pyg.encoders`).

    Shallow baselines run on the CPU with NumPy/BLAS (``device`` is ignored); deep ones
    encode on ``device``.
    """
    model = load_model(run.model_path)
    if model.name != run.method:
        raise InputError(f"{run.model_path} holds a {model.name} model but {run.meta_path} says {run.method}")
    if isinstance(model, DeepBaseline):
        model.to(device)
    return model


def config_file(name: str) -> Path:
    """``configs/baselines/<name>.yaml``: the method's hyper-parameters (may be absent)."""
    from ..config import CONFIG_DIR

    return CONFIG_DIR / "baselines" / f"{baseline_class(name).name}.yaml"


def load_params(name: str, config: str | os.PathLike | None = None) -> tuple[dict[str, Any], str | None]:
    """The parameters a config file gives method ``name`` (``config``: a YAML file or the name of
    a shipped baseline config; default: the method's own file, when there is one).

    Returns ``(params, source)``; ``({}, None)`` when there is no default file.
    """
    from ..config import find_config
    from ..params import load_yaml

    if config is None:
        path = config_file(name)
        if not path.is_file():
            return {}, None
    else:
        path = find_config(config, "baseline")  # a YAML file, or a shipped one's name (e.g. cibhash)
    params = load_yaml(path, "baseline config file") or {}
    if not isinstance(params, dict):
        raise InputError(f"{path} must map parameter names to values")
    return params, str(path)


def fit_run(
    name: str,
    data_dir: str | os.PathLike,
    bits: int,
    out_dir: str | os.PathLike,
    seed: int = 0,
    device: str = "cpu",
    config: str | os.PathLike | None = None,
    **params: Any,
) -> Path:
    """Fit baseline ``name`` on the training split of ``data_dir``; write run directory ``out_dir``.

    The run directory (``model.npz`` or ``model.safetensors`` + ``run.json``, see
    :mod:`lagnh_pyg.rundir`) is built in a temporary sibling and renamed into place, so it exists
    only once complete. ``out_dir`` must not exist.

    Args:
        name: a key of :data:`BASELINES`.
        data_dir: a dataset directory (only its ``train`` split is read: the features, the aux
            when ``inputs`` is ``aux`` or ``both``, and stored views of training items when the
            method takes views).
        bits: code length, a positive multiple of 8.
        out_dir: the run directory to create.
        seed: seed of the method's random choices.
        device: where a deep method trains (``cpu`` or ``cuda[:N]``, resolved).
        config: a YAML file of parameters, or a shipped baseline config's name (default:
            ``configs/baselines/<name>.yaml`` if present).
        **params: the method's parameters (``BASELINES[name].params``) and the input transform
            (``inputs``, ``aux_weight``: :data:`~lagnh_pyg.baselines.base.INPUT_PARAMS`); override the file.

    Returns:
        ``Path(out_dir)``.
    """
    from ..data.store import Dataset
    from ..files import atomic_dir

    out_dir = Path(out_dir)
    file_params, source = load_params(name, config)
    model = make_baseline(name, bits, seed, **{**file_params, **params})  # validates name, bits and parameters first
    if out_dir.exists():
        raise InputError(f"output directory {out_dir} already exists; choose another --out or remove it")
    ds = Dataset.open(data_dir)
    train = ds.split("train")
    logger.debug("fitting %s (%d bits, inputs %s) on %d training items of %s", model.name, model.bits,
                 model.transform.inputs, len(train), ds.root)
    fit_on_dataset(model, ds, device)
    with atomic_dir(out_dir) as tmp:
        write_run(tmp, model, ds, config_file=source, overrides=params)
    return out_dir


def fit_on_dataset(model: HashingBaseline, ds, device: str = "cpu") -> HashingBaseline:
    """Fit ``model`` on the training split of dataset ``ds``: its features, its aux when the
    model's ``inputs`` use it, and its stored views of training items when the method takes
    views (a deep method trains on ``device``)."""
    train = ds.split("train")
    aux = ds.aux_rows(train) if model.uses_aux else None
    if isinstance(model, DeepBaseline):
        model.device = device
        views = ds.views_of(train) if model.uses_views and ds.has_views else None
        return model.fit(ds.feature_rows(train), views=views, aux=aux)
    return model.fit(ds.feature_rows(train), aux=aux)


def write_run(directory: str | os.PathLike, model: HashingBaseline, data, *, config_file: str | None = None,
              overrides: dict[str, Any] | None = None, data_dir: str | None = None) -> None:
    """Write fitted ``model`` into ``directory`` as a run directory: the model file and
    ``run.json`` naming dataset ``data`` (:func:`~lagnh_pyg.rundir.write_run_meta`; ``data_dir``:
    a path relative to the run, for a dataset it holds). ``config_file`` and ``overrides``
    record where the parameters came from."""
    from ..rundir import baseline_model_file, write_run_meta

    directory = Path(directory)
    model_file = baseline_model_file(getattr(model, "model_suffix", ".npz"))
    model.save(directory / model_file)
    write_run_meta(
        directory,
        method=model.name,
        bits=model.bits,
        data=data,
        model_file=model_file,
        config={"seed": model.seed, **model.config},
        extra={"fit": model.fit_info, "config_file": config_file, "overrides": dict(overrides or {}),
               "inputs": model.transform.record()},
        data_dir=data_dir,
    )


__all__ = [
    "BASELINES",
    "DEEP",
    "SADH",
    "SHALLOW",
    "SSDH",
    "TBH",
    "UHBDNN",
    "BiHalf",
    "CIBHash",
    "DeepBaseline",
    "DeepBit",
    "config_file",
    "load_params",
    "ITQ",
    "LSH",
    "PCAH",
    "SGH",
    "SH",
    "SKLSH",
    "HashingBaseline",
    "INPUT_CHOICES",
    "INPUT_PARAMS",
    "InputTransform",
    "Param",
    "baseline_class",
    "fit_on_dataset",
    "fit_run",
    "load_model",
    "load_run_encoder",
    "make_baseline",
    "write_run",
]
