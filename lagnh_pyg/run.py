"""The run directory: what `train` and `baseline` write and every later stage reads.

Layout::

    RUN_DIR/
      run.json          format, version, method, bits, data_dir, data_fingerprint,
                        model_file, model_fingerprint, config, created
      <model_file>      the fitted model (LAGNH: safetensors checkpoint; baselines: .npz)
      codes/            query.npy, database.npy (packed uint8) and meta.json
      index/            the FAISS binary index (``lagnh index``)
      metrics/          evaluation outputs (``lagnh evaluate``)

Methods register a loader here; ``load_encoder(run)`` returns an object with
``bits`` and ``encode(features, aux) -> (n, bits) array`` whose positive entries are the
1-bits. Encoders must be batch-independent (one item, one code) unless they say otherwise
with ``batch_independent = False``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .codes import check_bits
from .data.store import Dataset
from .errors import InputError
from .utils import load_npy, sha256_file, write_json_atomic

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
        "model_fingerprint": sha256_file(run_dir / model_file)[:16],
        "config": config or {},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    write_json_atomic(run_dir / "run.json", meta)
    return meta


@dataclass
class Run:
    root: Path
    meta: dict

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> "Run":
        root = Path(run_dir)
        p = root / "run.json"
        if not p.is_file():
            raise InputError(f"{root} is not a run directory (no run.json); create one with `lagnh train` or `lagnh baseline`")
        try:
            meta = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{p} is not valid JSON ({e.msg})") from None
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
        return self.root / "codes"

    def codes_meta(self) -> dict:
        p = self.codes_dir() / "meta.json"
        if not p.is_file():
            raise InputError(f"run {self.root} has no codes yet; run `lagnh encode {self.root}` first")
        return json.loads(p.read_text())

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
