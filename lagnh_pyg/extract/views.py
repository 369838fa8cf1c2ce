"""Augmented views: features of K random renderings of each training image.

Contrastive and invariance-based baselines (CIBHash's two views, DeepBit's rotations) learn
from several augmented versions of one image. At the feature level that means running the
same feature network over augmented copies of the image; the dataset stores the result as
``views`` (:meth:`lagnh_pyg.data.store.DatasetWriter.set_views`), for the training split only.

The augmentation (:func:`augment`) is SimCLR's recipe without colour (the demo images are
grey) plus DeepBit's small rotations, applied to uint8 greyscale images:

- random resized crop: area ``U(0.5, 1)`` of the image, aspect ``U(3/4, 4/3)``, random
  position, resized back to the original size;
- rotation by ``U(-10, 10)`` degrees (DeepBit fine-tunes on +-5 and +-10 degrees);
- horizontal flip with probability 1/2;
- brightness and contrast factors ``U(0.6, 1.4)`` each.

All of it is one affine warp (bilinear, zero padding) plus a pixel transform, drawn from a
seeded ``torch.Generator``: the same (images, k, seed) give the same views.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

RECIPE = {
    "crop_area": [0.5, 1.0],
    "crop_aspect": [0.75, 1.3333],
    "rotation_degrees": [-10, 10],
    "hflip": 0.5,
    "brightness": [0.6, 1.4],
    "contrast": [0.6, 1.4],
}


def augment(images: np.ndarray, gen) -> np.ndarray:
    """One random augmentation of each uint8 image of ``images`` (n, H, W); uint8 out."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)[:, None]
    x = augment_tensor(x, gen)
    return (x.clamp_(0, 1) * 255).round_().to(torch.uint8)[:, 0].numpy()


def augment_tensor(x, gen, photometric: bool = True):
    """One random augmentation of each image of the float batch ``x`` (n, C, H, W).

    The geometric part (crop, rotation, flip) is one affine warp; the photometric part
    (contrast about each image's mean, then brightness) assumes pixel values in [0, 1] --
    pass ``photometric=False`` for normalised inputs, where only contrast is applied (it
    commutes with a per-channel affine normalisation; brightness does not).
    """
    import torch
    import torch.nn.functional as F

    n = len(x)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    area = uniform(*RECIPE["crop_area"])
    aspect = torch.exp(uniform(math.log(RECIPE["crop_aspect"][0]), math.log(RECIPE["crop_aspect"][1])))
    sx = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / image width
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (1 - sx) * uniform(-1, 1)  # crop centre, in [-1, 1] grid units
    ty = (1 - sy) * uniform(-1, 1)
    angle = uniform(*RECIPE["rotation_degrees"]) * math.pi / 180
    flip = torch.where(torch.rand(n, generator=gen) < RECIPE["hflip"], -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([sx * cos * flip, -sy * sin, tx], 1),
                         torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    pad = x.mean(dim=(2, 3), keepdim=True) if not photometric else None
    x = F.grid_sample(x if pad is None else x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if pad is not None:
        x = x + pad  # pad with each image's mean colour, not with the normalised zero
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(*RECIPE["contrast"]).view(n, 1, 1, 1).to(x)
    brightness = uniform(*RECIPE["brightness"]).view(n, 1, 1, 1).to(x)
    x = (x - mean) * contrast + mean
    return x * brightness if photometric else x


def view_features(
    images: np.ndarray,
    k: int,
    embed: Callable[[np.ndarray], np.ndarray],
    seed: int = 0,
    chunk: int = 2048,
) -> np.ndarray:
    """Features of ``k`` augmented views of each image: ``(n, k, d)`` float32.

    ``embed`` maps uint8 images (m, H, W) to (m, d) features (the dataset's feature network).
    View ``j`` of every image is drawn before view ``j + 1``, chunk by chunk, from one
    generator seeded with ``seed``: the same (images, k, seed, chunk) give the same views.
    """
    import torch

    if k < 1:
        from ..errors import InputError

        raise InputError(f"--views must be at least 1, got {k}")
    gen = torch.Generator().manual_seed(int(seed))
    out = None
    for j in range(k):
        for lo in range(0, len(images), chunk):
            f = embed(augment(images[lo : lo + chunk], gen))
            if out is None:
                out = np.zeros((len(images), k, f.shape[1]), dtype=np.float32)
            out[lo : lo + len(f), j] = f
    return out

