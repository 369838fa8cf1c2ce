"""Building the demo dataset directory: Fashion-MNIST loaded, mosaics composed, the detector
trained and applied, EfficientNet-Lite0 features computed (cached under ``cache_dir``, keyed
by everything that decides them, so a rebuild or an interrupted build reuses them), optional
augmented views, and the mosaics written as PNG files to ``DATA_DIR/images/`` (thumbnails
for ``search --html``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..extract.views import RECIPE as VIEWS_RECIPE
from ..ownership import check_replaceable
from .detector import TileDetector
from .fashion_mnist import CLASSES, load_fashion_mnist
from .mosaics import EXTRA_BLOCK, DemoSpec, Mosaics, compose, noisy_tags, render

logger = logging.getLogger(__name__)


# -- features ----------------------------------------------------------------------------------
def mosaic_features(
    images: np.ndarray,
    backbone,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    cache: Path | None = None,
    chunk: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Backbone features of grey uint8 mosaics ``(n, H, W)``: resized to ``backbone.image_size``.

    With ``cache`` (a directory), finished chunks of ``chunk`` mosaics are saved there and
    reused, so an interrupted build resumes.
    """
    import torch
    import torch.nn.functional as F

    from ..extract.features import embed

    mean = torch.tensor(backbone.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, dtype=torch.float32).view(1, 3, 1, 1)
    size = backbone.image_size
    out = np.zeros((len(images), backbone.dim), dtype=np.float32)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    for lo in range(0, len(images), chunk):
        hi = min(len(images), lo + chunk)
        part = cache / f"chunk-{lo:07d}-{hi:07d}.npy" if cache is not None else None
        if part is not None and part.is_file():
            out[lo:hi] = np.load(part)
            if progress:
                progress(hi - lo)
            continue

        def batches(lo=lo, hi=hi):
            for s in range(lo, hi, batch_size):
                x = torch.from_numpy(images[s : min(hi, s + batch_size)]).float().div_(255.0)[:, None]
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
                yield s, ((x.expand(-1, 3, -1, -1) - mean) / std).contiguous()

        for s, f in embed(backbone, batches(), device):
            out[s : s + len(f)] = f
            if progress:
                progress(len(f))
        if part is not None:
            tmp = part.with_name(part.name + ".tmp.npy")
            np.save(tmp, out[lo:hi])
            os.replace(tmp, part)
    return out


def default_cache_dir() -> Path:
    base = os.environ.get("LAGNH_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lagnh-pyg")
    return Path(base) / "demo"


# -- the whole build ---------------------------------------------------------------------------
def build_demo(
    spec: DemoSpec,
    out: str | os.PathLike,
    *,
    fashion_mnist_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    write_images: bool = True,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] = logger.info,
    views: int = 0,
) -> dict:
    """Build the demo dataset directory ``out``; return a summary (counts, timings, detector quality).

    If ``out`` already holds a demo dataset built from the same spec (and the same number of
    views), it is reused as is (``summary["cached"] = True``). ``views`` > 0 also stores the
    features of that many augmented renderings of each *training* mosaic
    (:mod:`lagnh_pyg.extract.views`), for the baselines that learn from views.
    """
    spec.validate()
    if views < 0:
        raise InputError(f"--views must be 0 (none) or positive, got {views}")
    out = Path(out)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if out.exists() and not overwrite:
        if _existing_spec(out) == asdict(spec) and _existing_views(out) == views:
            return {"cached": True, "out": str(out)}
        raise InputError(
            f"{out} already exists and was not built as this demo dataset; choose another --out or pass --overwrite"
        )
    inputs = [p for p in (fashion_mnist_dir, cache_root) if p is not None]
    if out.exists():  # checked before hours of work: only a dataset of ours that holds no input
        check_replaceable(out, ("lagnh-dataset",), inputs)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    train_x, train_y, test_x, test_y = load_fashion_mnist(fashion_mnist_dir, download_root=cache_root / "fashion-mnist")
    mos = compose(spec, train_y, test_y)
    images = render(mos, train_x, test_x)
    timings["compose_s"] = time.perf_counter() - t_start
    extra = f" + {spec.extra_train} extra" if spec.extra_train else ""
    log(f"composed {len(images)} mosaics ({spec.n_train}{extra} train, {spec.n_query} query, {spec.n_database} database)")
    t = time.perf_counter()
    det = _detections(spec, mos, images, train_x, train_y, log)
    timings["detector_s"] = time.perf_counter() - t
    t = time.perf_counter()
    feat_cache = cache_root / spec.mosaic_key()
    features = _features(spec, images, feat_cache, device, batch_size, progress, log)
    timings["features_s"] = time.perf_counter() - t
    view_feats = None
    if views:
        t = time.perf_counter()
        view_feats = _demo_views(spec, images[mos.splits["train"]], views, feat_cache, device, batch_size, log)
        timings["views_s"] = time.perf_counter() - t
    aux, aux_names = _aux(spec, mos, det["hot"])
    t = time.perf_counter()
    summary = {"detector": det["summary"], "mean_labels_per_mosaic": round(float(mos.labels.sum(1).mean()), 3),
               "mean_aux_per_mosaic": round(float((aux > 0).sum(1).mean()), 3)}
    provenance = {
        "source": "demo",
        "demo_spec": asdict(spec),
        "real": "Fashion-MNIST images (Xiao et al. 2017); EfficientNet-Lite0 ImageNet weights",
        "constructed": "2x2 mosaics of 1-4 items (labels = set of item classes); aux from a tile-classifier "
                       "'detector' trained on disjoint items, or noisy tags",
        "feature_cache": str(feat_cache),
        **summary,
    }
    _write(out, spec, mos, images, features, aux, aux_names, det["scores"], view_feats, views, provenance,
           write_images, overwrite, inputs)
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    return {"cached": False, "out": str(out), "n_items": len(images), "feature_dim": int(features.shape[1]),
            "aux_dim": int(aux.shape[1]), "timings": {k: round(v, 2) for k, v in timings.items()}, **summary}


