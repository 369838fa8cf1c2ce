"""Featurize new images exactly as a dataset's items were: the hook behind ``lagnh search --image``.

A dataset imported from ``lagnh extract`` output records, in its manifest's provenance
(``extraction``), how its columns were made:

- ``extraction.features``: the backbone's recipe (:meth:`Backbone.describe`: name, weights,
  ``init_seed`` of random weights, image size, resize, mean/std, preprocessing) and the
  storage dtype;
- ``extraction.aux``: ``{"kind": "objects", detector, weights, threshold, min_size, ...}``
  (detections), ``{"kind": "tags", names, ...}`` (a tag vocabulary), or ``None``.

:func:`featurize_like` rebuilds that backbone (and detector) and runs it on new pictures.
Tags of a new picture are given by the caller and mapped onto the dataset's vocabulary;
where the dataset's aux cannot be made for a new picture, aux is zeros (with a warning).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LagnhError

logger = logging.getLogger(__name__)

NEEDS_EXTRACTION = ("--image needs a dataset built from `lagnh extract features` output "
                    "(lagnh data import folder PHOTOS --features OUT/features.npy ...)")


def extraction_recipe(dataset: Any) -> dict:
    """The dataset's recorded ``extraction`` provenance (``{}`` when none)."""
    prov = dataset.manifest.get("provenance") or {}
    return prov.get("extraction") or {}


def _feature_recipe(dataset: Any) -> dict:
    rec = extraction_recipe(dataset).get("features")
    if not rec or not isinstance(rec.get("extractor"), dict):
        src = (dataset.manifest.get("provenance") or {}).get("features") or \
            (dataset.manifest.get("provenance") or {}).get("source")
        raise InputError(f"{NEEDS_EXTRACTION}; dataset {dataset.root} records no feature-extraction recipe"
                         + (f" (its features came from {src})" if src else "") + "; search by --id ITEM instead")
    return rec


def _check_reproducible(kind: str, recipe: dict, dataset: Any) -> str:
    weights = str(recipe.get("weights", "imagenet"))
    if weights == "none" and "init_seed" not in recipe:
        raise InputError(f"the {kind} of dataset {dataset.root} used random weights whose seed was not recorded, "
                         "so a new image cannot be featurized alike; re-extract with this version of lagnh")
    if weights not in ("imagenet", "none", "coco") and not Path(weights).is_file():
        raise InputError(f"the {kind} weights file {weights} recorded by dataset {dataset.root} no longer exists")
    return weights


def _load_images(paths: Sequence[str], transform) -> list:
    """Decoded (and transformed) pictures; a missing, undecodable or oversized one raises
    :class:`~lagnh_pyg.extract.images.UnreadableImage` naming it."""
    from ..limits import PictureTooLarge, UnreadableImage
    from .images import read_image

    out = []
    for p in paths:
        if not os.path.lexists(p):
            raise UnreadableImage(f"image {p} does not exist")
        if not os.path.exists(p):
            raise UnreadableImage(f"image {p} is a link to {os.path.realpath(p)}, which does not exist")
        try:
            img = read_image(str(p))
            out.append(transform(img) if transform is not None else img)
        except PictureTooLarge as e:
            raise PictureTooLarge(f"cannot read image {p}: {e}") from None
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
            raise UnreadableImage(f"cannot read image {p}: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else 'unreadable'}") from None
    return out


#: pictures a forward pass when new pictures are featurized (a request's memory stays bounded
#: however many pictures it sends)
FEATURIZE_CHUNK = 16


def _embed_chunked(bb, paths: Sequence[str], device: str) -> np.ndarray:
    import torch

    from .features import embed

    parts = []
    for s in range(0, len(paths), FEATURIZE_CHUNK):
        x = torch.stack(_load_images(paths[s : s + FEATURIZE_CHUNK], bb.transform()))
        parts += [f for _, f in embed(bb, [(0, x)], device)]
    return np.concatenate(parts)


