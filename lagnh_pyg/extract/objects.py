"""Auxiliary semantics from images: object detections (MS COCO style) or user tags (NUS-WIDE style).

Detections: a torchvision Faster R-CNN trained on MS COCO runs over every image; a category
is present when some box of it scores at least ``threshold``. aux is the 80-column multi-hot
over the COCO categories; the highest score of each category (boxes down to the detector's
own floor, 0.05) is kept in ``scores.npy``.

Tags: a CSV (``path,tags``; see :mod:`lagnh_pyg.data.folder`) gives each image its user
tags; aux is the multi-hot over the tags used by at least ``min_count`` images.

Output (format ``lagnh-extract``, kind ``objects`` or ``tags``)::

    OUT/
      manifest.json   detector/threshold or CSV/min-count, counts, skipped files
      aux.npy         N_ok x c float32 multi-hot (aux.npz, CSR, for vocabularies >= 256 tags)
      scores.npy      N_ok x 80 float32 (detections only)
      names.txt       the c column names
      ids.txt paths.txt skipped.tsv   as for features
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import InputError, LagnhError
from ..files import atomic_dir, write_lines
from ..text import escape_text
from .backbones import INIT_SEED
from .features import FORMAT, VERSION, check_out, input_paths
from .images import ImageList, iterate_batches

logger = logging.getLogger(__name__)

DETECTORS = {
    "fasterrcnn": "fasterrcnn_resnet50_fpn",
    "fasterrcnn_v2": "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_mobilenet": "fasterrcnn_mobilenet_v3_large_fpn",
}
SPARSE_MIN_COLUMNS = 256


def coco_categories() -> tuple[list[str], np.ndarray]:
    """The 80 COCO category names and, for each of torchvision's 91 label ids, its column (-1: none)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    cats = FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    names = [c for c in cats if c not in ("__background__", "N/A")]
    column = np.full(len(cats), -1, dtype=np.int64)
    j = 0
    for i, c in enumerate(cats):
        if c not in ("__background__", "N/A"):
            column[i] = j
            j += 1
    return names, column


def check_threshold(threshold: float) -> float:
    if not 0 < threshold < 1:
        raise InputError(f"--threshold must lie strictly between 0 and 1 (a detection score), got {threshold}")
    return float(threshold)


def build_detector(name: str = "fasterrcnn", weights: str = "coco", min_size: int = 800):
    """A torchvision Faster R-CNN in eval mode.

    Args:
        name: ``fasterrcnn`` (ResNet-50 FPN, the paper's kind), ``fasterrcnn_v2`` or
            ``fasterrcnn_mobilenet`` (much faster on CPU).
        weights: ``coco`` (pretrained on MS COCO, downloaded by torchvision) or ``none``
            (random weights: tests and timing only).
        min_size: images are resized so their shorter side is this (torchvision's default 800).
    """
    from torchvision.models import detection

    key = name.lower().replace("-", "_")
    if key not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; use one of {', '.join(DETECTORS)}")
    fn = getattr(detection, DETECTORS[key])
    if weights == "coco":
        try:
            model = fn(weights="DEFAULT", min_size=min_size)
        except Exception as e:  # noqa: BLE001 - any download failure
            raise InputError(
                f"cannot fetch the COCO weights of {DETECTORS[key]} ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                "without internet pass --weights none (random, for testing) or use --tags CSV"
            ) from None
    elif weights == "none":
        import torch

        with torch.random.fork_rng(devices=[]):  # reproducible: a new image can be detected the same way
            torch.manual_seed(INIT_SEED)
            model = fn(weights=None, weights_backbone=None, num_classes=91, min_size=min_size)
    else:
        raise InputError(f"--weights for a detector must be coco or none, got {weights!r}")
    return model.eval()


class _ToTensor:
    """PIL -> float CHW in [0, 1] at the image's own size (the detector resizes itself)."""

    def __call__(self, img):
        import torch

        x = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy(np.ascontiguousarray(x))