def _detections(spec: DemoSpec, mos: Mosaics, images: np.ndarray, train_x: np.ndarray, train_y: np.ndarray,
                log: Callable[[str], None]) -> dict:
    """The tile detector trained on its own pool, checked on held-out pool items, applied to
    every mosaic: its ``scores``, the thresholded multi-hot (``hot``) and a ``summary``."""
    pool = mos.detector_items
    n_val = max(1, len(pool) // 10)
    n_fit = len(pool) - n_val
    epochs = max(8, -(-150 // -(-n_fit // 512)))  # at least ~150 Adam steps, however small the pool
    det = TileDetector(seed=spec.seed).fit(train_x[pool[n_val:]], train_y[pool[n_val:]], epochs=epochs, batch=512)
    val_acc = float((det.scores(train_x[pool[:n_val]]).argmax(1) == train_y[pool[:n_val]]).mean())
    scores = det.detect(images)
    hot = (scores >= spec.detector_threshold).astype(np.float32)
    tp = float((hot * mos.labels).sum())
    precision = tp / max(1.0, float(hot.sum()))
    recall = tp / max(1.0, float(mos.labels.sum()))
    log(f"detector: tile accuracy {val_acc:.3f} on held-out pool items; on the mosaics precision {precision:.3f}, recall {recall:.3f}")
    summary = {"tile_accuracy_heldout": round(val_acc, 4), "mosaic_precision": round(precision, 4),
               "mosaic_recall": round(recall, 4), "threshold": spec.detector_threshold,
               "trained_on": f"{len(pool) - n_val} Fashion-MNIST training items outside every mosaic"}
    return {"scores": scores, "hot": hot, "summary": summary}


def _features(spec: DemoSpec, images: np.ndarray, feat_cache: Path, device: str, batch_size: int,
              progress: Callable[[int], None] | None, log: Callable[[str], None]) -> np.ndarray:
    """The mosaics' features, cached by everything that decides them: the base mosaics in one
    file, the extra training mosaics block by block."""
    n_base = len(images) - spec.extra_train
    backbone = _LazyBackbone(spec)
    parts = [_cached_features(images[:n_base], feat_cache / "features.npy", backbone, device, batch_size, progress, log)]
    for b, lo in enumerate(range(n_base, len(images), EXTRA_BLOCK)):
        hi = min(len(images), lo + EXTRA_BLOCK)
        block_file = feat_cache / f"extra-{b:03d}-{hi - lo}.npy"
        parts.append(_cached_features(images[lo:hi], block_file, backbone, device, batch_size, progress, log))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _aux(spec: DemoSpec, mos: Mosaics, det_hot: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The aux variant of ``spec``: the detector's multi-hot, or noisy tags (the base rows'
    tags first, so that extra rows never change them)."""
    if spec.aux == "detector":
        return det_hot, [f"det:{c}" for c in CLASSES]
    n_base = len(mos.labels) - spec.extra_train
    aux = np.concatenate([noisy_tags(mos.labels[:n_base], spec, np.random.default_rng(spec.seed + 1)),
                          noisy_tags(mos.labels[n_base:], spec, np.random.default_rng([spec.seed, 2]))])
    return aux, [f"tag:{c}" for c in CLASSES] + [f"tag:junk{j}" for j in range(spec.junk_tags)]


def _write(out: Path, spec: DemoSpec, mos: Mosaics, images: np.ndarray, features: np.ndarray, aux: np.ndarray,
           aux_names: list[str], det_scores: np.ndarray, view_feats: np.ndarray | None, views: int, provenance: dict,
           write_images: bool, overwrite: bool, inputs: list) -> None:
    """The dataset directory (:class:`~lagnh_pyg.data.store.DatasetWriter`: built aside, renamed into place)."""
    from ..data.store import DatasetWriter

    paths = [str(out.resolve() / "images" / f"{i}.png") for i in mos.ids]
    with DatasetWriter(out, n=len(images), feature_dim=features.shape[1], aux_dim=aux.shape[1],
                       label_dim=len(CLASSES), aux_names=aux_names, label_names=list(CLASSES),
                       provenance=provenance, overwrite=overwrite, inputs=inputs) as w:
        w.write_rows(0, features, aux, mos.labels)
        w.set_splits(**mos.splits)
        w.set_ids(mos.ids)
        w.set_paths(paths)
        np.save(w.tmp / "aux_scores.npy", det_scores)
        if view_feats is not None:
            w.set_views(mos.splits["train"], view_feats, {**VIEWS_RECIPE, "views": views, "seed": spec.seed + 1,
                                                          "network": f"{spec.backbone} at {spec.image_size}px"})
        if write_images:
            _write_pngs(w.tmp / "images", images, mos.ids)


class _LazyBackbone:
    """The feature network, built on first use (not at all when every feature is cached)."""

    def __init__(self, spec: DemoSpec) -> None:
        self.spec, self.net = spec, None

    def get(self):
        if self.net is None:
            from ..extract.backbones import build_backbone

            self.net = build_backbone(self.spec.backbone, self.spec.weights, image_size=self.spec.image_size)
        return self.net


def _cached_features(images: np.ndarray, final: Path, backbone: _LazyBackbone, device: str, batch_size: int,
                     progress: Callable[[int], None] | None, log: Callable[[str], None]) -> np.ndarray:
    """Features of ``images`` from the cache file ``final``, or computed (resumably) and saved there."""
    if final.is_file():
        features = np.load(final)
        if progress:
            progress(len(images))
        log(f"features: reused cache {final}")
        return features
    t = time.perf_counter()
    partial = final.with_name(final.stem + ".partial")
    features = mosaic_features(images, backbone.get(), device=device, batch_size=batch_size, cache=partial,
                               progress=progress)
    tmp = final.with_name(final.stem + ".tmp.npy")
    np.save(tmp, features)
    os.replace(tmp, final)
    shutil.rmtree(partial, ignore_errors=True)
    secs = time.perf_counter() - t
    log(f"features: {features.shape[1]}-d {backbone.spec.backbone} at {backbone.spec.image_size}px for "
        f"{len(images)} mosaics, {secs:.0f} s ({len(images) / max(secs, 1e-9):.0f} mosaics/s)")
    return features


def _write_pngs(folder: Path, images: np.ndarray, ids: list[str]) -> None:
    from PIL import Image

    folder.mkdir()
    for img, i in zip(images, ids):
        Image.fromarray(img).save(folder / f"{i}.png", optimize=False, compress_level=1)


def _demo_views(spec: DemoSpec, train_images: np.ndarray, k: int, feat_cache: Path, device: str, batch_size: int,
                log: Callable[[str], None]) -> np.ndarray:
    """Features of ``k`` augmented renderings of each training mosaic, through the demo's own
    feature network; cached next to the features."""
    from ..extract.backbones import build_backbone
    from ..extract.views import view_features

    # the key of the mosaic cache leaves out extra_train: the file name must say it
    extra = f"-extra{spec.extra_train}" if spec.extra_train else ""
    final = feat_cache / f"views-{k}-v1{extra}.npy"
    if final.is_file():
        log(f"views: reused cache {final}")
        return np.load(final)
    t = time.perf_counter()
    backbone = build_backbone(spec.backbone, spec.weights, image_size=spec.image_size)
    feats = view_features(train_images, k, lambda imgs: mosaic_features(imgs, backbone, device=device, batch_size=batch_size),
                          seed=spec.seed + 1)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.stem + ".tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, final)
    log(f"views: {k} augmented renderings of {len(train_images)} training mosaics in {time.perf_counter() - t:.0f} s")
    return feats


def _existing_views(out: Path) -> int:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return -1
    return int((manifest.get("views") or {}).get("k", 0))


def _existing_spec(out: Path) -> dict | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    prov = manifest.get("provenance") or {}
    if prov.get("source") != "demo" or not isinstance(prov.get("demo_spec"), dict):
        return None
    # fields added since the dataset was built take their defaults (which rebuild nothing)
    return {**asdict(DemoSpec()), **prov["demo_spec"]}