@functools.lru_cache(maxsize=4)
def _backbone(name: str, weights: str):
    """Networks are rebuilt once per process, not once per picture (a server featurizes many)."""
    from .backbones import build_backbone

    return build_backbone(name, weights)


def features_like(dataset: Any, paths: Sequence[str], device: str = "cpu") -> np.ndarray:
    """Features of ``paths`` from the backbone, weights and preprocessing the dataset's were made with."""
    rec = _feature_recipe(dataset)
    ex = rec["extractor"]
    weights = _check_reproducible("feature backbone", ex, dataset)
    bb = dataclasses.replace(_backbone(str(ex["backbone"]), weights))  # a copy: its preprocessing is set below
    # the recorded preprocessing is authoritative (it includes any --image-size override)
    bb.image_size = int(ex.get("image_size", bb.image_size))
    bb.resize = int(ex.get("resize", bb.resize))
    bb.mean = tuple(ex.get("mean", bb.mean))
    bb.std = tuple(ex.get("std", bb.std))
    if bb.dim != dataset.feature_dim:
        raise InputError(f"backbone {bb.name} gives {bb.dim}-d features but dataset {dataset.root} has "
                         f"{dataset.feature_dim}-d ones")
    feats = _embed_chunked(bb, paths, device)
    dtype = (rec.get("features") or {}).get("dtype") or dataset.manifest["features"].get("dtype", "float32")
    with np.errstate(over="ignore", invalid="ignore"):
        stored = feats.astype(dtype)  # stored float16 rounds alike
    if not np.isfinite(stored).all():
        raise LagnhError(f"the backbone produced NaN/inf features for the picture (as {dtype}); try another backbone")
    return np.asarray(stored, dtype=np.float32)


def _detector_name(rec: dict) -> str:
    from .objects import DETECTORS

    name = rec.get("detector_name")
    if name in DETECTORS:
        return name
    full = rec.get("detector")
    for k, v in DETECTORS.items():
        if full in (k, v):
            return k
    raise InputError(f"the dataset's aux came from an unknown detector {full!r}")


def detections_like(dataset: Any, rec: dict, paths: Sequence[str], device: str = "cpu") -> np.ndarray:
    """Multi-hot COCO categories of ``paths`` from the dataset's detector, at its threshold."""
    import torch

    from .objects import _ToTensor, build_detector, coco_categories

    weights = _check_reproducible("detector", rec, dataset)
    names, column = coco_categories()
    if dataset.aux_dim != len(names):
        raise InputError(f"dataset {dataset.root} has {dataset.aux_dim} aux columns, not the {len(names)} COCO categories "
                         "its recorded detector gives")
    threshold = float(rec.get("threshold", 0.5))
    model = build_detector(_detector_name(rec), weights, int(rec.get("min_size", 800))).to(device)
    scores = np.zeros((len(paths), len(names)), dtype=np.float32)
    with torch.inference_mode():
        for i, p in enumerate(paths):  # one picture at a time: the detector works at its own size
            x = _load_images([p], _ToTensor())[0]
            det = model([x.to(device)])[0]
            cols = column[det["labels"].cpu().numpy()]
            s = det["scores"].float().cpu().numpy()
            keep = cols >= 0
            np.maximum.at(scores[i], cols[keep], s[keep])
    return (scores >= threshold).astype(np.float32)


def _note(notes: list[str] | None, message: str) -> None:
    """A warning for the log, and for the caller's ``notes`` (what the API and the page show)."""
    logger.warning("%s", message)
    if notes is not None:
        notes.append(message)


