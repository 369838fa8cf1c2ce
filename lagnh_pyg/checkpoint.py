"""LAGNH checkpoints: a ``torch.save`` file of tensors and plain values (model, discriminator,
optimisers, epoch, the RNG states of torch and of the batch source, the resolved config),
marked with its format and version, written atomically and read with ``weights_only=True``
(never unpickling code). :class:`~lagnh_pyg.rundir.RunWriter` decides where it goes.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .data.store import Dataset
from .errors import InputError
from .files import atomic_path

CHECKPOINT_FORMAT = "lagnh-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write a checkpoint atomically: ``state`` (tensors and plain types only) plus the format
    marker and version, as a ``torch.save`` file that :func:`load_checkpoint` reads with
    ``weights_only=True``."""
    import torch

    ck = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **dict(state)}
    with atomic_path(path) as tmp:
        torch.save(ck, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; foreign, old or corrupt files raise
    InputError with one line."""
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns before refusing a pickled object: one line only
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        # truncated zip, garbage bytes, pickled foreign objects (refused by weights_only) ...
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise InputError(f"checkpoint {path} is corrupt or not a lagnh checkpoint ({msg})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a lagnh checkpoint")
    if ck.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"checkpoint {path} has version {ck.get('version')}; this lagnh-pyg reads {CHECKPOINT_VERSION}")
    return ck


def config_of_checkpoint(ck: Mapping[str, Any], path: str | os.PathLike | None = None):
    """The resolved :class:`~lagnh_pyg.config.Config` a checkpoint was trained with (``path``:
    the checkpoint's, named in the error)."""
    import yaml

    return stored_config(yaml.safe_load(ck["config_yaml"]), path or "the checkpoint")


def stored_config(source: Mapping[str, Any], where: str | os.PathLike):
    """The :class:`~lagnh_pyg.config.Config` stored with a trained model (``where``: the file
    it came from). A key or value this version does not know, from a model another version
    trained, gives one InputError line that says so."""
    from .config import load_config

    try:
        return load_config(source)
    except InputError as e:
        raise InputError(f"{where} was trained by another version of lagnh-pyg: its config does not load "
                         f"here ({e}); train it again with this version") from None


def check_resumable(ck: Mapping[str, Any], path: Path, config_digest: str, bits: int, ds: Dataset) -> None:
    """A checkpoint ``--resume`` may continue: same config (but ``train.epochs``), code length
    and dataset; one clear InputError line otherwise."""
    if ck.get("config_digest") != config_digest:
        raise InputError(f"checkpoint {path} was made with another config; resume with the same config "
                         "(only train.epochs may change) or train into a new --out")
    if int(ck.get("bits", -1)) != bits:
        raise InputError(f"checkpoint {path} has {ck.get('bits')}-bit codes, not --bits {bits}")
    if ck.get("data_fingerprint") != ds.fingerprint:
        raise InputError(f"checkpoint {path} was trained on another dataset than {ds.root}")
