"""The run directory: the one module that knows its layout, its commit order, the checkpoint
format and the fingerprints. `train` and `baseline` write it; every later stage reads it
through :class:`Run`.

Layout::

    RUN_DIR/
      run.json             format, version, method, bits, data_dir, data_fingerprint,
                           model_file, model_fingerprint, config, created
      <model_file>         the fitted model (LAGNH: checkpoint.pt, a torch.save file of tensors
                           and plain types, read with ``weights_only=True``, never unpickling
                           code; baselines: model.npz)
      encoder.safetensors  LAGNH's out-of-sample encoder cache (training nodes' xhat, z1, ...),
                           written in row blocks and read memory-mapped (any number of nodes)
      config.yaml          the resolved config; log.jsonl: one row of loss terms per epoch
      .lock                held (flock) while a `train` writes the directory
      codes/               query.npy, database.npy (packed uint8) and meta.json
      index/               the FAISS binary index (``lagnh index``)
      metrics/             evaluation outputs (``lagnh evaluate``)

Commit order of a training run (:class:`RunWriter`): the directory is built in a hidden
temporary sibling until its first checkpoint, then renamed into place (so an interrupted
first epoch leaves nothing behind that blocks a rerun); checkpoints are written atomically;
at the end the complete checkpoint, then the encoder cache (naming the checkpoint's
fingerprint), then config.yaml, and run.json last: a directory with a run.json is complete.

Methods register a loader here; ``load_encoder(run)`` returns an object with
``bits`` and ``encode(features, aux) -> (n, bits) array`` whose positive entries are the
1-bits. Encoders must be batch-independent (one item, one code) unless they say otherwise
with ``batch_independent = False``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import importlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .codes import check_bits
from .data.store import Dataset
from .errors import InputError
from .utils import (
    atomic_path,
    drop_mapped_pages,
    load_npy,
    read_json,
    sha256_file,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
LOCK_FILE = ".lock"
CODES_DIR, INDEX_DIR, METRICS_DIR = "codes", "index", "metrics"
CHECKPOINT_FORMAT = "lagnh-checkpoint"
CHECKPOINT_VERSION = 1
ENCODER_CACHE_FORMAT = "lagnh-encoder-cache"
RUN_FORMAT = "lagnh-run"
RUN_VERSION = 1

# method name -> "module:callable(run, device) -> Encoder"; imported lazily.
METHODS: dict[str, str] = {}


def register_method(name: str, loader: str) -> None:
    """Register ``loader`` ("module:callable") as the encoder factory of method ``name``."""
    METHODS[name] = loader


class Encoder(Protocol):
    bits: int
    batch_independent: bool

    def encode(self, features: np.ndarray, aux: np.ndarray) -> np.ndarray: ...


def write_run_meta(
    run_dir: str | os.PathLike,
    *,
    method: str,
    bits: int,
    data: Dataset,
    model_file: str,
    config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict:
    """Write ``run.json`` (atomically) after the model file exists; returns the metadata."""
    run_dir = Path(run_dir)
    check_bits(bits)
    meta = {
        "format": RUN_FORMAT,
        "version": RUN_VERSION,
        "method": method,
        "bits": int(bits),
        "data_dir": str(Path(data.root).resolve()),
        "data_fingerprint": data.fingerprint,
        "feature_dim": data.feature_dim,
        "aux_dim": data.aux_dim,
        "model_file": model_file,
        "model_fingerprint": fingerprint(run_dir / model_file),
        "config": config or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    write_json_atomic(run_dir / RUN_FILE, meta)
    return meta


def fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint of a file (model, checkpoint) that later stages check: 16 hex digits
    of its SHA-256."""
    return sha256_file(path)[:16]