def tags_like(dataset: Any, tags: Sequence[str], notes: list[str] | None = None) -> np.ndarray:
    """One multi-hot row of ``tags`` over the dataset's aux vocabulary (unknown tags warned,
    and appended to ``notes``)."""
    from .tags import split_terms

    names = dataset.aux_names
    if not names:
        raise InputError(f"dataset {dataset.root} records no aux vocabulary (aux column names), so --tags cannot be mapped")
    col = {n.strip().lower(): j for j, n in enumerate(names)}
    terms = [t for cell in tags for t in split_terms(cell)]
    row = np.zeros((1, len(names)), dtype=np.float32)
    unknown = []
    for t in terms:
        if t in col:
            row[0, col[t]] = 1.0
        else:
            unknown.append(t)
    if unknown:
        _note(notes, f"tag(s) not in the dataset's vocabulary of {len(names)}, ignored: {', '.join(unknown)}")
    if not row.any():
        _note(notes, "none of the given tags is in the dataset's vocabulary: the code is made without auxiliary "
                     "semantics")
    return row


def classifications_like(dataset: Any, rec: dict, paths: Sequence[str], device: str = "cpu") -> np.ndarray:
    """Top-k ImageNet class probabilities of new pictures, with the dataset's recorded classifier."""
    from .classifier import cached_classifier, check_topk, topk_probabilities

    ex = rec.get("extractor") or {}
    if dataset.aux_dim != 1000:
        raise InputError(f"dataset {dataset.root} has {dataset.aux_dim} aux columns, not the 1000 ImageNet classes "
                         "its recorded classifier gives")
    bb = dataclasses.replace(cached_classifier(str(rec.get("classifier", "efficientnet_lite0"))))
    bb.image_size = int(ex.get("image_size", bb.image_size))
    bb.resize = int(ex.get("resize", bb.resize))
    logits = _embed_chunked(bb, paths, device)
    return topk_probabilities(logits, check_topk(int(rec.get("topk", 5))))


def featurize_like(
    dataset: Any, paths: Sequence[str], device: str = "cpu", tags: Sequence[str] | None = None,
    notes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and aux of new images, made the way ``dataset``'s were.

    Args:
        dataset: a :class:`~lagnh_pyg.data.store.Dataset` imported from ``lagnh extract`` output.
        paths: image files.
        device: ``cpu`` or ``cuda[:N]`` (already resolved).
        tags: user tags of the images (``"a;b"`` cells or single terms), for a dataset whose aux
            is a tag vocabulary; they apply to every image in ``paths``.
        notes: when given, what was warned about the aux (no tags, unknown tags) is appended
            here too, for a caller that shows it (the search page).

    Returns:
        ``(features, aux)``: ``len(paths) x d`` float32 and ``len(paths) x c`` float32.

    Raises:
        InputError: the dataset records no extraction recipe; an image cannot be read; tags
            given for a dataset whose aux comes from a detector.
    """
    paths = [str(p) for p in paths]
    features = features_like(dataset, paths, device)
    rec = extraction_recipe(dataset).get("aux") or {}
    kind = rec.get("kind")
    n = len(paths)
    if kind == "objects":
        if tags:
            raise InputError(f"--tags does not apply: the aux of dataset {dataset.root} comes from the detector "
                             f"{rec.get('detector')}, which is run on the image instead")
        aux = detections_like(dataset, rec, paths, device)
    elif kind == "classifier":
        if tags:
            raise InputError(f"--tags does not apply: the aux of dataset {dataset.root} comes from the classifier "
                             f"{rec.get('classifier')}, which is run on the image instead")
        aux = classifications_like(dataset, rec, paths, device)
    elif tags and (kind == "tags" or dataset.aux_names):
        aux = np.repeat(tags_like(dataset, tags, notes), n, axis=0)
    elif tags:
        raise InputError(f"--tags cannot be mapped: dataset {dataset.root} records no aux vocabulary")
    else:
        why = "no --tags given" if kind == "tags" else "the dataset's aux cannot be made for a new picture"
        _note(notes, f"{why}: the code is made without auxiliary semantics (aux = zeros)")
        aux = np.zeros((n, dataset.aux_dim), dtype=np.float32)
    return features, aux
