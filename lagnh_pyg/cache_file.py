"""The encoder cache's file: what LAGNH's ``neighbours`` encoding needs of the training nodes
(x̂, z¹, degrees, unit aux rows), as a safetensors file of float32 tensors whose metadata names
the checkpoint it belongs to.

Why a writer of our own and not ``safetensors.torch.save_file``: the library serialises a
dict of tensors held in memory, and this file is larger than what a run should hold: measured
at 1,000,000 training nodes it is 1.80 GB at the scaling experiment's widths and 6.3 GB at the
default widths (docs/results/encoding-1m.md), computed layer by layer in node chunks while the
process already peaks at 5.55 GiB. :class:`EncoderCacheFile` therefore lays the file out up
front and writes row blocks with ``os.pwrite``; the result is a plain safetensors file (the
library's ``safe_open`` validates it and ``load_file`` reads it), mapped back by
:func:`load_encoder_cache` without copying.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

ENCODER_CACHE_FORMAT = "lagnh-encoder-cache"
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
        name: the file's name once committed (the run directory's, from
            :class:`~lagnh_pyg.rundir.RunWriter`).
    """

    def __init__(self, directory: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]], name: str) -> None:
        self.final_name = name
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self.offsets, pos = {}, 0
        for name, shape in self.shapes.items():
            size = 4 * int(np.prod(shape, dtype=np.int64))
            self.offsets[name] = (pos, pos + size)
            pos += size
        self.header_len = len(self._header("0" * 16))
        self.fd, tmp = tempfile.mkstemp(prefix=f".{self.final_name}.tmp-", dir=directory)
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
        ``directory/name``; returns the path."""
        self._maps.clear()
        self._write_header(model_fingerprint)
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        path = Path(directory) / self.final_name
        os.replace(Path(directory) / self.name, path)
        return path

    def abort(self, directory: str | os.PathLike) -> None:
        """Remove the temporary file (a failed or interrupted training)."""
        self._maps.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            (Path(directory) / self.name).unlink(missing_ok=True)


def load_encoder_cache(run: Any, required: set[str]) -> dict[str, Any]:
    """The encoder cache of ``run`` (a :class:`~lagnh_pyg.rundir.Run`: its
    ``encoder_cache_path`` and ``model_fingerprint``), memory-mapped (float32 tensors sharing
    the file's pages, :class:`MappedTensors`), checked to belong to the run's model and to hold
    ``required`` with consistent row counts."""
    import warnings

    import torch
    from safetensors import SafetensorError, safe_open

    path = run.encoder_cache_path
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
        raise InputError(f"{path} belongs to another model than {run.meta_path} names; re-train")
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
    pages a long reader may drop now and then: :func:`~lagnh_pyg.runtime.drop_mapped_pages`)."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: list[np.ndarray] = []
