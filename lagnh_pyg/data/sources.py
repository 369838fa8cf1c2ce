"""What every importer shares: a catalog of items, given arrays aligned to it by id, seeded
splits, and the one write step into the dataset directory.

An importer (``coco``, ``nuswide``, ``folder``) first builds a :class:`Catalog` — the items'
ids, labels, tags, image paths and the protocol's splits — from the dataset's own files. It
needs no features, so feature extraction can build the same catalog, compute features for
``catalog.paths`` and hand them to :func:`write_catalog`. Features (and aux, where the dataset
has no tags) that already exist as ``.npy`` files are aligned to the catalog by item id.

Arrays are never copied whole: rows are gathered chunk by chunk from memory-mapped inputs
(:class:`RowTake`), so a 1M x 4096 feature file is read once, in pieces.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..files import npy_header, read_lines, read_text, text_lines
from .store import as_stored, write_dataset

logger = logging.getLogger(__name__)

#: aux with at least this many columns is stored sparse (tag vocabularies) unless told otherwise
SPARSE_AUX_MIN_COLUMNS = 256


def require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    return path


def load_matrix(path: str | os.PathLike, what: str) -> np.ndarray | sp.csr_matrix:
    """A 2-D array from ``.npy`` (memory-mapped, never loaded whole) or a scipy-sparse ``.npz``."""
    path = require_file(path, what)
    if path.suffix != ".npz":
        npy_header(path, what)  # a truncated or foreign file: one clear error before mapping it
    try:
        if path.suffix == ".npz":
            with open(path, "rb") as fh:  # ours to close: numpy leaks its handle on a broken zip
                try:
                    return sp.load_npz(fh).tocsr()
                except (ValueError, KeyError, EOFError, zipfile.BadZipFile):
                    fh.seek(0)
                    with np.load(fh, allow_pickle=False) as z:
                        if len(z.files) != 1:
                            raise InputError(
                                f"{what} file {path} is an .npz with arrays {z.files}; give one .npy or a "
                                "scipy.sparse.save_npz file"
                            ) from None
                        return z[z.files[0]]
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot read {what} file {path} (not a .npy or scipy .npz file?): {msg}") from None


def read_ids(path: str | os.PathLike, what: str = "id list") -> list[str]:
    """Item ids from a text file (one a line) or a 1-D ``.npy`` array (numbers or strings)."""
    path = require_file(path, what)
    if path.suffix == ".npy":
        npy_header(path, what)
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"cannot read {what} file {path}: {e} (save ids as numbers or fixed-width strings)") from None
        if arr.ndim != 1:
            raise InputError(f"{what} file {path} must hold a 1-D array, got shape {arr.shape}")
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        ids = [str(x) for x in arr.tolist()]
    else:
        lines = text_lines(read_text(path, what))
        while lines and not lines[-1].strip():
            lines.pop()
        ids = [s.strip() for s in lines]
        if "" in ids:
            raise InputError(f"{what} file {path} has an empty line (line {ids.index('') + 1})")
    seen: dict[str, int] = {}
    for i, s in enumerate(ids):
        if s in seen:
            raise InputError(f"{what} file {path} repeats id {s!r} (lines {seen[s] + 1} and {i + 1})")
        seen[s] = i
    return ids


class RowTake:
    """Rows ``index`` of a 2-D array (a memmap, an h5py dataset, ...), gathered lazily.

    Quacks like the arrays :func:`~lagnh_pyg.data.store.write_dataset` reads: ``shape``,
    ``ndim``, ``dtype`` and ``view[start:stop]``, which reads only those rows, in file order.
    """

    def __init__(self, base: Any, index: Any) -> None:
        self.base = base
        self.index = np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index),) + tuple(base.shape[1:])
        self.ndim = len(self.shape)
        self.dtype = base.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self.index[key]
        order = np.argsort(rows, kind="stable")
        block = np.asarray(self.base[rows[order]])  # increasing indices: sequential reads, h5py-safe
        out = np.empty_like(block)
        out[order] = block
        return out


def take_rows(array: Any, index: np.ndarray) -> Any:
    """``array[index]`` without copying: the array itself when index is 0..n-1, else a view."""
    if sp.issparse(array):
        return array.tocsr()[index]
    if len(index) == array.shape[0] and np.array_equal(index, np.arange(array.shape[0])):
        return array
    return RowTake(array, index)


def as_multi_hot(labels: Any, what: str = "labels") -> np.ndarray:
    """N x m 0/1 labels as uint8; a 1-D (or N x 1) vector of class indices becomes one-hot."""
    if sp.issparse(labels):
        labels = labels.toarray()
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1 and labels.size and labels.max() > 1:
        labels = labels[:, 0]
    if labels.ndim == 1:
        if labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0):
            raise InputError(f"{what} form a 1-D vector of non-integer values; give class indices or a multi-hot matrix")
        classes, inverse = np.unique(labels, return_inverse=True)
        out = np.zeros((labels.size, classes.size), dtype=np.uint8)
        out[np.arange(labels.size), inverse] = 1
        return out
    if labels.ndim != 2:
        raise InputError(f"{what} must be N x m multi-hot or a vector of class indices, got shape {labels.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        vals = np.unique(labels)
        if vals.size == 2 and vals[0] == -1 and vals[1] == 1:  # +-1 coding of some MATLAB code bases
            return (labels > 0).astype(np.uint8)
        raise InputError(f"{what} must be multi-hot (0/1), found values {vals[:6].tolist()}")
    return labels.astype(np.uint8, copy=False)


def seeded_splits(
    n: int, n_train: int, n_query: int, seed: int = 0, *, train_in_database: bool = True
) -> dict[str, np.ndarray]:
    """Random query / train / database splits of ``n`` items.

    Queries are drawn first; training items come from the rest; the database is every
    non-query item (``train_in_database``) or every item in neither query nor train.
    Index arrays are sorted.
    """
    if n_query < 1 or n_train < 1:
        raise InputError(f"--n-query and --n-train must be at least 1, got {n_query} and {n_train}")
    spare = n - n_query - (0 if train_in_database else n_train)
    if n_query + n_train > n or spare < 1:
        raise InputError(
            f"{n} items cannot hold {n_query} queries and {n_train} training items and still leave a database; "
            "lower --n-query / --n-train"
        )
    perm = np.random.default_rng(seed).permutation(n)
    query = np.sort(perm[:n_query])
    train = np.sort(perm[n_query : n_query + n_train])
    database = np.sort(perm[n_query:] if train_in_database else perm[n_query + n_train :])
    return {"train": train, "query": query, "database": database}


@dataclass
class Catalog:
    """The items of a dataset before features are attached.

    Args:
        ids: N unique item ids; their order is the row order of the dataset.
        splits: ``train``/``query``/``database`` index arrays into those rows.
        labels: optional N x m uint8 multi-hot ground truth; ``label_names`` its columns.
        aux: optional N x c tags in [0, 1] (dense or CSR); ``aux_names`` its columns.
        paths: optional N image paths.
        source_rows: row of each item in the source's full image list, when the source has
            one (features aligned with that list need no id file).
        aliases: other keys (file names, stems) that name a row when aligning given arrays.
        aux_hint: what to tell a user who gave no aux and the catalog has none.
        provenance: recorded in the manifest. notes: human-readable counts for the CLI.
        warnings: what the CLI says on stderr after a successful write.
    """

    ids: list[str]
    splits: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    aux: np.ndarray | sp.csr_matrix | None = None
    aux_names: list[str] | None = None
    paths: list[str] | None = None
    source_rows: np.ndarray | None = None
    aliases: dict[str, int] = field(default_factory=dict)
    aux_hint: str = "pass --aux A.npy (N x c auxiliary semantics in [0, 1])"
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # said on stderr only once the dataset is written: before an error they would break the
    # one-line contract (README "Command line")
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ids)

    def _lookup(self) -> dict[str, int]:
        if not hasattr(self, "_keys"):
            keys = dict(self.aliases)
            keys.update({k: i for i, k in enumerate(self.ids)})
            self._keys = keys
        return self._keys

    def row_of(self, key: str) -> int | None:
        """The row an id names: the id itself, an alias, its file name, stem, or integer value."""
        keys = self._lookup()
        key = key.strip()
        if key in keys:
            return keys[key]
        p = Path(key.replace("\\", "/"))
        for k in (p.name, p.stem):
            if k in keys:
                return keys[k]
        if p.stem.isdigit() and str(int(p.stem)) in keys:
            return keys[str(int(p.stem))]
        return None

    def gather_index(self, given_ids: Sequence[str] | None, n_rows: int, what: str, option: str) -> np.ndarray:
        """For each catalog item, its row in a given array of ``n_rows`` rows.

        With ``given_ids`` (one id a row of the array) rows are matched by id; rows naming no
        catalog item are skipped (counted in the log). Without ids the array must have one row
        per catalog item, or one per image of the source's full list (``source_rows``).
        """
        if given_ids is None:
            if n_rows == self.n:
                return np.arange(self.n)
            if self.source_rows is not None and n_rows == int(self.provenance.get("source_items", -1)):
                return np.asarray(self.source_rows, dtype=np.int64)
            full = self.provenance.get("source_items")
            expected = f"{self.n} (the imported items)" + (f" or {full} (the full image list)" if full else "")
            raise InputError(
                f"{what} have {n_rows} rows but {expected} are expected; pass {option} with one id a row to align them"
            )
        if len(given_ids) != n_rows:
            raise InputError(f"{option} lists {len(given_ids)} ids but the {what} have {n_rows} rows")
        src = np.full(self.n, -1, dtype=np.int64)
        unmatched = 0
        for j, key in enumerate(given_ids):
            r = self.row_of(str(key))
            if r is None:
                unmatched += 1
                continue
            if src[r] >= 0:
                raise InputError(f"{option}: ids on rows {src[r] + 1} and {j + 1} both name item {self.ids[r]!r}")
            src[r] = j
        missing = np.flatnonzero(src < 0)
        if missing.size:
            first = ", ".join(self.ids[i] for i in missing[:5])
            raise InputError(
                f"the {what} lack {missing.size} of the {self.n} imported items (first: {first}); "
                f"{option} must cover every item"
            )
        if unmatched:
            self.warnings.append(f"{unmatched} {what} rows name no imported item and are left out")
        return src


EXTRACT_FORMAT = "lagnh-extract"  # the output of `lagnh extract ...` (lagnh_pyg.extract)


@dataclass
class Extraction:
    """An extraction directory (``lagnh extract features|objects``) that a given array file
    lives in: its manifest, row ids, skipped images and (aux) column names."""

    root: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind"))

    def ids(self) -> list[str] | None:
        f = self.root / "ids.txt"
        return read_ids(f, f"ids of {self.root}") if f.is_file() else None

    def names(self) -> list[str] | None:
        f = self.root / "names.txt"
        return f.read_text().splitlines() if f.is_file() else None

    def skipped(self) -> dict[str, str]:
        """id -> reason of every image the extraction could not decode."""
        f = self.root / "skipped.tsv"
        if f.is_file():
            out = {}
            for line in read_lines(f):  # its paths are the OS's bytes (write_lines)
                parts = line.split("\t")
                if parts and parts[0]:
                    out[parts[0]] = parts[-1] if len(parts) > 2 else "unreadable"
            return out
        return {s["id"]: s.get("reason", "unreadable") for s in self.manifest.get("skipped", [])}

    def recipe(self) -> dict:
        """How the array was made, for the dataset's provenance (``extraction``): enough to
        make the same columns for a new image (see :func:`lagnh_pyg.extract.featurize_like`)."""
        m = self.manifest
        drop = {"skipped", "source", "n_images", "n_items", "n_skipped", "seconds", "images_per_s",
                "resumed_images", "format", "version", "device", "batch_size", "workers"}
        rec = {k: v for k, v in m.items() if k not in drop}
        rec["dir"] = str(self.root.resolve())
        if self.kind == "objects" or self.kind == "tags":
            rec["names"] = self.names()
        return rec


def find_extraction(array_file: str | os.PathLike) -> Extraction | None:
    """The extraction directory holding ``array_file`` (e.g. ``OUT/features.npy``), or ``None``
    when the file was not written by ``lagnh extract``."""
    import json

    root = Path(array_file).parent
    mf = root / "manifest.json"
    if not mf.is_file():
        return None
    try:
        manifest = json.loads(mf.read_text())
    except (ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != EXTRACT_FORMAT:
        return None
    listed = {manifest.get("features", {}).get("file"), manifest.get("aux", {}).get("file")}
    if Path(array_file).name not in listed:
        return None
    return Extraction(root, manifest)


def write_catalog(
    catalog: Catalog,
    out: str | os.PathLike,
    features: Any,
    *,
    feature_ids: Sequence[str] | None = None,
    aux: Any | None = None,
    aux_ids: Sequence[str] | None = None,
    aux_names: Sequence[str] | None = None,
    sparse_aux: bool | None = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``catalog`` with its features (and aux) as a dataset directory.

    Args:
        features: N' x d array (memmap welcome) whose rows are named by ``feature_ids``, or
            aligned with the catalog (or the source's full image list) when ids are ``None``.
        aux: N'' x c array overriding the catalog's own tags; aligned by ``aux_ids``, falling
            back to ``feature_ids`` when it has as many rows as the features.
        aux_names: the column names of a given ``aux`` (e.g. an extraction's tag vocabulary).
        sparse_aux: store aux as CSR; ``None`` decides: sparse input or a wide vocabulary
            (>= ``SPARSE_AUX_MIN_COLUMNS`` columns) is stored sparse.
    """
    if getattr(features, "ndim", None) != 2:
        raise InputError(f"features must be a 2-D array (items x dims), got shape {getattr(features, 'shape', None)}")
    if aux is None and catalog.aux is None:
        raise InputError(f"no auxiliary semantics for this dataset: {catalog.aux_hint}")
    if aux is not None and getattr(aux, "ndim", None) != 2:
        raise InputError(f"aux must be a 2-D array (items x columns), got shape {getattr(aux, 'shape', None)}")
    feats = take_rows(features, catalog.gather_index(feature_ids, features.shape[0], "features", "--ids"))
    if aux is None:
        aux_rows = catalog.aux
    else:
        if aux_ids is None and feature_ids is not None and aux.shape[0] == features.shape[0]:
            aux_ids = feature_ids
        aux_rows = take_rows(aux, catalog.gather_index(aux_ids, aux.shape[0], "aux", "--aux-ids"))
    if sparse_aux is None:
        sparse_aux = sp.issparse(aux_rows) or aux_rows.shape[1] >= SPARSE_AUX_MIN_COLUMNS
    if sparse_aux and not sp.issparse(aux_rows):  # chunk by chunk: a wide dense aux never sits in RAM whole
        n, step = aux_rows.shape[0], 65536
        aux_rows = sp.vstack(
            [sp.csr_matrix(as_stored(aux_rows[s : s + step], np.float32)) for s in range(0, n, step)],
            format="csr",
        )
    prov = {**catalog.provenance, **dict(provenance or {})}
    return write_dataset(
        out,
        feats,
        aux_rows,
        labels=catalog.labels,
        splits=catalog.splits,
        ids=catalog.ids,
        paths=catalog.paths,
        aux_names=catalog.aux_names if aux is None else (list(aux_names) if aux_names is not None else None),
        label_names=catalog.label_names,
        aux_sparse=sparse_aux,
        provenance=prov,
        overwrite=overwrite,
    )