@dataclass
class Run:
    root: Path
    meta: dict

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> "Run":
        root = Path(run_dir)
        p = root / RUN_FILE
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

    def dataset(self, data_dir: str | os.PathLike | None = None) -> Dataset:
        """The run's training dataset, or another one (checked for the same feature/aux dims)."""
        ds = Dataset.open(data_dir if data_dir is not None else self.meta["data_dir"])
        if ds.feature_dim != self.meta["feature_dim"]:
            raise InputError(
                f"dataset {ds.root} has {ds.feature_dim}-d features but the model of {self.root} expects {self.meta['feature_dim']}-d"
            )
        if ds.aux_dim != self.meta["aux_dim"]:
            raise InputError(
                f"dataset {ds.root} has {ds.aux_dim} aux columns but the model of {self.root} expects {self.meta['aux_dim']}"
            )
        return ds

    def codes_dir(self) -> Path:
        return self.root / CODES_DIR

    def index_dir(self) -> Path:
        return self.root / INDEX_DIR

    def metrics_dir(self) -> Path:
        return self.root / METRICS_DIR

    def codes_meta(self) -> dict:
        p = self.codes_dir() / "meta.json"
        if not p.is_file():
            raise InputError(f"run {self.root} has no codes yet; run `lagnh encode {self.root}` first")
        return read_json(p, "codes metadata")

    def load_codes(self, split: str) -> np.ndarray:
        """Packed uint8 codes of ``split`` (query or database), checked against this model."""
        p = self.codes_dir() / f"{split}.npy"
        if not p.is_file():
            raise InputError(f"{p} does not exist; run `lagnh encode {self.root} --split {split}` first")
        meta = self.codes_meta()
        if meta.get("model_fingerprint") != self.model_fingerprint:
            raise InputError(f"codes in {self.codes_dir()} were made by another model; re-run `lagnh encode {self.root}`")
        codes = load_npy(p, "codes")
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] * 8 != self.bits:
            raise InputError(f"{p} is not a packed {self.bits}-bit code file")
        return codes


def load_encoder(run: Run, device: str = "cpu", **options: Any) -> Encoder:
    """Instantiate the fitted encoder of ``run`` through the method registry.

    ``options`` (e.g. LAGNH's ``encoding``) go to the method's loader; None values are dropped.
    """
    _ensure_registered()
    spec = METHODS.get(run.method)
    if spec is None:
        raise InputError(f"run {run.root} was made by unknown method {run.method!r}; known: {', '.join(sorted(METHODS))}")
    module, func = spec.split(":")
    options = {k: v for k, v in options.items() if v is not None}
    return getattr(importlib.import_module(module), func)(run, device, **options)


