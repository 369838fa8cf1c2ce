"""A folder of images, with an optional CSV of tags and labels.

The items are the image files under the folder (recursively), sorted by their path relative
to it; that path is the item id. The optional CSV has a header and one row per image:

- ``path`` (or ``file``, ``file_name``, ``filename``, ``image``): the image, relative to the
  folder, or its bare file name when that is unique;
- ``tags``: user tags separated by ``;`` or ``|`` — the auxiliary semantics, a multi-hot over
  the tags used by at least ``min_tag_count`` images (stored sparse for large vocabularies);
- ``labels`` (optional): ground-truth classes, same separators — used only for evaluation.

Features are not computed here: give them aligned with :func:`list_images` (or with an id
list), or let feature extraction, which reuses :func:`list_images` and :func:`read_tag_csv`,
write the dataset. Splits are drawn with a seed.

Images that have no feature row (``lagnh extract features`` skips truncated or corrupt files
and lists them in its ``skipped.tsv``) are dropped before the split is drawn, with one
warning, and named in the dataset's provenance (``dropped``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from ..files import read_text
from .sources import Catalog, seeded_splits, vocabulary

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PATH_COLUMNS = ("path", "file", "file_name", "filename", "image")
_SEP = re.compile(r"[;|]")


def list_images(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Image files under ``root`` (recursive, hidden entries skipped) as sorted relative POSIX paths."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    exts = {e.lower() for e in extensions}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts:
                found.append(Path(dirpath, f).relative_to(root).as_posix())
    if not found:
        raise InputError(f"no images ({', '.join(sorted(exts))}) under {root}")
    return sorted(found)


def split_terms(cell: str | None) -> list[str]:
    """``"dog; beach|Sky "`` -> ``["dog", "beach", "sky"]`` (lower-cased, de-duplicated, ordered)."""
    if not cell:
        return []
    out: list[str] = []
    for t in _SEP.split(cell):
        t = t.strip().lower()
        if t and t not in out:
            out.append(t)
    return out


@dataclass
class TagTable:
    """The CSV's rows matched to images: tags and labels per image (empty lists where absent)."""

    tags: list[list[str]]
    labels: list[list[str]] | None  # None when the CSV has no labels column


