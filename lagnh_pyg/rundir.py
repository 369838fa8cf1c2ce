"""The run directory: the one module that knows its file names, its commit order and the
fingerprints. ``train`` and ``baseline`` write it; every later stage reads it through
:class:`Run`, whose properties are the only way to a path inside it.

Layout::

    RUN_DIR/
      run.json             format, version, method, bits, data_dir, data_fingerprint,
                           model_file, model_fingerprint, config, created
      <model_file>         the fitted model: LAGNH's checkpoint.pt (:mod:`lagnh_pyg.checkpoint`);
                           a shallow baseline's model.npz, a deep baseline's model.safetensors
      encoder.safetensors  LAGNH's out-of-sample encoder cache (:mod:`lagnh_pyg.cache_file`)
      config.yaml          the resolved config; log.jsonl: one row of loss terms per epoch
      .lock                held (flock) while a `train` writes the directory
      codes/               the codes of the splits (:mod:`lagnh_pyg.codes`: <split>.npy, meta.json)
      index/               the FAISS binary index (``lagnh index``, :mod:`lagnh_pyg.index`)
      metrics/             evaluation outputs (``lagnh evaluate``)
      added/               items added to the collection later (``lagnh add``, :mod:`lagnh_pyg.added`)
      cell.json            in an experiment's runs: the settings and result of the cell
      data/                a run fitted on in-memory arrays (the Python API, :mod:`lagnh_pyg.estimators`):
                           its training items as a dataset directory, which run.json names by the
                           relative path ``data`` (a relative data_dir is relative to the run directory)

Commit order of a training run (:class:`RunWriter`): the directory is built in a hidden
temporary sibling until its first checkpoint, then renamed into place (so an interrupted
first epoch leaves nothing behind that blocks a rerun); checkpoints are written atomically;
at the end the complete checkpoint, then the encoder cache (naming the checkpoint's
fingerprint), then config.yaml, and run.json last: a directory with a run.json is complete.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache_file import EncoderCacheFile
from .checkpoint import load_checkpoint, save_checkpoint
from .codes import CODES_META, check_bits, codes_file
from .data.store import Dataset
from .errors import InputError
from .files import atomic_path, load_npy, read_json, sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
LOCK_FILE = ".lock"
CELL_FILE = "cell.json"  # an experiment's record of the settings and results of its run
RERANK_FILE = "rerank.json"  # the re-rank score chosen on the run's validation split (lagnh experiment rerank --save)
CODES_DIR, INDEX_DIR, METRICS_DIR, ADDED_DIR, DATA_DIR = "codes", "index", "metrics", "added", "data"
MODEL_STEM = "model"  # a baseline's model file: model.npz (shallow) or model.safetensors (deep)
RUN_FORMAT = "lagnh-run"
RUN_VERSION = 1


def baseline_model_file(suffix: str) -> str:
    """The name of a baseline's model file in its run directory (``suffix``: ``.npz`` or
    ``.safetensors``)."""
    return MODEL_STEM + suffix


class RunPaths:
    """The paths inside a run directory ``root`` (complete or still being written)."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def meta_path(self) -> Path:
        """``run.json``: written last, so a directory holding it is complete."""
        return self.root / RUN_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.root / CHECKPOINT_FILE

    @property
    def encoder_cache_path(self) -> Path:
        return self.root / ENCODER_FILE

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILE

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def cell_path(self) -> Path:
        return self.root / CELL_FILE

    @property
    def rerank_path(self) -> Path:
        return self.root / RERANK_FILE

    def codes_dir(self) -> Path:
        return self.root / CODES_DIR

    def codes_file(self, split: str) -> Path:
        """The packed codes of ``split`` in the run's codes directory."""
        return codes_file(self.codes_dir(), split)

    def codes_meta_path(self) -> Path:
        return self.codes_dir() / CODES_META

    def index_dir(self) -> Path:
        return self.root / INDEX_DIR

    def metrics_dir(self) -> Path:
        return self.root / METRICS_DIR

    def added_dir(self) -> Path:
        return self.root / ADDED_DIR

    def own_data_dir(self) -> Path:
        """Where a run fitted on in-memory arrays keeps them as its dataset (:func:`attach_dataset`)."""
        return self.root / DATA_DIR


def write_run_meta(
    run_dir: str | os.PathLike,
    *,
    method: str,
    bits: int,
    data: Dataset,
    model_file: str,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    data_dir: str | None = None,
) -> dict:
    """Write ``run.json`` (atomically) after the model file exists; returns the metadata.

    ``data_dir`` records where the dataset is instead of ``data``'s absolute path: a path
    relative to the run directory, for a dataset the run holds (``data``, :func:`attach_dataset`)."""
    run_dir = Path(run_dir)
    check_bits(bits)
    meta = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "method": method,
        "bits": int(bits),
        "data_dir": data_dir if data_dir is not None else str(Path(data.root).resolve()),
        "data_fingerprint": data.fingerprint,
        "feature_dim": data.feature_dim,
        "aux_dim": data.aux_dim,
        "model_file": model_file,
        "model_fingerprint": fingerprint(run_dir / model_file),
        "config": config or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    write_json_atomic(RunPaths(run_dir).meta_path, meta)
    return meta