def _ensure_registered() -> None:
    # Importing these modules registers their methods (cheap: they import lazily inside).
    for mod in ("lagnh_pyg.encode", "lagnh_pyg.baselines"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a method family not built yet
            if e.name != mod:
                raise


def encode_splits(
    run: Run,
    splits: list[str],
    *,
    data_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    chunk: int = 8192,
    progress=None,
    encoder_options: dict[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Encode the items of ``splits`` with the run's model; write packed codes atomically.

    Codes go to ``RUN_DIR/codes/<split>.npy`` (rows in the order of the split's index
    array) with ``codes/meta.json`` naming the model and the dataset they came from.
    ``chunk`` only bounds memory: encoders are batch-independent, so it never changes a code
    (the faithful LAGNH encoder, which is not, rounds it to its own batch size).
    ``encoder_options`` are passed to the method's loader (LAGNH: ``{"encoding": ...}``).
    """
    from .codes import pack_codes
    from .utils import save_npy_atomic

    ds = run.dataset(data_dir)
    enc = load_encoder(run, device, **(encoder_options or {}))
    if enc.bits != run.bits:
        raise InputError(f"model of {run.root} produces {enc.bits}-bit codes but run.json says {run.bits}")
    step = getattr(enc, "encode_chunk_multiple", 1)
    chunk = max(step, (chunk // step) * step)
    out_dir = Path(out_dir) if out_dir is not None else run.codes_dir()  # elsewhere: another dataset's codes
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    same_source = (
        meta.get("model_fingerprint") == run.model_fingerprint
        and meta.get("data_fingerprint") == ds.fingerprint
    )
    if not same_source:  # codes of another model or dataset must not mix with the new ones
        for old in out_dir.glob("*.npy"):
            old.unlink()
        meta = {"splits": {}}
    written = {}
    for split in splits:
        idx = ds.split(split)
        parts = []
        for _, feats, aux in ds.iter_rows(idx, chunk):
            codes = np.asarray(enc.encode(feats, aux))
            if codes.shape != (len(feats), run.bits):
                raise InputError(f"encoder returned shape {codes.shape}, expected {(len(feats), run.bits)}")
            parts.append(pack_codes(codes))
            drop_mapped_pages(ds.features)  # read once: a million items' pages need not stay resident
            if progress is not None:
                progress(split, len(feats))
        packed = np.concatenate(parts) if parts else np.zeros((0, run.bits // 8), np.uint8)
        path = out_dir / f"{split}.npy"
        save_npy_atomic(path, packed)
        meta["splits"][split] = int(len(packed))
        written[split] = path
    meta.update(
        {
            "format": "lagnh-codes",
            "bits": run.bits,
            "bit_order": "packbits-msb-first",
            "method": run.method,
            "model_fingerprint": run.model_fingerprint,
            "data_dir": str(Path(ds.root).resolve()),
            "data_fingerprint": ds.fingerprint,
            "encoding": getattr(enc, "encoding_name", "default"),
        }
    )
    write_json_atomic(meta_path, meta)
    return written


# -- checkpoints ------------------------------------------------------------------------------
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


def config_of_checkpoint(ck: Mapping[str, Any]):
    """The resolved :class:`~lagnh_pyg.config.Config` a checkpoint was trained with."""
    import yaml

    from .config import load_config

    return load_config(yaml.safe_load(ck["config_yaml"]))


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


# -- the encoder cache ---------------------------------------------------------------------------
# The cache is a safetensors file (float32 tensors, metadata naming the checkpoint), written in
# row blocks by EncoderCacheFile and read back memory-mapped, so that neither side ever holds
# it whole: at a million training nodes it is N x (att_dim + hidden + aux_dim + 1) floats.
_CACHE_HEADER_ROOM = 256  # spaces reserved in the header for the checkpoint's fingerprint


class EncoderCacheFile:
    """The encoder cache being written: a temporary safetensors file in ``directory`` whose
    layout (names, shapes) is fixed up front; rows are written in blocks (``os.pwrite``: no
    mapping, so written rows do not stay in the process's memory); :meth:`commit` names the
    checkpoint in the header and renames the file into place. The writer of the cache reads
    what it wrote through :meth:`array` (a memory map).

    Args:
        directory: where the file goes (the run directory; it may be renamed meanwhile: the
            file is found again by its name in :meth:`commit`'s directory).
        shapes: tensor name -> shape; every tensor is float32.
    """

    def __init__(self, directory: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self.offsets, pos = {}, 0
        for name, shape in self.shapes.items():
            size = 4 * int(np.prod(shape, dtype=np.int64))
            self.offsets[name] = (pos, pos + size)
            pos += size
        self.header_len = len(self._header("0" * 16))
        self.fd, tmp = tempfile.mkstemp(prefix=f".{ENCODER_FILE}.tmp-", dir=directory)
        self.name = Path(tmp).name
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(self.fd, 0o666 & ~umask)  # as the run's other files, not mkstemp's 0600
        self._maps: dict[str, np.memmap] = {}
        os.ftruncate(self.fd, 8 + self.header_len + pos)
        self._write_header("0" * 16)

    def _header(self, model_fingerprint: str) -> bytes:
        head = {"__metadata__": {"format": ENCODER_CACHE_FORMAT, "model_fingerprint": model_fingerprint}}
        head.update({k: {"dtype": "F32", "shape": list(s), "data_offsets": list(self.offsets[k])}
                     for k, s in self.shapes.items()})
        raw = json.dumps(head, separators=(",", ":")).encode()
        room = len(raw) + _CACHE_HEADER_ROOM
        return raw.ljust(room + (-room) % 8)  # spaces; 8-aligned data

    def _write_header(self, model_fingerprint: str) -> None:
        raw = self._header(model_fingerprint).ljust(self.header_len)
        if len(raw) != self.header_len:
            raise ValueError("encoder cache header outgrew its room")
        os.pwrite(self.fd, len(raw).to_bytes(8, "little") + raw, 0)

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Rows ``start:start + len(block)`` of tensor ``name``."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        row = 4 * int(np.prod(self.shapes[name][1:], dtype=np.int64))
        if block.size and block.shape[1:] != self.shapes[name][1:]:
            raise ValueError(f"{name}: block of shape {block.shape} for a {self.shapes[name]} tensor")
        pos = 8 + self.header_len + self.offsets[name][0] + start * row
        view = memoryview(block).cast("B")
        while len(view):
            done = os.pwrite(self.fd, view, pos)
            view, pos = view[done:], pos + done

    def array(self, name: str) -> np.ndarray:
        """What has been written of ``name``, memory-mapped (read-only)."""
        if name not in self._maps:
            self._maps[name] = np.memmap(f"/proc/self/fd/{self.fd}", np.float32, "r+", 8 + self.header_len +
                                         self.offsets[name][0], self.shapes[name])
        return self._maps[name]

    def commit(self, directory: str | os.PathLike, model_fingerprint: str) -> Path:
        """Name the checkpoint ``model_fingerprint`` in the header, sync, rename to
        ``directory/ENCODER_FILE``; returns the path."""
        self._maps.clear()
        self._write_header(model_fingerprint)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        path = Path(directory) / ENCODER_FILE
        os.replace(Path(directory) / self.name, path)
        return path

    def abort(self, directory: str | os.PathLike) -> None:
        """Remove the temporary file (a failed or interrupted training)."""
        self._maps.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            (Path(directory) / self.name).unlink(missing_ok=True)


def load_encoder_cache(run: Run, required: set[str]) -> dict[str, Any]:
    """The run's encoder cache, memory-mapped (float32 tensors sharing the file's pages,
    :class:`MappedTensors`),
    checked to belong to the run's model and to hold ``required`` with consistent row counts."""
    import warnings

    import torch
    from safetensors import SafetensorError, safe_open

    path = run.root / ENCODER_FILE
    if not path.is_file():
        raise InputError(f"{path} is missing; neighbours encoding needs it (use --encoding self or faithful, "
                         "or re-train)")
    try:
        with safe_open(str(path), framework="pt") as f:  # validates the header against the file size
            meta = f.metadata() or {}
        with open(path, "rb") as fh:
            n_head = int.from_bytes(fh.read(8), "little")
            head = json.loads(fh.read(n_head))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path} is corrupt ({str(e).splitlines()[0][:120]})") from None
    if meta.get("format") != ENCODER_CACHE_FORMAT or meta.get("model_fingerprint") != run.model_fingerprint:
        raise InputError(f"{path} belongs to another model than {run.root / RUN_FILE} names; re-train")
    missing = required - set(head)
    if missing:
        raise InputError(f"{path} lacks {', '.join(sorted(missing))}; re-train")
    rows = {int(head[k]["shape"][0]) if head[k]["shape"] else -1 for k in required}
    if any(head[k]["dtype"] != "F32" for k in required) or len(rows) != 1:
        raise InputError(f"{path} is corrupt (its tensors are not float32 rows of the same training nodes)")
    out = MappedTensors()
    with warnings.catch_warnings():  # torch warns that the read-only map is not writable: never written
        warnings.simplefilter("ignore")
        for k in required:
            begin = 8 + n_head + int(head[k]["data_offsets"][0])
            shape = tuple(head[k]["shape"])
            arr = np.memmap(path, np.float32, "r", begin, shape) if np.prod(shape) else np.zeros(shape, np.float32)
            out[k] = torch.from_numpy(arr)
            out.maps.append(arr)
    return out


class MappedTensors(dict):
    """name -> tensor sharing the pages of a memory map; ``maps``: those maps (whose resident
    pages a long reader may drop now and then: :func:`~lagnh_pyg.utils.drop_mapped_pages`)."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: list[np.ndarray] = []


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
        return EncoderCacheFile(self.path, shapes)

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
