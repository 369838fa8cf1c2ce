"""MS COCO 2017 under the paper's protocol.

Labels come from ``instances_train2017.json`` and ``instances_val2017.json``: each image's
80-category multi-hot vector (COCO's category ids run 1..90 with gaps; columns follow the
ids in sorted order and keep the category names). The split (docs/method.md, "Data and protocol"):

- train: ``n_train`` (5,000) images sampled from train2017 with ``seed``;
- database: the remaining train2017 images (disjoint from train);
- query: the val2017 images.

Images without any annotation (1,021 in train2017, 48 in val2017) are dropped by default
(112,266 database items, 4,952 queries); ``no_annotation="keep"`` keeps them with all-zero
labels and gives the paper's counts (113,287 and 5,000). Rows are train2017 images in
increasing image id, then val2017 images likewise; item ids are the COCO image ids.

COCO has no tags: the auxiliary semantics are detector outputs over the 80 categories
(``lagnh extract objects``), or any N x c array given aligned by image id.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .sources import Catalog, require_file

logger = logging.getLogger(__name__)

NO_ANNOTATION = ("drop", "keep")


@dataclass
class Instances:
    """One ``instances_*.json``: image ids (increasing), file names, and multi-hot labels."""

    image_ids: np.ndarray
    file_names: list[str]
    labels: np.ndarray  # n_images x n_categories uint8
    category_ids: list[int]
    category_names: list[str]


def read_instances(path: str | os.PathLike, category_ids: list[int] | None = None) -> Instances:
    """Parse a COCO ``instances_*.json`` into multi-hot labels.

    Args:
        path: the annotation file.
        category_ids: the column order (sorted category ids); ``None`` takes this file's own.
    """
    path = require_file(path, "COCO annotation")
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a JSON text file") from None
    except RecursionError:  # json's parser gives up on deep nesting: the file's fault, not a bug
        raise InputError(f"{path} is not valid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path} is not a COCO annotation file (top level is not an object)")
    missing = [k for k in ("images", "annotations", "categories") if k not in doc]
    if missing:
        hint = " (image_info_* files carry no labels; use instances_*.json)" if "annotations" in missing else ""
        raise InputError(f"{path} lacks the COCO key(s) {', '.join(missing)}{hint}")
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in doc["categories"])
        images = sorted((int(im["id"]), str(im["file_name"])) for im in doc["images"])
        anns = [(int(a["image_id"]), int(a["category_id"])) for a in doc["annotations"]]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path} has a malformed image, annotation or category entry ({type(e).__name__}: {e})") from None
    if not cats:
        raise InputError(f"{path} lists no categories")
    if not images:
        raise InputError(f"{path} lists no images")
    own_ids = [c for c, _ in cats]
    if category_ids is None:
        category_ids = own_ids
    elif sorted(own_ids) != sorted(category_ids):
        raise InputError(f"{path} has different categories from the training annotations; use one COCO release")
    names = dict(cats)
    image_ids = np.array([i for i, _ in images], dtype=np.int64)
    if np.unique(image_ids).size != image_ids.size:
        raise InputError(f"{path} repeats image ids")
    labels = np.zeros((image_ids.size, len(category_ids)), dtype=np.uint8)
    if anns:
        a = np.array(anns, dtype=np.int64)
        rows = np.searchsorted(image_ids, a[:, 0])
        bad = (rows >= image_ids.size) | (image_ids[np.minimum(rows, image_ids.size - 1)] != a[:, 0])
        if bad.any():
            raise InputError(f"{path}: {int(bad.sum())} annotations name images not in its image list (first: {a[bad][0, 0]})")
        col_of = {c: j for j, c in enumerate(category_ids)}
        try:
            cols = np.array([col_of[c] for c in a[:, 1].tolist()], dtype=np.int64)
        except KeyError as e:
            raise InputError(f"{path}: an annotation names category id {e.args[0]}, which is not among its categories") from None
        labels[rows, cols] = 1
    return Instances(image_ids, [f for _, f in images], labels, list(category_ids), [names[c] for c in category_ids])


def build_catalog(
    train_json: str | os.PathLike,
    val_json: str | os.PathLike,
    *,
    n_train: int = 5000,
    seed: int = 0,
    no_annotation: str = "drop",
    images: str | os.PathLike | None = None,
) -> Catalog:
    """The COCO items, labels and the paper's split (see the module docstring).

    Args:
        train_json / val_json: ``instances_train2017.json`` and ``instances_val2017.json``.
        n_train: training images sampled from train2017. seed: the sampling seed.
        no_annotation: ``"drop"`` or ``"keep"`` images without annotations.
        images: a directory holding ``train2017/`` and ``val2017/``; image paths are recorded.
    """
    if no_annotation not in NO_ANNOTATION:
        raise InputError(f"--no-annotation must be one of {', '.join(NO_ANNOTATION)}, got {no_annotation!r}")
    tr = read_instances(train_json)
    va = read_instances(val_json, tr.category_ids)
    both = np.intersect1d(tr.image_ids, va.image_ids)
    if both.size:
        raise InputError(f"{both.size} image ids appear in both {train_json} and {val_json} (first: {both[0]})")
    notes = []
    parts = []
    for name, inst in (("train2017", tr), ("val2017", va)):
        empty = inst.labels.sum(1) == 0
        keep = np.ones(len(empty), bool) if no_annotation == "keep" else ~empty
        notes.append(f"{name}: {len(empty)} images, {int(empty.sum())} without annotations "
                     f"({'kept with all-zero labels' if no_annotation == 'keep' else 'dropped'})")
        parts.append((name, inst, np.flatnonzero(keep)))
    (_, _, tr_keep), (_, _, va_keep) = parts
    if n_train < 1 or n_train >= tr_keep.size:
        raise InputError(f"--n-train must be between 1 and {tr_keep.size - 1} (train2017 images kept), got {n_train}")
    n_tr = tr_keep.size
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(n_tr, size=n_train, replace=False))
    database = np.setdiff1d(np.arange(n_tr), train)
    query = np.arange(n_tr, n_tr + va_keep.size)
    ids = [str(i) for i in tr.image_ids[tr_keep]] + [str(i) for i in va.image_ids[va_keep]]
    files = [tr.file_names[i] for i in tr_keep] + [va.file_names[i] for i in va_keep]
    aliases = {f: r for r, f in enumerate(files)}
    paths = None
    if images is not None:
        images = Path(images).resolve()  # absolute: the dataset may be read from elsewhere
        for sub in ("train2017", "val2017"):
            if not (images / sub).is_dir():
                raise InputError(f"--images {images} must contain {sub}/ (the COCO image folders)")
        paths = [str(images / "train2017" / f) for f in files[:n_tr]] + [str(images / "val2017" / f) for f in files[n_tr:]]
    labels = np.concatenate([tr.labels[tr_keep], va.labels[va_keep]])
    notes.append(f"split: {len(train)} train, {len(database)} database (rest of train2017), {len(query)} queries (val2017)")
    return Catalog(
        ids=ids,
        splits={"train": train, "query": query, "database": database},
        labels=labels,
        label_names=tr.category_names,
        paths=paths,
        aliases=aliases,
        aux_hint=("MS COCO has no tags: give detector outputs aligned by image id with --aux A.npy "
                  "(N x 80 scores in [0, 1]; `lagnh extract objects` computes them)"),
        provenance={
            "source": "coco",
            "protocol": "paper: n_train from train2017, rest of train2017 = database, val2017 = queries",
            "train_json": str(train_json),
            "val_json": str(val_json),
            "n_train": n_train,
            "seed": seed,
            "no_annotation": no_annotation,
            "category_ids": tr.category_ids,
        },
        notes=notes,
    )
