"""The dataset directory: the one on-disk format every stage reads.

Layout (format ``lagnh-dataset``, version 2; version 1 -- the same without views -- is
still read)::

    DATA_DIR/
      manifest.json        format, version, n_items, dims, dtypes, aux/label names,
                           split sizes, provenance, SHA-256 of every file below
      features.npy         N x d float32 or float16 (opened memory-mapped, never copied)
      aux.npy | aux.npz    N x c auxiliary semantics in [0, 1]: dense float32 .npy, or a
                           scipy CSR matrix (.npz) for large tag vocabularies
      labels.npy           optional N x m uint8 multi-hot ground truth (evaluation only)
      splits/train.npy     int64 row indices; likewise query.npy and database.npy
                           (train and database may overlap; query is disjoint from neither
                           by rule, `data info` reports overlaps)
      ids.txt              one item id a line, N lines
      paths.txt            optional: one image path a line, N lines
      views.npy            optional (version 2): V x K x d float16, features of K augmented
                           renderings of the items views_rows.npy names (opened memory-mapped)
      views_rows.npy       V sorted int64 row indices: the items that have views (e.g. the
                           training split; written by `lagnh data demo --views K`)

Rows are items; every split is an index array into those rows. Writers build the directory
in a temporary sibling and rename it into place, so an interrupted import never leaves a
directory that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..files import (
    atomic_dir,
    npy_header,
    read_json,
    read_lines,
    read_text,
    sha256_file,
    write_lines,
)
from ..report.provenance import software_versions

logger = logging.getLogger(__name__)

FORMAT = "lagnh-dataset"
VERSION = 2
#: versions this code reads: 1 is version 2 without the optional views
READ_VERSIONS = (1, 2)
SPLITS = ("train", "query", "database")
CHUNK_ROWS = 65536


def _check_finite(name: str, block: np.ndarray, start: int) -> None:
    """Refuse NaN/inf in ``block``, which must already have the stored dtype (a float64
    value beyond float32's range becomes inf only in the cast)."""
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        bad = np.argwhere(~np.isfinite(block))[0]
        raise InputError(
            f"{name} contain NaN or inf (first at row {start + int(bad[0])}, column {int(bad[1])}) when stored "
            f"as {block.dtype} (values beyond {np.finfo(block.dtype).max:.3g} overflow); clean the {name} before importing"
        )


def as_stored(block: Any, dtype: Any) -> np.ndarray:
    """``block`` cast to the stored ``dtype`` without numpy's overflow RuntimeWarning (the
    overflow is reported by :func:`_check_finite` as one error instead)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(block, dtype=dtype)


def _as_2d(name: str, array: Any) -> Any:
    if getattr(array, "ndim", None) != 2:
        raise InputError(f"{name} must be a 2-D array (items x dims), got shape {getattr(array, 'shape', None)}")
    return array


class _NpyRows:
    """A preallocated .npy file filled by row blocks through seek+write.

    Unlike a writable memmap, written pages go to the page cache rather than staying in the
    process's resident set, so streaming 1M x 4096 rows keeps RSS bounded by one block.
    """

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, int]) -> None:
        m = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self.offset = m.offset
        del m
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.dtype.itemsize * shape[1]
        self.f = open(path, "r+b")

    def __setitem__(self, rows: slice, block: Any) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        self.f.seek(self.offset + rows.start * self.row_bytes)
        self.f.write(block.tobytes())

    def flush(self) -> None:
        self.f.flush()
        self.f.close()


class DatasetWriter:
    """Stream a dataset directory to disk in row chunks with bounded memory.

    Example::

        with DatasetWriter(out, n=1000, feature_dim=512, aux_dim=20, label_dim=10) as w:
            w.write_rows(0, feats, aux, labels)
            w.set_splits(train=..., query=..., database=...)

    Args:
        out: the dataset directory to create (must not exist unless ``overwrite``).
        n: number of items (rows).
        feature_dim: d. aux_dim: c. label_dim: m, or ``None`` when there are no labels.
        feature_dtype: ``"float32"`` or ``"float16"``.
        aux_sparse: store aux as a CSR ``aux.npz`` (large tag vocabularies).
        aux_names / label_names: optional names of the aux and label columns.
        provenance: free-form JSON-able dict recorded in the manifest.
        overwrite: replace an existing ``out``, only if it is a dataset directory this
            project wrote that holds none of ``inputs`` (files the rows are read from).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        n: int,
        feature_dim: int,
        aux_dim: int,
        *,
        label_dim: int | None = None,
        feature_dtype: str = "float32",
        aux_sparse: bool = False,
        aux_names: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        provenance: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        inputs: Iterable[str | os.PathLike] = (),
    ) -> None:
        if n <= 0:
            raise InputError(f"a dataset needs at least one item, got n={n}")
        if feature_dim <= 0 or aux_dim <= 0:
            raise InputError(f"feature and aux dimensions must be positive, got {feature_dim} and {aux_dim}")
        if feature_dtype not in ("float32", "float16"):
            raise InputError(f"feature dtype must be float32 or float16, got {feature_dtype}")
        if aux_names is not None and len(aux_names) != aux_dim:
            raise InputError(f"{len(aux_names)} aux names given for {aux_dim} aux columns")
        if label_names is not None and label_dim is not None and len(label_names) != label_dim:
            raise InputError(f"{len(label_names)} label names given for {label_dim} label columns")
        self.out = Path(out)
        self.n, self.feature_dim, self.aux_dim, self.label_dim = n, feature_dim, aux_dim, label_dim
        self.feature_dtype, self.aux_sparse = feature_dtype, aux_sparse
        self.aux_names = list(aux_names) if aux_names is not None else None
        self.label_names = list(label_names) if label_names is not None else None
        self.provenance = dict(provenance or {})
        self.overwrite = overwrite
        self.inputs = list(inputs)
        self._splits: dict[str, np.ndarray] = {}
        self._ids: list[str] | None = None
        self._paths: list[str] | None = None
        self._written = np.zeros(0, dtype=bool)
        self._sparse_blocks: list[tuple[int, sp.csr_matrix]] = []
        self._views: dict | None = None

    # -- context management -------------------------------------------------------------
    def __enter__(self) -> "DatasetWriter":
        self._ctx = atomic_dir(self.out, overwrite=self.overwrite, formats=(FORMAT,), inputs=self.inputs)
        self.tmp = self._ctx.__enter__()
        self._features = _NpyRows(self.tmp / "features.npy", self.feature_dtype, (self.n, self.feature_dim))
        self._aux = None
        if not self.aux_sparse:
            self._aux = _NpyRows(self.tmp / "aux.npy", np.float32, (self.n, self.aux_dim))
        self._labels = None
        if self.label_dim is not None:
            self._labels = _NpyRows(self.tmp / "labels.npy", np.uint8, (self.n, self.label_dim))
        self._written = np.zeros(self.n, dtype=bool)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._finalize()
        except BaseException as e:  # clean up the temporary directory on a late failure
            self._close_maps()
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        self._close_maps()
        return bool(self._ctx.__exit__(exc_type, exc, tb))

    def _close_maps(self) -> None:
        for name in ("_features", "_aux", "_labels"):
            m = getattr(self, name, None)
            if m is not None:
                m.flush()
                setattr(self, name, None)

    # -- filling ----------------------------------------------------------------------
    def write_rows(self, start: int, features: Any, aux: Any, labels: Any | None = None) -> None:
        """Write rows ``start : start + len(features)`` (validated: finite, in range, shapes)."""
        features = _as_2d("features", features)
        rows = features.shape[0]
        stop = start + rows
        if start < 0 or stop > self.n:
            raise InputError(f"rows {start}:{stop} fall outside the dataset's {self.n} items")
        if features.shape[1] != self.feature_dim:
            raise InputError(f"features have {features.shape[1]} columns, expected {self.feature_dim}")
        # checked after the cast to the stored dtype: 1e39 is finite in float64, inf in float32
        features = as_stored(features, self.feature_dtype)
        _check_finite("features", features, start)
        self._features[start:stop] = features
        if sp.issparse(aux):
            with np.errstate(over="ignore", invalid="ignore"):
                aux = sp.csr_matrix(aux, dtype=np.float32)
            if aux.shape != (rows, self.aux_dim):
                raise InputError(f"aux block has shape {aux.shape}, expected {(rows, self.aux_dim)}")
            vals = aux.data
        else:
            aux = as_stored(_as_2d("aux", aux), np.float32)
            if aux.shape != (rows, self.aux_dim):
                raise InputError(f"aux has shape {aux.shape}, expected {(rows, self.aux_dim)} (one row per item)")
            vals = aux
        _check_finite("aux", vals.reshape(-1, 1) if vals.ndim == 1 else vals, start)
        if vals.size and (vals.min() < 0 or vals.max() > 1):
            raise InputError(
                f"aux values must lie in [0, 1] (multi-hot or scores); found range [{vals.min():g}, {vals.max():g}]"
            )
        if self.aux_sparse:
            self._sparse_blocks.append((start, sp.csr_matrix(aux)))
        else:
            self._aux[start:stop] = aux.toarray() if sp.issparse(aux) else aux
        if self.label_dim is not None:
            if labels is None:
                raise InputError("this dataset has labels: pass a labels block for every row chunk")
            labels = np.asarray(_as_2d("labels", labels))
            if labels.shape != (rows, self.label_dim):
                raise InputError(f"labels have shape {labels.shape}, expected {(rows, self.label_dim)}")
            if labels.size and not np.isin(labels, (0, 1)).all():
                raise InputError("labels must be multi-hot (0/1 values)")
            self._labels[start:stop] = labels
        elif labels is not None:
            raise InputError("labels given for a dataset created without label_dim")
        self._written[start:stop] = True

    def set_splits(self, **splits: Any) -> None:
        """Set the ``train``, ``query`` and ``database`` index arrays (int, in range, no repeats)."""
        for name, idx in splits.items():
            if name not in SPLITS:
                raise InputError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
            self._splits[name] = validate_split(name, idx, self.n)

    def set_ids(self, ids: Sequence[Any]) -> None:
        if len(ids) != self.n:
            raise InputError(f"{len(ids)} item ids given for {self.n} items")
        from ..text import check_texts

        ids = [str(i) for i in ids]
        if any(i == "" for i in ids):
            raise InputError("item ids must be non-empty")
        check_texts(ids, "item id")  # one a line in ids.txt: no line break, no control character
        if len(set(ids)) != len(ids):
            raise InputError("item ids must be unique")
        self._ids = ids

    def set_views(self, rows: Any, views: Any, recipe: Mapping[str, Any] | None = None) -> None:
        """Store features of K augmented views of the items ``rows``: ``views`` (len(rows), K, d).

        Kept as float16 (memory-mapped on reading); ``recipe`` (JSON-able) says how the views
        were made and is recorded in the manifest.
        """
        rows = validate_split("views", rows, self.n)
        views = np.asarray(views)
        if views.ndim != 3 or views.shape[0] != len(rows) or views.shape[2] != self.feature_dim or views.shape[1] < 1:
            raise InputError(
                f"views must have shape (rows, K, {self.feature_dim}) with one entry per row, got {views.shape} for {len(rows)} rows"
            )
        order = np.argsort(rows, kind="stable")
        v16 = views[order].astype(np.float16)
        if not np.isfinite(v16).all():
            raise InputError("views contain NaN or inf (or values beyond float16's range)")
        np.save(self.tmp / "views.npy", v16)
        np.save(self.tmp / "views_rows.npy", rows[order])
        self._views = {"file": "views.npy", "rows_file": "views_rows.npy", "rows": int(len(rows)),
                       "k": int(views.shape[1]), "dim": self.feature_dim, "dtype": "float16",
                       "recipe": dict(recipe or {})}

    def set_paths(self, paths: Sequence[Any]) -> None:
        if len(paths) != self.n:
            raise InputError(f"{len(paths)} image paths given for {self.n} items")
        self._paths = [str(p) for p in paths]
        bad = next((i for i, p in enumerate(self._paths) if "\n" in p or "\r" in p), None)
        if bad is not None:  # paths.txt holds one a line
            raise InputError(f"image path #{bad + 1} {self._paths[bad][:80]!r} holds a line break; rename the file")

    # -- finishing --------------------------------------------------------------------
    def _finalize(self) -> None:
        if not self._written.all():
            first = int(np.argmin(self._written))
            raise InputError(f"row {first} of {self.n} was never written")
        missing = [s for s in SPLITS if s not in self._splits]
        if missing:
            raise InputError(f"missing split(s): {', '.join(missing)}")
        for s in SPLITS:
            if len(self._splits[s]) == 0:
                raise InputError(f"the {s} split is empty")
        tmp = self.tmp
        self._close_maps()
        if self.aux_sparse:
            self._sparse_blocks.sort(key=lambda b: b[0])
            aux = sp.vstack([b for _, b in self._sparse_blocks], format="csr", dtype=np.float32)
            sp.save_npz(tmp / "aux.npz", aux, compressed=False)
            self._sparse_blocks = []
        (tmp / "splits").mkdir()
        for s in SPLITS:
            np.save(tmp / "splits" / f"{s}.npy", self._splits[s])
        ids = self._ids if self._ids is not None else [str(i) for i in range(self.n)]
        (tmp / "ids.txt").write_text("\n".join(ids) + "\n")
        if self._paths is not None:  # file names as the OS gives them (bytes that are not UTF-8 included)
            write_lines(tmp / "paths.txt", self._paths)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "n_items": self.n,
            "features": {"file": "features.npy", "dim": self.feature_dim, "dtype": self.feature_dtype},
            "aux": {
                "file": "aux.npz" if self.aux_sparse else "aux.npy",
                "dim": self.aux_dim,
                "storage": "sparse" if self.aux_sparse else "dense",
                "names": self.aux_names,
            },
            "labels": None
            if self.label_dim is None
            else {"file": "labels.npy", "dim": self.label_dim, "names": self.label_names},
            "splits": {s: int(len(self._splits[s])) for s in SPLITS},
            "has_paths": self._paths is not None,
            **({"views": self._views} if self._views is not None else {}),
            "provenance": {**self.provenance, "software": software_versions()},
            "checksums": {f: sha256_file(tmp / f) for f in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def validate_split(name: str, idx: Any, n: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 1:
        raise InputError(f"the {name} split must be a 1-D index array, got shape {idx.shape}")
    if idx.size and idx.dtype.kind not in "iu":
        if idx.dtype.kind == "b":
            raise InputError(f"the {name} split is a boolean mask; pass row indices (np.flatnonzero(mask))")
        if idx.dtype.kind == "f" and np.all(np.mod(idx, 1) == 0):
            idx = idx.astype(np.int64)
        else:
            raise InputError(f"the {name} split must hold integer row indices, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(
            f"the {name} split has indices out of range [0, {n}) (min {idx.min()}, max {idx.max()})"
        )
    if np.unique(idx).size != idx.size:
        raise InputError(f"the {name} split repeats some indices")
    return idx


def write_dataset(
    out: str | os.PathLike,
    features: Any,
    aux: Any,
    *,
    labels: Any | None = None,
    splits: Mapping[str, Any],
    ids: Sequence[Any] | None = None,
    paths: Sequence[Any] | None = None,
    aux_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    aux_sparse: bool | None = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    chunk_rows: int = CHUNK_ROWS,
) -> Path:
    """Write arrays (in memory or memory-mapped) as a dataset directory, chunk by chunk.

    Features of dtype float16 stay float16; any other float dtype is stored as float32.
    ``aux`` may be dense or scipy-sparse; ``aux_sparse=None`` keeps its storage kind.
    """
    features = _as_2d("features", features)
    n = features.shape[0]
    if getattr(aux, "shape", (None,))[0] != n:
        raise InputError(f"aux has {getattr(aux, 'shape', ('?',))[0]} rows but features have {n}: row counts must match")
    _as_2d("aux", aux)
    if labels is not None:
        _as_2d("labels", labels)
        if labels.shape[0] != n:
            raise InputError(f"labels have {labels.shape[0]} rows but features have {n}: row counts must match")
    if features.dtype.kind not in "fiu":
        raise InputError(f"features must be numeric, got dtype {features.dtype}")
    dtype = "float16" if features.dtype == np.float16 else "float32"
    if aux_sparse is None:
        aux_sparse = sp.issparse(aux)
    if sp.issparse(aux):
        aux = sp.csr_matrix(aux)
    with DatasetWriter(
        out,
        n,
        features.shape[1],
        aux.shape[1],
        label_dim=None if labels is None else labels.shape[1],
        feature_dtype=dtype,
        aux_sparse=aux_sparse,
        aux_names=aux_names,
        label_names=label_names,
        provenance=provenance,
        overwrite=overwrite,
        inputs=inputs,
    ) as w:
        for s in range(0, n, chunk_rows):
            e = min(n, s + chunk_rows)
            w.write_rows(
                s,
                np.asarray(features[s:e]),
                aux[s:e] if sp.issparse(aux) else np.asarray(aux[s:e]),
                None if labels is None else np.asarray(labels[s:e]),
            )
        w.set_splits(**dict(splits))
        if ids is not None:
            w.set_ids(ids)
        if paths is not None:
            w.set_paths(paths)
    _warn_query_in_train(w._splits)
    return Path(out)


def _warn_query_in_train(splits: Mapping[str, np.ndarray]) -> None:
    """A query that is also a training item measures memorisation, not retrieval: say so."""
    both = np.intersect1d(splits["query"], splits["train"]).size
    if both == len(splits["query"]) == len(splits["train"]):
        logger.warning("warning: the query split is identical to the train split; MAP on it measures training items")
    elif both:
        logger.warning("warning: %d of the %d queries are also training items", both, len(splits["query"]))


@dataclass
class Dataset:
    """A dataset directory opened for reading; arrays are memory-mapped on first use.

    Example::

        ds = Dataset.open("data/coco")
        X = ds.feature_rows(ds.split("train"))   # float32 copy of the training rows only
    """

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"dataset directory {root} does not exist")
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise InputError(f"{root} is not a dataset directory (no manifest.json); create one with `lagnh data import`")
        manifest = read_json(mpath, "dataset manifest")
        if manifest.get("format") != FORMAT:
            raise InputError(f"{mpath} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
        if manifest.get("version") not in READ_VERSIONS:
            raise InputError(
                f"{root} uses dataset format version {manifest.get('version')}; this lagnh-pyg reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}"
            )
        for f in manifest.get("checksums", {}):
            if not (root / f).is_file():
                raise InputError(f"dataset file {root / f} is missing")
        ds = cls(root, manifest)
        ds.check_shapes()
        return ds

    def check_shapes(self) -> None:
        """Every file's row count, shape and dtype against the manifest, from .npy headers
        and line counts (cheap: no data read, no checksum; ``verify`` does those)."""
        n, m = self.n, self.manifest

        def npy(name: str, shape: tuple, dtype: Any = None) -> None:
            got, dt = npy_header(self.root / name, f"dataset {self.root}")
            if got != shape or (dtype is not None and dt != np.dtype(dtype)):
                raise InputError(f"dataset file {self.root / name} has shape {got} ({dt}) but the manifest says "
                                 f"{shape}{f' ({dtype})' if dtype else ''}; re-import the dataset")

        npy("features.npy", (n, self.feature_dim), m["features"]["dtype"])
        if m["aux"]["storage"] == "sparse":
            try:
                with np.load(self.root / "aux.npz", allow_pickle=False) as z:
                    shape = tuple(int(v) for v in z["shape"])
            except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):
                raise InputError(f"dataset file {self.root / 'aux.npz'} is not a readable sparse matrix; re-import the dataset") from None
            if shape != (n, self.aux_dim):
                raise InputError(f"dataset file {self.root / 'aux.npz'} has shape {shape} but the manifest says {(n, self.aux_dim)}")
        else:
            npy("aux.npy", (n, self.aux_dim))
        if self.has_labels:
            npy("labels.npy", (n, self.label_dim))
        for split, size in m["splits"].items():
            npy(f"splits/{split}.npy", (int(size),))
        if m.get("views"):
            v = m["views"]
            npy(v["file"], (int(v["rows"]), int(v["k"]), int(v["dim"])), v.get("dtype"))
            npy(v["rows_file"], (int(v["rows"]),))
        for name in ("ids.txt",) + (("paths.txt",) if m.get("has_paths") else ()):
            lines = _count_lines(self.root / name)
            if lines != n:
                raise InputError(f"dataset file {self.root / name} has {lines} lines for {n} items; re-import the dataset")

    # -- shapes ---------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.manifest["n_items"])

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["features"]["dim"])

    @property
    def aux_dim(self) -> int:
        return int(self.manifest["aux"]["dim"])

    @property
    def label_dim(self) -> int | None:
        lab = self.manifest.get("labels")
        return None if lab is None else int(lab["dim"])

    @property
    def has_labels(self) -> bool:
        return self.manifest.get("labels") is not None

    @property
    def aux_names(self) -> list[str] | None:
        return self.manifest["aux"].get("names")

    @property
    def label_names(self) -> list[str] | None:
        lab = self.manifest.get("labels")
        return None if lab is None else lab.get("names")

    @property
    def fingerprint(self) -> str:
        """A short digest of the dataset's file checksums (identifies its exact contents)."""
        import hashlib

        blob = json.dumps(self.manifest.get("checksums", {}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # -- arrays ---------------------------------------------------------------------------
    @property
    def features(self) -> np.ndarray:
        """N x d features, memory-mapped read-only (float32 or float16)."""
        if not hasattr(self, "_features"):
            self._features = np.load(self.root / "features.npy", mmap_mode="r")
        return self._features

    @property
    def aux(self) -> np.ndarray | sp.csr_matrix:
        """N x c aux semantics: a read-only memmap (dense) or a CSR matrix (sparse)."""
        if not hasattr(self, "_aux"):
            if self.manifest["aux"]["storage"] == "sparse":
                self._aux = sp.load_npz(self.root / "aux.npz").tocsr()
            else:
                self._aux = np.load(self.root / "aux.npy", mmap_mode="r")
        return self._aux

    @property
    def labels(self) -> np.ndarray | None:
        if not self.has_labels:
            return None
        if not hasattr(self, "_labels"):
            self._labels = np.load(self.root / "labels.npy", mmap_mode="r")
        return self._labels

    def require_labels(self, why: str = "evaluation") -> np.ndarray:
        if not self.has_labels:
            raise InputError(f"{why} needs ground-truth labels, and dataset {self.root} has none")
        return self.labels

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return np.load(self.root / "splits" / f"{name}.npy")

    def feature_rows(self, idx: Any | None = None) -> np.ndarray:
        """float32 copy of the rows ``idx`` (all rows when ``None``)."""
        f = self.features
        rows = f if idx is None else f[_sorted_take(idx)]
        return np.ascontiguousarray(rows, dtype=np.float32)

    def aux_rows(self, idx: Any | None = None) -> np.ndarray:
        """Dense float32 aux of the rows ``idx`` (all rows when ``None``)."""
        a = self.aux
        rows = a if idx is None else a[_sorted_take(idx)]
        if sp.issparse(rows):
            rows = rows.toarray()
        return np.ascontiguousarray(rows, dtype=np.float32)

    def label_rows(self, idx: Any | None = None) -> np.ndarray:
        lab = self.require_labels()
        rows = lab if idx is None else lab[_sorted_take(idx)]
        return np.ascontiguousarray(rows, dtype=np.uint8)

    def iter_rows(self, idx: np.ndarray, chunk: int = CHUNK_ROWS) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(idx_chunk, features, aux)`` chunks (bounded memory for huge splits)."""
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            yield part, self.feature_rows(part), self.aux_rows(part)

    # -- augmented views (format version 2) ---------------------------------------------------
    @property
    def has_views(self) -> bool:
        return self.manifest.get("views") is not None

    @property
    def views(self) -> np.ndarray:
        """V x K x d float16 views, memory-mapped read-only (rows: :meth:`views_index`)."""
        if not self.has_views:
            raise InputError(f"dataset {self.root} has no stored views (build it with `lagnh data demo --views K`)")
        if not hasattr(self, "_views"):
            self._views = np.load(self.root / self.manifest["views"]["file"], mmap_mode="r")
        return self._views

    def views_index(self) -> np.ndarray:
        """The sorted dataset rows that have views (row i of :attr:`views` belongs to item ``views_index()[i]``)."""
        return np.load(self.root / self.manifest["views"]["rows_file"]) if self.has_views else np.zeros(0, np.int64)

    def views_of(self, idx: Any) -> np.ndarray:
        """float32 ``(len(idx), K, d)`` views of the items ``idx`` (each must have views)."""
        views = self.views  # refuses a dataset without views
        idx = np.asarray(idx, dtype=np.int64)
        rows = self.views_index()
        pos = np.minimum(np.searchsorted(rows, idx), max(0, len(rows) - 1))
        missing = idx[rows[pos] != idx] if len(idx) and len(rows) else idx
        if len(missing):
            raise InputError(f"{len(missing)} requested item(s) have no stored views in {self.root} (first: row {missing[0]})")
        return np.ascontiguousarray(views[pos], dtype=np.float32)

    @property
    def ids(self) -> list[str]:
        if not hasattr(self, "_ids"):
            self._ids = read_text(self.root / "ids.txt", "dataset ids").splitlines()
        return self._ids

    @property
    def paths(self) -> list[str] | None:
        p = self.root / "paths.txt"
        if not p.is_file():
            return None
        if not hasattr(self, "_paths"):
            self._paths = read_lines(p)
        return self._paths

    def verify(self) -> list[str]:
        """Recompute every file's SHA-256; return the files whose checksum differs."""
        return [f for f, h in self.manifest.get("checksums", {}).items() if sha256_file(self.root / f) != h]

    def check_values(self) -> list[str]:
        """Problems in the stored values, read chunk by chunk: NaN/inf features, aux outside
        [0, 1] (a dataset written by an older version, or edited after import)."""
        problems = []
        for name, arr in (("features", self.features), ("aux", self.aux)):
            bad = 0
            for s in range(0, self.n, CHUNK_ROWS):
                blk = arr[s : s + CHUNK_ROWS]
                vals = blk.data if sp.issparse(blk) else np.asarray(blk)
                ok = np.isfinite(vals) if name == "features" else (vals >= 0) & (vals <= 1)
                bad += int(vals.size - np.count_nonzero(ok))
            if bad:
                problems.append(f"{bad} {'non-finite' if name == 'features' else 'out-of-range (not in [0, 1])'} "
                                f"{name} values")
        return problems

    def info(self) -> dict:
        """Shapes, label and aux cardinality, empty rows, split sizes and overlaps."""
        n = self.n
        aux_nnz_rows = np.zeros(n, dtype=np.int32)
        aux_col = np.zeros(self.aux_dim, dtype=np.int64)
        a = self.aux
        for s in range(0, n, CHUNK_ROWS):
            blk = a[s : s + CHUNK_ROWS]
            nz = (blk > 0) if not sp.issparse(blk) else (blk > 0).astype(np.int32)
            aux_nnz_rows[s : s + CHUNK_ROWS] = np.asarray(nz.sum(1)).ravel()
            aux_col += np.asarray(nz.sum(0)).ravel().astype(np.int64)
        out: dict[str, Any] = {
            "root": str(self.root),
            "n_items": n,
            "features": {"dim": self.feature_dim, "dtype": self.manifest["features"]["dtype"]},
            "aux": {
                "dim": self.aux_dim,
                "storage": self.manifest["aux"]["storage"],
                "mean_nonzero_per_item": float(aux_nnz_rows.mean()),
                "empty_rows": int((aux_nnz_rows == 0).sum()),
                "unused_columns": int((aux_col == 0).sum()),
            },
            "labels": None,
        }
        if self.has_labels:
            lab_rows = np.zeros(n, dtype=np.int32)
            lab_col = np.zeros(self.label_dim, dtype=np.int64)
            for s in range(0, n, CHUNK_ROWS):
                blk = np.asarray(self.labels[s : s + CHUNK_ROWS])
                lab_rows[s : s + CHUNK_ROWS] = blk.sum(1, dtype=np.int64)
                lab_col += blk.sum(0, dtype=np.int64)
            out["labels"] = {
                "dim": self.label_dim,
                "mean_labels_per_item": float(lab_rows.mean()),
                "empty_rows": int((lab_rows == 0).sum()),
                "items_per_label_min": int(lab_col.min()),
                "items_per_label_max": int(lab_col.max()),
            }
        splits = {s: self.split(s) for s in SPLITS}
        out["splits"] = {s: int(len(v)) for s, v in splits.items()}
        out["overlaps"] = {
            f"{a_}&{b_}": int(np.intersect1d(splits[a_], splits[b_], assume_unique=True).size)
            for a_, b_ in (("train", "query"), ("train", "database"), ("query", "database"))
        }
        out["has_paths"] = bool(self.manifest.get("has_paths"))
        out["provenance"] = {k: v for k, v in self.manifest.get("provenance", {}).items() if k != "software"}
        return out


def _count_lines(path: Path, chunk: int = 1 << 24) -> int:
    """Lines of a text file (a last line without newline counts), read in chunks."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(chunk):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _sorted_take(idx: Any) -> Any:
    """Index for fancy reads: slices pass through; arrays are used as given (order kept)."""
    if isinstance(idx, slice):
        return idx
    return np.asarray(idx, dtype=np.int64)
