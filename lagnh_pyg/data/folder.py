"""A folder of images, with an optional CSV of tags and labels.

The items are the image files under the folder (recursively,
:func:`~lagnh_pyg.extract.images.list_images`), sorted by their path relative to it; that path
is the item id. The optional CSV (:mod:`lagnh_pyg.extract.tags`) gives each image its tags
(the auxiliary semantics) and, optionally, labels (used only for evaluation).

Features are not computed here: give them aligned with :func:`list_images` (or with an id
list), or let feature extraction, which reuses :func:`list_images` and :func:`read_tag_csv`,
write the dataset. Splits are drawn with a seed.

Images that have no feature row (``lagnh extract features`` skips truncated or corrupt files
and lists them in its ``skipped.tsv``) are dropped before the split is drawn, with one
warning, and named in the dataset's provenance (``dropped``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..extract.images import list_image_files, list_images  # noqa: F401 - list_images: for `lagnh data import folder --print-list`
from ..extract.tags import TagTable, multi_hot, read_tag_csv
from .sources import Catalog, find_extraction, import_catalog, read_ids, seeded_splits

logger = logging.getLogger(__name__)


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
    files = list_image_files(root)
    all_images = [i for i, _ in files]
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
        paths=[str(root.resolve() / files[i][1]) for i in keep],  # absolute: read from anywhere
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


def import_folder(
    root: str | os.PathLike,
    out: str | os.PathLike,
    features: str | os.PathLike | None,
    *,
    ids: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
    aux: str | os.PathLike | None = None,
    aux_ids: str | os.PathLike | None = None,
    min_tag_count: int = 1,
    n_train: int = 5000,
    n_query: int = 1000,
    seed: int = 0,
    train_in_database: bool = True,
    sparse_aux: bool | None = None,
    notes: Callable[[str], None] | None = None,
) -> Catalog:
    """``lagnh data import folder``: the folder's catalog (:func:`build_catalog`) written as a
    dataset with the features of ``features`` (:func:`~lagnh_pyg.data.sources.import_catalog`).

    With ids for the feature rows (``ids``, or those of a ``lagnh extract`` output), images
    that have none (skipped by extraction as unreadable) are dropped before the split is
    drawn. ``notes`` receives the catalog's notes before the dataset is written. Returns the
    catalog (its ``warnings`` are for the caller to show).
    """
    fx = find_extraction(features) if features is not None else None
    feature_ids = read_ids(ids, "--ids") if ids is not None else (fx.ids() if fx is not None else None)
    catalog = build_catalog(root, csv_path=csv_path, min_tag_count=min_tag_count, n_train=n_train, n_query=n_query,
                            seed=seed, train_in_database=train_in_database, feature_ids=feature_ids,
                            skip_reasons=fx.skipped() if fx is not None else None)
    for note in catalog.notes if notes is not None else ():
        notes(note)
    if features is None:
        raise InputError("--features is required: give a .npy with one row per image in the order of "
                         "`--print-list` (or named by --ids)")
    import_catalog(catalog, out, features, aux=aux, aux_ids=aux_ids, sparse_aux=sparse_aux, feature_ids=feature_ids)
    return catalog


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
