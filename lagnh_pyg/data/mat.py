"""``.mat`` (MATLAB v5 and v7.3) and ``.h5`` files as hashing code bases distribute them.

Two layouts are common:

- split arrays — one matrix per split, e.g. DCMH / DJSRH / JDSH style ``I_tr, I_te, I_db``
  (image features), ``T_tr, T_te, T_db`` (tags or text: our aux) and ``L_tr, L_te, L_db``
  (labels); or ``XTrain, XQuery, XRetrieval`` / ``YTrain ...`` / ``LTrain ...``. Rows of the
  dataset are the train rows, then the query rows, then the database rows. Where a file's
  database repeats its training images, they are kept as separate rows.
- whole arrays — ``XAll, YAll, LAll`` (or ``features, aux, labels``): the splits are drawn
  with a seed (``n_train``, ``n_query``).

Key names are configurable; without them the first preset (``PRESETS``) whose feature keys
all exist is used. MATLAB v7.3 files are HDF5 and store every matrix transposed (MATLAB is
column-major), so they are read transposed; plain ``.h5`` files written from Python are not.
MATLAB sparse matrices (v5 and v7.3) are read as sparse. Label vectors of class indices
become one-hot; ±1 label matrices become 0/1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from .sources import Catalog, as_multi_hot, require_file, seeded_splits

logger = logging.getLogger(__name__)

#: (name, features keys, aux keys, labels keys); three keys are train, query, database
PRESETS: list[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = [
    ("I/T/L split", ("I_tr", "I_te", "I_db"), ("T_tr", "T_te", "T_db"), ("L_tr", "L_te", "L_db")),
    ("X/Y/L train/query/retrieval", ("XTrain", "XQuery", "XRetrieval"), ("YTrain", "YQuery", "YRetrieval"),
     ("LTrain", "LQuery", "LRetrieval")),
    ("X/Y/L train/test/database", ("XTrain", "XTest", "XDatabase"), ("YTrain", "YTest", "YDatabase"),
     ("LTrain", "LTest", "LDatabase")),
    ("X/Y/L whole", ("XAll",), ("YAll",), ("LAll",)),
    ("I/T/L whole", ("IAll",), ("TAll",), ("LAll",)),
    ("I/Y/L whole", ("IAll",), ("YAll",), ("LAll",)),
    ("named whole", ("features",), ("aux",), ("labels",)),
]
TRANSPOSE = ("auto", "yes", "no")


class H5Rows:
    """An HDF5 dataset read as rows, chunk by chunk; ``transposed`` for MATLAB v7.3 files."""

    def __init__(self, ds: Any, transposed: bool) -> None:
        self.ds, self.transposed = ds, transposed
        self.shape = tuple(ds.shape[::-1]) if transposed else tuple(ds.shape)
        self.ndim = len(self.shape)
        self.dtype = ds.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            key = slice(*key.indices(self.shape[0]))
        elif not isinstance(key, (int, np.integer)):
            key = np.asarray(key)
        if self.transposed:
            return np.ascontiguousarray(np.asarray(self.ds[:, key]).T)
        return np.asarray(self.ds[key])

    def read(self) -> np.ndarray:
        return self[0 : self.shape[0]]


class Stacked:
    """Row-wise concatenation of 2-D arrays, read lazily (``view[start:stop]``)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [p.shape[0] for p in self.parts])
        self.shape = (int(self.offsets[-1]),) + tuple(self.parts[0].shape[1:])
        self.ndim = 2
        self.dtype = np.result_type(*[p.dtype for p in self.parts])

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        out = []
        for p, lo, hi in zip(self.parts, self.offsets[:-1], self.offsets[1:]):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                out.append(np.asarray(p[a - lo : b - lo], dtype=self.dtype))
        return np.concatenate(out) if out else np.empty((0,) + self.shape[1:], dtype=self.dtype)