def import_catalog(
    catalog: Catalog,
    out: str | os.PathLike,
    features: str | os.PathLike,
    *,
    ids: str | os.PathLike | None = None,
    aux: str | os.PathLike | None = None,
    aux_ids: str | os.PathLike | None = None,
    sparse_aux: bool | None = None,
    feature_ids: Sequence[str] | None = None,
) -> Path:
    """Write an importer's ``catalog`` as a dataset with the features (and aux) of array files,
    recording where they came from.

    Arrays written by ``lagnh extract`` bring their row ids (used when ``ids`` / ``aux_ids``
    are not given), their column names (tag vocabularies) and their recipe, recorded in the
    dataset's provenance (``extraction``) so that ``lagnh search --image`` can featurize a new
    picture alike (:func:`extraction_provenance`).

    Args:
        features, aux: ``.npy`` (aux also a sparse ``.npz``) files; ``ids``, ``aux_ids``: files
            naming their rows (:func:`read_ids`). ``feature_ids``: the rows' ids, already read.
        sparse_aux: see :func:`write_catalog`.
    """
    X = load_matrix(features, "features")
    A = load_matrix(aux, "aux") if aux is not None else None
    fx = find_extraction(features)
    ax = find_extraction(aux) if aux is not None else None
    if feature_ids is None:
        feature_ids = read_ids(ids, "--ids") if ids is not None else (fx.ids() if fx is not None else None)
    a_ids = read_ids(aux_ids, "--aux-ids") if aux_ids is not None else (ax.ids() if ax is not None else None)
    names = ax.names() if ax is not None else None
    return write_catalog(catalog, out, X, feature_ids=feature_ids, aux=A, aux_ids=a_ids,
                         aux_names=names if names and A is not None and len(names) == A.shape[1] else None,
                         sparse_aux=sparse_aux,
                         provenance={"features": str(features), "aux": str(aux) if aux else None,
                                     "extraction": extraction_provenance(catalog, fx, ax, aux is not None)})


def extraction_provenance(catalog: Catalog, features: Extraction | None, aux: Extraction | None,
                          aux_given: bool) -> dict[str, Any]:
    """How the dataset's columns were made (``provenance.extraction``): the recipes of the
    extractions its features and aux came from, or the catalog's own tag vocabulary."""
    out: dict[str, Any] = {"features": features.recipe() if features is not None and features.kind == "features"
                           else None}
    if aux is not None:
        out["aux"] = aux.recipe()
    elif not aux_given and catalog.aux is not None:
        out["aux"] = {"kind": "tags", "csv": catalog.provenance.get("csv"),
                      "min_count": catalog.provenance.get("min_tag_count"), "names": catalog.aux_names}
    else:
        out["aux"] = None
    return out