def detect_objects(
    images: ImageList,
    out: str | os.PathLike,
    *,
    detector: str = "fasterrcnn",
    weights: str = "coco",
    threshold: float = 0.5,
    min_size: int = 800,
    device: str = "cpu",
    batch_size: int = 4,
    workers: int = 2,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Detect the 80 COCO categories in every image; write aux multi-hot and scores to ``out``."""
    import torch

    threshold = check_threshold(threshold)
    out = Path(out)
    check_out(out, overwrite, images)
    if batch_size < 1 or workers < 0:
        raise InputError("--batch-size must be at least 1 and --workers at least 0")
    names, column = coco_categories()
    model = build_detector(detector, weights, min_size).to(device)
    n = len(images)
    scores = np.zeros((n, len(names)), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[int, str]] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for idx, batch, bad in iterate_batches(images.paths, range(n), _ToTensor(), batch_size, workers):
            skipped.extend(bad)
            if batch is not None:
                xs = list(batch) if isinstance(batch, torch.Tensor) else batch
                for i, det in zip(idx, model([x.to(device) for x in xs])):
                    cols = column[det["labels"].cpu().numpy()]
                    s = det["scores"].float().cpu().numpy()
                    keep = cols >= 0
                    np.maximum.at(scores[i], cols[keep], s[keep])
                    ok[i] = True
            if progress:
                progress(len(idx) + len(bad))
    seconds = time.perf_counter() - t0
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        first = f" (first: {images.paths[skipped[0][0]]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"none of the {n} images could be decoded{first}")
    scores = scores[rows]
    aux = (scores >= threshold).astype(np.float32)
    skipped.sort()
    extra = {"detector": DETECTORS[detector.lower().replace('-', '_')], "detector_name": detector.lower().replace('-', '_'),
             "weights": weights, **({"init_seed": INIT_SEED} if weights == "none" else {}), "threshold": threshold,
             "min_size": min_size, "device": device, "seconds": round(seconds, 3),
             "images_per_s": round(n / seconds, 3) if seconds > 0 else None,
             "mean_objects_per_image": round(float(aux.sum(1).mean()), 3)}
    _write_aux_dir(out, images, rows, skipped, aux, names, "objects", extra, overwrite, scores=scores)
    if not np.isfinite(scores).all():  # pragma: no cover - torchvision scores are probabilities
        raise LagnhError("the detector produced NaN scores")
    return {"out": str(out), "n_items": int(rows.size), "n_skipped": len(skipped), **extra}


def tags_aux(
    images: ImageList,
    csv_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    min_count: int = 1,
    overwrite: bool = False,
) -> dict:
    """aux from a tag CSV: the multi-hot over the tags used by at least ``min_count`` images.

    Raises:
        InputError: the CSV is malformed or names images that are not in ``images``.
    """
    from .tags import multi_hot, read_tag_csv

    out = Path(out)
    check_out(out, overwrite, images, csv_path)
    table = read_tag_csv(csv_path, images.ids)
    if not any(table.tags):
        raise InputError(f"tag CSV {csv_path} gives no tags (its 'tags' column is missing or empty)")
    aux, names = multi_hot(table.tags, min_count)
    rows = np.arange(len(images))
    empty = int((np.diff(aux.indptr) == 0).sum())
    extra = {"csv": str(csv_path), "min_count": min_count, "vocabulary": len(names), "images_without_tags": empty,
             "mean_tags_per_image": round(float(aux.sum() / max(1, aux.shape[0])), 3)}
    _write_aux_dir(out, images, rows, [], aux, names, "tags", extra, overwrite)
    return {"out": str(out), "n_items": len(images), "n_skipped": 0, **extra}


def _write_aux_dir(out, images, rows, skipped, aux, names, kind, extra, overwrite, scores=None) -> None:
    with atomic_dir(out, overwrite=overwrite, formats=(FORMAT,), inputs=lambda: input_paths(images)) as tmp:
        if aux.shape[1] >= SPARSE_MIN_COLUMNS:
            aux_file = "aux.npz"
            sp.save_npz(tmp / aux_file, sp.csr_matrix(aux, dtype=np.float32), compressed=False)
        else:
            aux_file = "aux.npy"
            np.save(tmp / aux_file, (aux.toarray() if sp.issparse(aux) else np.asarray(aux)).astype(np.float32))
        if scores is not None:
            np.save(tmp / "scores.npy", scores)
        (tmp / "names.txt").write_text("".join(f"{c}\n" for c in names))
        write_lines(tmp / "ids.txt", (images.ids[i] for i in rows))
        write_lines(tmp / "paths.txt", (images.paths[i] for i in rows))
        from .features import _one_line

        write_lines(tmp / "skipped.tsv", (f"{images.ids[i]}\t{images.paths[i]}\t{_one_line(r)}" for i, r in skipped))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "n_images": len(images),
            "n_items": len(rows),
            "n_skipped": len(skipped),
            "skipped": [{"id": images.ids[i], "path": escape_text(images.paths[i]), "reason": escape_text(r)}
                    for i, r in skipped[:1000]],
            "aux": {"file": aux_file, "dim": int(aux.shape[1]), "names_file": "names.txt"},
            "source": images.source,
            **extra,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