def read_tag_csv(path: str | os.PathLike, images: Sequence[str]) -> TagTable:
    """Parse the tag CSV and match its rows to ``images`` (relative paths from :func:`list_images`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tag CSV {path} does not exist")
    by_path = {p: i for i, p in enumerate(images)}
    names: dict[str, int] = {}
    for i, p in enumerate(images):
        n = p.rsplit("/", 1)[-1]
        names[n] = -1 if n in names else i  # -1: ambiguous bare name
    tags: list[list[str]] = [[] for _ in images]
    labels: list[list[str]] = [[] for _ in images]
    seen = np.zeros(len(images), dtype=bool)
    unmatched = []
    with io.StringIO(read_text(path, "tag CSV"), newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if not header:
            raise InputError(f"tag CSV {path} is empty; it needs a header row with a path column and tags")
        reader.fieldnames = header
        col = next((c for c in PATH_COLUMNS if c in header), None)
        if col is None:
            raise InputError(f"tag CSV {path} has no image column; name one of {', '.join(PATH_COLUMNS)} (found: {', '.join(header)})")
        if "tags" not in header and "labels" not in header:
            raise InputError(f"tag CSV {path} has neither a 'tags' nor a 'labels' column (found: {', '.join(header)})")
        for line, row in enumerate(reader, start=2):
            key = (row.get(col) or "").strip().replace("\\", "/")
            key = key.removeprefix("./")
            if not key:
                raise InputError(f"tag CSV {path}, line {line}: empty {col!r}")
            i = by_path.get(key)
            if i is None:
                i = names.get(key.rsplit("/", 1)[-1])
                if i == -1:
                    raise InputError(f"tag CSV {path}, line {line}: file name {key!r} matches several images; give the relative path")
            if i is None:
                unmatched.append(key)
                continue
            if seen[i]:
                raise InputError(f"tag CSV {path}, line {line}: image {images[i]!r} appears twice")
            seen[i] = True
            tags[i] = split_terms(row.get("tags"))
            labels[i] = split_terms(row.get("labels"))
    if unmatched:
        raise InputError(
            f"tag CSV {path} names {len(unmatched)} image(s) not in the folder (first: {', '.join(unmatched[:3])})"
        )
    return TagTable(tags=tags, labels=labels if "labels" in header else None)


def multi_hot(terms: Sequence[Sequence[str]], min_count: int = 1) -> tuple[sp.csr_matrix, list[str]]:
    """Rows of terms -> a CSR multi-hot over the terms used by at least ``min_count`` rows (sorted)."""
    vocab = sorted({t for ts in terms for t in ts})
    if not vocab:
        raise InputError("no tags or labels found in the CSV")
    col = {t: j for j, t in enumerate(vocab)}
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    indices = []
    for i, ts in enumerate(terms):
        indices.extend(col[t] for t in ts)
        indptr[i + 1] = len(indices)
    m = sp.csr_matrix(
        (np.ones(len(indices), dtype=np.float32), np.asarray(indices, dtype=np.int64), indptr),
        shape=(len(terms), len(vocab)),
    )
    keep, names = vocabulary(np.asarray(m.sum(0)).ravel(), vocab, min_count)
    return m[:, keep].tocsr(), names


def build_catalog(
    root: str | os.PathLike,
    *,
    csv_path: str | os.PathLike | None = None,
    min_tag_count: int = 1,
    n_train: int = 5000,
    n_query: int = 1000,
    seed: int = 0,
    train_in_database: bool = True,
    feature_ids: Sequence[str] | None = None,
    skip_reasons: Mapping[str, str] | None = None,
) -> Catalog:
    """The folder's images as items, with tags (aux) and labels from the CSV when given.

    Args:
        root: the image folder. csv_path: the optional tag CSV.
        min_tag_count: drop tags used by fewer images. n_train / n_query / seed: the split.
        train_in_database: whether the database also holds the training images.
        feature_ids: the ids of the feature rows that will be attached, when known: images
            none of them names (e.g. skipped by extraction as unreadable) are dropped before
            the split is drawn. ``skip_reasons`` (id -> reason, from the extraction's
            ``skipped.tsv``) says why, in the warning and the provenance.
    """
    root = Path(root)
    all_images = list_images(root)
    keep = np.arange(len(all_images))
    dropped: list[dict] = []
    warnings = []
    if feature_ids is not None:
        keep, dropped = _rows_with_features(all_images, feature_ids, skip_reasons or {}, root)
        if dropped:
            shown = "; ".join(f"{d['id']} ({d['reason']})" for d in dropped[:5])
            more = f"; and {len(dropped) - 5} more" if len(dropped) > 5 else ""
            warnings.append(f"dropped {len(dropped)} of {len(all_images)} images that have no feature row: {shown}{more}")
    images = [all_images[i] for i in keep]
    aux = aux_names = labels = label_names = None
    notes = [f"{len(all_images)} images under {root}"
             + (f"; {len(dropped)} dropped (no feature row)" if dropped else "")]
    if csv_path is not None:
        table = read_tag_csv(csv_path, all_images)  # the CSV may name the dropped images too
        if dropped:
            table = TagTable(tags=[table.tags[i] for i in keep],
                             labels=None if table.labels is None else [table.labels[i] for i in keep])
        if any(table.tags):
            aux, aux_names = multi_hot(table.tags, min_tag_count)
            empty = int((np.diff(aux.indptr) == 0).sum())
            notes.append(f"tags: {len(aux_names)} used by >= {min_tag_count} images; {empty} images have none")
        if table.labels is not None and any(table.labels):
            lab, label_names = multi_hot(table.labels, 1)
            labels = lab.toarray().astype(np.uint8)
            notes.append(f"labels: {len(label_names)} classes; {int((labels.sum(1) == 0).sum())} images have none")
    splits = seeded_splits(len(images), n_train, n_query, seed, train_in_database=train_in_database)
    notes.append(f"split drawn with seed {seed}: {len(splits['train'])} train, {len(splits['query'])} queries, "
                 f"{len(splits['database'])} database")
    return Catalog(
        ids=images,
        splits=splits,
        labels=labels,
        label_names=label_names,
        aux=aux,
        aux_names=aux_names,
        paths=[str(root.resolve() / p) for p in images],  # absolute: read from anywhere
        aux_hint="give a tag CSV with --csv (a 'tags' column) or --aux A.npy aligned with the sorted image list",
        provenance={
            "source": "folder",
            "root": str(root),
            "csv": str(csv_path) if csv_path else None,
            "min_tag_count": min_tag_count,
            "seed": seed,
            "train_in_database": train_in_database,
            **({"n_dropped": len(dropped), "dropped": dropped[:1000]} if dropped else {}),
        },
        notes=notes,
        warnings=warnings,
    )


def _rows_with_features(
    images: list[str], feature_ids: Sequence[str], reasons: Mapping[str, str], root: Path
) -> tuple[np.ndarray, list[dict]]:
    """The rows of ``images`` some feature id names, and the dropped rest (id, reason)."""
    probe = Catalog(ids=images, splits={})
    has = np.zeros(len(images), dtype=bool)
    for key in feature_ids:
        r = probe.row_of(str(key))
        if r is not None:
            has[r] = True
    keep = np.flatnonzero(has)
    if keep.size == 0:
        raise InputError(f"the feature ids name none of the {len(images)} images under {root}; "
                         "were the features extracted from this folder?")
    dropped = [{"id": images[i], "reason": reasons.get(images[i], "no feature row")}
               for i in np.flatnonzero(~has)]
    return keep, dropped
