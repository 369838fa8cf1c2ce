"""The encoders of fitted runs: the method registry, and the codes of a dataset's splits.

Each method registers a loader (``register_method("itq", "lagnh_pyg.baselines:load_run_encoder")``);
``load_encoder(run)`` returns an object with ``bits`` and ``encode(features, aux) -> (n, bits)
array`` whose positive entries are the 1-bits. Encoders must be batch-independent (one item,
one code) unless they say otherwise with ``batch_independent = False``. The loaders are named
by string and imported on first use: the registry is a plug-in point, so the layers below
(LAGNH's encoder, the baselines) register themselves here without this module importing them.

:func:`encode_splits` runs a run's encoder over splits and writes the codes a run's codes
directory holds (the contract's packed format, :mod:`lagnh_pyg.codes`).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .codes import CODES_FORMAT, CODES_META, codes_file, pack_codes
from .errors import InputError
from .files import save_npy_atomic, write_json_atomic
from .rundir import Run
from .runtime import drop_mapped_pages

# method name -> "module:callable(run, device) -> Encoder"; imported lazily.
METHODS: dict[str, str] = {}


def register_method(name: str, loader: str) -> None:
    """Register ``loader`` ("module:callable") as the encoder factory of method ``name``."""
    METHODS[name] = loader


class Encoder(Protocol):
    bits: int
    batch_independent: bool

    def encode(self, features: np.ndarray, aux: np.ndarray) -> np.ndarray: ...


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

    Codes go to the run's codes directory (:meth:`~lagnh_pyg.rundir.Run.codes_dir`), or to
    ``out_dir`` (another dataset's codes), in the format of :mod:`lagnh_pyg.codes`.
    ``chunk`` only bounds memory: encoders are batch-independent, so it never changes a code
    (the faithful LAGNH encoder, which is not, rounds it to its own batch size).
    ``encoder_options`` are passed to the method's loader (LAGNH: ``{"encoding": ...}``).
    """
    ds = run.dataset(data_dir)
    enc = load_encoder(run, device, **(encoder_options or {}))
    if enc.bits != run.bits:
        raise InputError(f"model of {run.root} produces {enc.bits}-bit codes but {run.meta_path} says {run.bits}")
    step = getattr(enc, "encode_chunk_multiple", 1)
    chunk = max(step, (chunk // step) * step)
    out_dir = Path(out_dir) if out_dir is not None else run.codes_dir()  # elsewhere: another dataset's codes
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / CODES_META
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
        path = codes_file(out_dir, split)
        save_npy_atomic(path, packed)
        meta["splits"][split] = int(len(packed))
        written[split] = path
    meta.update(
        {
            "format": CODES_FORMAT,
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