def attach_dataset(run_dir: str | os.PathLike, dataset_dir: str | os.PathLike) -> Path:
    """Move the dataset directory a run was fitted on into the run (``data/``) and name it in
    ``run.json`` by that relative path: the run directory then moves and copies as one. (The
    dataset's fingerprint is of its files' contents, so it is unchanged.)"""
    run = Run.open(run_dir)
    target = run.own_data_dir()
    if target.exists():
        raise InputError(f"{run.root} already holds a {DATA_DIR}/ directory")
    os.rename(dataset_dir, target)
    write_json_atomic(run.meta_path, {**run.meta, "data_dir": DATA_DIR})
    return target


def fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint of a file (model, checkpoint) that later stages check: 16 hex digits
    of its SHA-256."""
    return sha256_file(path)[:16]


@dataclass
class Run(RunPaths):
    """A complete run directory: ``root`` and its ``run.json`` (``meta``)."""

    root: Path
    meta: dict

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> "Run":
        root = Path(run_dir)
        p = RunPaths(root).meta_path
        if not p.is_file():
            raise InputError(f"{root} is not a run directory (no run.json); create one with `lagnh train` or `lagnh baseline`")
        meta = read_json(p, "run metadata")
        if meta.get("format") != RUN_FORMAT:
            raise InputError(f"{p} is not a {RUN_FORMAT} file")
        if meta.get("version") != RUN_VERSION:
            raise InputError(f"run {root} has format version {meta.get('version')}; this lagnh-pyg reads {RUN_VERSION}")
        return cls(root, meta)

    @property
    def method(self) -> str:
        return self.meta["method"]

    @property
    def bits(self) -> int:
        return int(self.meta["bits"])

    @property
    def model_fingerprint(self) -> str:
        return self.meta["model_fingerprint"]

    @property
    def model_path(self) -> Path:
        return self.root / self.meta["model_file"]

    @property
    def data_dir(self) -> Path:
        """The dataset directory the run was fitted on (``run.json``'s ``data_dir``; a relative
        one is relative to the run directory)."""
        return self.root / self.meta["data_dir"]  # an absolute data_dir stays what it is

    def dataset(self, data_dir: str | os.PathLike | None = None) -> Dataset:
        """The run's training dataset, or another one (checked for the same feature/aux dims)."""
        ds = Dataset.open(data_dir if data_dir is not None else self.data_dir)
        if ds.feature_dim != self.meta["feature_dim"]:
            raise InputError(
                f"dataset {ds.root} has {ds.feature_dim}-d features but the model of {self.root} expects {self.meta['feature_dim']}-d"
            )
        if ds.aux_dim != self.meta["aux_dim"]:
            raise InputError(
                f"dataset {ds.root} has {ds.aux_dim} aux columns but the model of {self.root} expects {self.meta['aux_dim']}"
            )
        return ds

    def codes_meta(self) -> dict:
        p = self.codes_meta_path()
        if not p.is_file():
            raise InputError(f"run {self.root} has no codes yet; run `lagnh encode {self.root}` first")
        return read_json(p, "codes metadata")

    def load_codes(self, split: str) -> np.ndarray:
        """Packed uint8 codes of ``split`` (query or database), checked against this model."""
        p = self.codes_file(split)
        if not p.is_file():
            raise InputError(f"{p} does not exist; run `lagnh encode {self.root} --split {split}` first")
        meta = self.codes_meta()
        if meta.get("model_fingerprint") != self.model_fingerprint:
            raise InputError(f"codes in {self.codes_dir()} were made by another model; re-run `lagnh encode {self.root}`")
        codes = load_npy(p, "codes")
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] * 8 != self.bits:
            raise InputError(f"{p} is not a packed {self.bits}-bit code file")
        return codes


# -- a training run being written ----------------------------------------------------------------
# files a RunWriter may remove from a directory it is about to take over (it wrote them itself)
_OWN_FILES = (LOG_FILE, LOCK_FILE, CONFIG_FILE)