def file_kind(path: Path) -> str:
    """``"v7.3"`` (MATLAB HDF5), ``"hdf5"`` (plain), or ``"v5"`` (scipy.io.loadmat reads it)."""
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB 7.3"):
        return "v7.3"
    import h5py

    if h5py.is_hdf5(path):
        return "hdf5"
    return "v5"


class MatFile:
    """Named 2-D arrays of a ``.mat``/``.h5`` file; HDF5 datasets stay on disk until read.

    Args:
        path: the file. transpose: ``"auto"`` (transpose MATLAB v7.3 only), ``"yes"``, ``"no"``.
    """

    def __init__(self, path: str | os.PathLike, transpose: str = "auto") -> None:
        if transpose not in TRANSPOSE:
            raise InputError(f"--transpose must be one of {', '.join(TRANSPOSE)}, got {transpose!r}")
        self.path = require_file(path, ".mat/.h5")
        self.kind = file_kind(self.path)
        self.transposed = transpose == "yes" or (transpose == "auto" and self.kind == "v7.3")
        self._h5 = None
        self._arrays: dict[str, Any] = {}
        if self.kind == "v5":
            import scipy.io

            try:
                mat = scipy.io.loadmat(self.path)
            except (ValueError, TypeError, OSError, NotImplementedError) as e:
                raise InputError(f"cannot read {self.path} as a MATLAB file: {str(e).splitlines()[0]}") from None
            for k, v in mat.items():
                if k.startswith("__"):
                    continue
                if self.transposed:
                    v = v.T
                self._arrays[k] = sp.csr_matrix(v) if sp.issparse(v) else v
        else:
            import h5py

            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as e:
                raise InputError(f"cannot open {self.path} as HDF5: {e}") from None
            self._h5.visititems(self._collect)

    def _collect(self, name: str, obj: Any) -> None:
        import h5py

        if isinstance(obj, h5py.Group) and {"ir", "jc", "data"} <= set(obj.keys()):
            self._arrays[name] = obj  # a MATLAB sparse matrix
        elif isinstance(obj, h5py.Dataset) and not any(name.startswith(k + "/") for k in self._arrays):
            if name.startswith(("#refs#", "#subsystem#")):
                return
            self._arrays[name] = obj

    def keys(self) -> list[str]:
        return list(self._arrays)

    def describe(self) -> str:
        parts = []
        for k, v in self._arrays.items():
            shape = getattr(v, "shape", None)
            if shape is None:  # an HDF5 sparse group
                parts.append(f"{k} (sparse)")
            else:
                shape = tuple(shape[::-1]) if (self.transposed and self._h5 is not None) else tuple(shape)
                parts.append(f"{k} {'x'.join(map(str, shape))}")
        return ", ".join(parts) if parts else "none"

    def get(self, key: str) -> Any:
        """The array ``key``: an ndarray or CSR matrix (v5, sparse) or an ``H5Rows`` view."""
        if key not in self._arrays:
            raise InputError(f"key {key!r} is not in {self.path}; arrays found: {self.describe()}")
        v = self._arrays[key]
        if self._h5 is None:
            arr = v
        else:
            import h5py

            if isinstance(v, h5py.Group):  # MATLAB stores sparse as CSC of the MATLAB-shaped matrix
                nrows = int(v.attrs.get("MATLAB_sparse", 0)) or (int(np.max(v["ir"][()])) + 1 if v["ir"].size else 0)
                jc = np.asarray(v["jc"][()], dtype=np.int64)
                csc = sp.csc_matrix(
                    (np.asarray(v["data"][()], dtype=np.float32), np.asarray(v["ir"][()], dtype=np.int64), jc),
                    shape=(nrows, jc.size - 1),
                )
                arr = csc.tocsr()
            else:
                if v.dtype.kind not in "biuf":
                    raise InputError(f"key {key!r} in {self.path} is not a numeric array (dtype {v.dtype})")
                arr = H5Rows(v, self.transposed) if v.ndim == 2 else np.asarray(v[()])
        ndim = getattr(arr, "ndim", 2)
        if ndim > 2:
            raise InputError(
                f"key {key!r} in {self.path} has shape {arr.shape}: raw images? this importer takes feature "
                "matrices (items x dims); extract features first"
            )
        return arr

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def _split_keys(value: str | Sequence[str] | None, option: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    keys = tuple(k.strip() for k in (value.split(",") if isinstance(value, str) else value) if k.strip())
    if len(keys) not in (1, 3):
        raise InputError(f"{option} takes one key (whole array) or three (train,query,database), got {len(keys)}")
    return keys


def resolve_keys(
    mat: MatFile,
    features_key: str | Sequence[str] | None,
    aux_key: str | Sequence[str] | None,
    labels_key: str | Sequence[str] | None,
) -> tuple[tuple[str, ...], tuple[str, ...] | None, tuple[str, ...] | None, str]:
    """The feature, aux and label keys to read: as given, else the first matching preset."""
    feats = _split_keys(features_key, "--features-key")
    aux = _split_keys(aux_key, "--aux-key")
    labels = _split_keys(labels_key, "--labels-key")
    have = set(mat.keys())
    preset = "given"
    if feats is None:
        for name, f, a, lab in PRESETS:
            if set(f) <= have:
                feats, preset = f, name
                aux = aux if aux is not None else (a if set(a) <= have else None)
                labels = labels if labels is not None else (lab if set(lab) <= have else None)
                break
        else:
            raise InputError(
                f"no known feature keys in {mat.path} (arrays found: {mat.describe()}); name them with "
                "--features-key KEY or --features-key TRAIN,QUERY,DATABASE"
            )
    for opt, ks in (("--features-key", feats), ("--aux-key", aux), ("--labels-key", labels)):
        if ks is not None:
            if len(ks) != len(feats):
                raise InputError(f"{opt} names {len(ks)} key(s) but the features use {len(feats)}; give as many")
            for k in ks:
                if k not in have:
                    raise InputError(f"key {k!r} ({opt}) is not in {mat.path}; arrays found: {mat.describe()}")
    return feats, aux, labels, preset


def _rows(a: Any) -> int:
    return int(a.shape[0]) if getattr(a, "ndim", 2) == 2 else int(np.asarray(a).size)


def _load_parts(mat: MatFile, keys: tuple[str, ...], fk: tuple[str, ...], n_parts: list[int], what: str) -> list[Any]:
    """The arrays ``keys`` (one per feature key), each checked to have its features' rows."""
    parts = []
    for j, (k, n) in enumerate(zip(keys, n_parts)):
        a = mat.get(k)
        if isinstance(a, H5Rows):
            a = a.read()
        if what == "labels" and getattr(a, "ndim", 2) == 2 and a.shape[0] == 1 and a.shape[1] == n:
            a = np.asarray(a).ravel()  # a MATLAB row vector of class indices
        if _rows(a) != n:
            raise InputError(f"{what} {k!r} has {_rows(a)} rows but features {fk[j]!r} have {n}"
                             " (MATLAB stores matrices transposed: try --transpose yes or no)")
        parts.append(a)
    return parts


def _aux(parts: list[Any], keys: tuple[str, ...], binarize: bool):
    """The aux parts stacked (sparse when any is), as 0/1 with ``binarize``, else checked to
    lie in [0, 1]."""
    if any(sp.issparse(a) for a in parts):
        aux = sp.vstack([sp.csr_matrix(a, dtype=np.float32) for a in parts], format="csr")
        vals = aux.data
    else:
        aux = np.concatenate([np.asarray(a, dtype=np.float32) for a in parts])
        vals = aux
    if binarize:
        if sp.issparse(aux):
            aux.data = (aux.data > 0).astype(np.float32)
            aux.eliminate_zeros()
        else:
            aux = (aux > 0).astype(np.float32)
    elif vals.size and (vals.min() < 0 or vals.max() > 1):
        raise InputError(
            f"aux {','.join(keys)} holds values in [{vals.min():g}, {vals.max():g}], outside [0, 1]; "
            "pass --binarize-aux to use (value > 0), or rescale it"
        )
    return aux


def build(
    path: str | os.PathLike,
    *,
    features_key: str | Sequence[str] | None = None,
    aux_key: str | Sequence[str] | None = None,
    labels_key: str | Sequence[str] | None = None,
    transpose: str = "auto",
    n_train: int = 5000,
    n_query: int = 1000,
    seed: int = 0,
    train_in_database: bool = True,
    binarize_aux: bool = False,
) -> tuple[Catalog, Any, MatFile]:
    """Read a ``.mat``/``.h5`` file into a catalog and its (lazy) feature matrix.

    Returns ``(catalog, features, matfile)``; close ``matfile`` after writing. ``n_train``,
    ``n_query``, ``seed`` and ``train_in_database`` apply to whole-array files only.
    """
    mat = MatFile(path, transpose)
    try:
        fk, ak, lk, preset = resolve_keys(mat, features_key, aux_key, labels_key)
        if ak is None:
            raise InputError(
                f"no aux (tags) keys found in {mat.path} (arrays found: {mat.describe()}); name them with --aux-key, "
                "or use `lagnh data import --features ... --aux A.npy` with aux from elsewhere"
            )
        f_parts = [mat.get(k) for k in fk]
        for k, f in zip(fk, f_parts):
            if sp.issparse(f) or getattr(f, "ndim", 0) != 2:
                raise InputError(f"features {k!r} in {mat.path} must be a dense 2-D matrix, got shape {getattr(f, 'shape', None)}")
        n_parts = [f.shape[0] for f in f_parts]
        aux = _aux(_load_parts(mat, ak, fk, n_parts, "aux"), ak, binarize_aux)
        labels = None
        if lk is not None:
            lab_parts = [as_multi_hot(a, f"labels {k!r}") for k, a in zip(lk, _load_parts(mat, lk, fk, n_parts, "labels"))]
            widths = {p.shape[1] for p in lab_parts}
            if len(widths) != 1:
                raise InputError(f"labels {','.join(lk)} have different numbers of classes: {sorted(widths)}")
            labels = np.concatenate(lab_parts)
        n = sum(n_parts)
        if len(fk) == 3:
            o = np.cumsum([0] + n_parts)
            splits = {"train": np.arange(o[0], o[1]), "query": np.arange(o[1], o[2]), "database": np.arange(o[2], o[3])}
            features = Stacked(f_parts)
            split_note = f"split from the file: {n_parts[0]} train, {n_parts[1]} queries, {n_parts[2]} database"
        else:
            splits = seeded_splits(n, n_train, n_query, seed, train_in_database=train_in_database)
            features = f_parts[0]
            split_note = (f"split drawn with seed {seed}: {len(splits['train'])} train, {len(splits['query'])} "
                          f"queries, {len(splits['database'])} database")
        catalog = Catalog(
            ids=[str(i) for i in range(n)],
            splits=splits,
            labels=labels,
            label_names=None,
            aux=aux,
            provenance={
                "source": "mat",
                "file": str(mat.path),
                "file_kind": mat.kind,
                "transposed": mat.transposed,
                "keys": {"features": list(fk), "aux": list(ak), "labels": list(lk) if lk else None},
                "preset": preset,
                **({"seed": seed, "train_in_database": train_in_database} if len(fk) == 1 else {}),
            },
            notes=[(f"{mat.path.name} ({mat.kind}{', read transposed' if mat.transposed else ''}): "
                   f"keys {', '.join(fk)} / {', '.join(ak)} / {', '.join(lk) if lk else 'no labels (trainable, not evaluable)'}"), split_note],
        )
        return catalog, features, mat
    except BaseException:
        mat.close()
        raise