class RunWriter:
    """The run directory of one ``train`` invocation, from its first epoch to ``run.json``.

    A fresh run is built in a hidden temporary sibling (``.NAME.tmp-*``) and renamed to
    ``out`` at its first checkpoint; if training fails or is interrupted before that, the
    sibling is removed (or, after a SIGKILL, left hidden) and ``out`` was never created. A
    lock file (``flock``) is held while the writer is open, so two ``train --resume`` on one
    run cannot both proceed.

    Args:
        out: the run directory.
        resume: continue ``out``. If it holds no checkpoint (a first run killed before its
            first checkpoint), a fresh run starts there, with a warning saying so.
    """

    def __init__(self, out: str | os.PathLike, resume: bool) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} is an existing file, not a run directory; choose another --out")
        has_ckpt = (self.out / CHECKPOINT_FILE).is_file()
        if resume and not has_ckpt:
            leftovers = sorted(p.name for p in self.out.iterdir()) if self.out.is_dir() else []
            if any(name not in _OWN_FILES for name in leftovers):
                raise InputError(f"--resume: {self.out} has no {CHECKPOINT_FILE}; start without --resume "
                                 "into a new --out")
            logger.warning(f"--resume: {self.out} has no checkpoint yet (killed before its first one?); "
                           "starting a fresh run there")
            resume = False
        elif not resume and self.out.exists() and any(self.out.iterdir()):
            raise InputError(f"run directory {self.out} already exists; choose another --out, remove it, "
                             "or pass --resume")
        self.resume = resume
        self._lock_fd: int | None = None
        if resume:
            self.path, self.committed = self.out, True
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale_siblings()
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
            self.committed = False
        self._lock()

    def _remove_stale_siblings(self) -> None:
        """Remove the temporary siblings of earlier runs into ``out`` killed (SIGKILL) before
        their first checkpoint: recognised by name and lock file, holding only our own
        files, their lock free (a live run holds its lock)."""
        import fcntl

        for tmp in self.out.parent.glob(f".{self.out.name}.tmp-*"):
            names = {p.name for p in tmp.iterdir()} if tmp.is_dir() else set()
            if LOCK_FILE not in names or not names <= set(_OWN_FILES):
                continue
            fd = os.open(tmp / LOCK_FILE, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run
            finally:
                os.close(fd)
            shutil.rmtree(tmp, ignore_errors=True)

    # -- the lock -------------------------------------------------------------------------
    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise InputError(f"run {self.out} is being trained by another process (it holds "
                                 f"{self.out / LOCK_FILE}); wait for it to finish") from None
            raise
        self._lock_fd = fd

    def close(self, ok: bool) -> None:
        """Release the lock; if the run never reached its first checkpoint, remove it."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)  # our own temporary sibling

    # -- files ------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def read_checkpoint(self, map_location: str = "cpu") -> dict[str, Any] | None:
        """The checkpoint to resume from (None for a fresh run)."""
        return load_checkpoint(self.checkpoint_path, map_location) if self.resume else None

    def start_log(self, upto_epoch: int) -> None:
        """Keep the log rows of the epochs a resumed checkpoint holds; drop later ones."""
        keep = read_log(self.path / LOG_FILE, upto_epoch) if self.resume else []
        with atomic_path(self.path / LOG_FILE) as tmp:
            tmp.write_text("".join(json.dumps(row) + "\n" for row in keep))

    def log(self, row: Mapping[str, Any]) -> None:
        with open(self.path / LOG_FILE, "a") as f:
            f.write(json.dumps(dict(row)) + "\n")

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Write the checkpoint; the first one moves the run into place at ``out``."""
        save_checkpoint(self.checkpoint_path, state)
        if self.committed:
            return
        if self.out.is_dir():  # an empty directory, or the leftovers of a run killed before this point
            for name in _OWN_FILES:
                (self.out / name).unlink(missing_ok=True)
        try:
            os.rename(self.path, self.out)  # replaces an empty directory, never a non-empty one
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise InputError(f"{self.out} was created by someone else while this run trained "
                                 f"(kept in {self.path})") from None
            raise
        self.path, self.committed = self.out, True

    def encoder_cache_file(self, shapes: Mapping[str, tuple[int, ...]]) -> EncoderCacheFile:
        """A new encoder cache being written into this run (committed by :meth:`finish`)."""
        return EncoderCacheFile(self.path, shapes, ENCODER_FILE)

    def finish(self, state: Mapping[str, Any], *, encoder_cache: EncoderCacheFile | None, config_yaml: str,
               run_meta: Mapping[str, Any]) -> Path:
        """The end of training, in commit order: the complete checkpoint, the encoder cache
        that names it, config.yaml, run.json."""
        self.checkpoint(state)
        if encoder_cache is not None:  # written into this directory already, named now
            encoder_cache.commit(self.path, fingerprint(self.checkpoint_path))
        with atomic_path(self.path / CONFIG_FILE) as tmp:
            tmp.write_text(config_yaml)
        write_run_meta(self.path, model_file=CHECKPOINT_FILE, **run_meta)
        return self.out


def read_log(path: Path, upto_epoch: int) -> list[dict]:
    """The rows of ``log.jsonl`` up to ``upto_epoch`` (a torn last line ends the read)."""
    if not path.is_file():
        return []
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row.get("epoch", 0) <= upto_epoch:
            keep.append(row)
    return keep
