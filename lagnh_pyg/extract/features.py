"""Batched, resumable deep-feature extraction into an extraction directory.

Layout of the output (format ``lagnh-extract``, kind ``features``)::

    OUT/
      manifest.json    backbone, weights, preprocessing, dim, counts, skipped files, speed
      features.npy     N_ok x d float32 (or float16), rows in the order of ids.txt
      ids.txt          item id of each row (aligns the features with an importer's catalog:
                       lagnh data import folder|coco|nuswide ... --features OUT/features.npy --ids OUT/ids.txt)
      paths.txt        image path of each row
      skipped.tsv      id <TAB> path <TAB> reason, for every image that could not be decoded
      views.npy        with --views K: N_ok x K x d float16, features of K augmented versions
                       of each image (lagnh_pyg.extract.views: random crop, rotation, flip,
                       contrast), for `lagnh data add-views`

Work is done in shards of ``shard_size`` images saved in ``.OUT.partial/``; an interrupted run
started again with the same arguments skips the finished shards. The final directory appears
only when every shard is done (atomic rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, LagnhError
from ..files import atomic_dir, read_json, write_json_atomic, write_lines
from ..ownership import check_replaceable
from ..text import escape_text
from .backbones import Backbone
from .images import ImageList, iterate_batches

logger = logging.getLogger(__name__)

FORMAT = "lagnh-extract"
VERSION = 1
#: seed of the augmented views (one generator a shard, seeded with it and the shard's number)
VIEWS_SEED = 0


@dataclass
class ExtractionResult:
    out: Path
    n_ok: int
    n_skipped: int
    seconds: float
    images_per_s: float


def embed(backbone: Backbone, batches: Iterable, device: str = "cpu") -> Iterable:
    """Run the backbone over ``(key, float batch)`` pairs; yield ``(key, float32 features)``.

    The network runs with its batch norms folded into the convolutions before them
    (:func:`fold_batch_norms`; EfficientNet-Lite0 on 2 CPU threads: 1.2x in an A/B of 640
    images in one process, 26,000 demo mosaics in 92 s against 135 s), once its
    output on the first items of the first batch is checked against the network as given
    (it is used as given where they differ, or where nothing folds)."""
    import torch

    # channels-last runs convolutions 1.5-2x faster on CPU (measured on EfficientNet-Lite0)
    fmt = torch.channels_last
    model = backbone.model.to(device).to(memory_format=fmt)
    folded = _folded_model(backbone, model, fmt)
    if folded is not None:
        folded = folded.to(device)
    # pretrained weights produce denormal activations that slow CPU arithmetic ~1.5x (measured on
    # EfficientNet-Lite0); flushing them to zero changes features by < 1e-30
    torch.set_flush_denormal(True)
    try:
        with torch.inference_mode():
            for key, x in batches:
                x = x.to(device, non_blocking=True)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=fmt)
                if folded is not None and not backbone._folded_checked:
                    folded = _check_folded(backbone, model, folded, x)
                f = (folded if folded is not None else model)(x)
                yield key, f.float().reshape(len(f), -1).cpu().numpy()
    finally:
        torch.set_flush_denormal(False)


def fold_batch_norms(model):
    """A copy of ``model`` (in eval mode) with every batch norm that directly follows a
    convolution (the next child registered in the same module, with its running statistics)
    folded into that convolution's weight and bias, and replaced by what it applies after
    normalising (timm's ``BatchNormAct2d``: its dropout and activation; a plain
    ``BatchNorm2d``: nothing). Returns ``(copy, number folded)``; the caller must check the
    copy's output, since registration order need not be the order of the forward pass."""
    import copy

    import torch
    from torch import nn

    model = copy.deepcopy(model).eval()
    n = 0
    with torch.no_grad():
        for mod in list(model.modules()):
            kids = list(mod.named_children())
            for (_, conv), (bn_name, bn) in zip(kids, kids[1:]):
                if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)) or bn.running_var is None \
                        or bn.num_features != conv.out_channels:
                    continue
                if type(bn) is nn.BatchNorm2d:
                    after = nn.Identity()
                elif all(isinstance(getattr(bn, a, None), nn.Module) for a in ("drop", "act")):
                    after = nn.Sequential(bn.drop, bn.act)  # timm's BatchNormAct2d: norm, drop, act
                else:
                    continue
                scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
                shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
                setattr(mod, bn_name, after)
                n += 1
    return model, n


def _folded_model(backbone: Backbone, model, fmt):
    """The backbone's network with its batch norms folded, made once per backbone (None when
    none folds, or when its check on real input failed before)."""
    if backbone._folded_checked:
        return backbone._folded
    folded = backbone._folded
    if folded is None:
        try:
            folded, n = fold_batch_norms(model)
        except Exception as e:  # an unusual network: run it as given
            logger.debug("batch norms not folded: %s", e)
            folded, n = None, 0
        folded = folded.to(memory_format=fmt) if n else None
        backbone._folded, backbone._folded_checked = folded, folded is None
    return folded


def _check_folded(backbone: Backbone, model, folded, x):
    """The folded network where its output on the first items of ``x`` matches the network
    as given (to 1e-3 of their scale), else None; decided once per backbone."""
    probe = x[:2]
    want, got = model(probe).float(), folded(probe).float()
    ok = want.shape == got.shape and bool(((want - got).abs().max() <= 1e-3 * max(1.0, float(want.abs().max()))).item())
    if not ok:
        logger.info("batch norms not folded: the folded network's output differs; running it as given")
    backbone._folded, backbone._folded_checked = (folded if ok else None), True
    return backbone._folded


def _plan_key(images: ImageList, backbone: Backbone, shard_size: int, dtype: str, views: int = 0) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(backbone.describe(), sort_keys=True).encode())
    h.update(f"{shard_size}|{dtype}|{len(images)}".encode())
    if views:
        h.update(f"|views={views}|{VIEWS_SEED}".encode())
    for i, p in zip(images.ids, images.paths):
        h.update(f"{i}\t{p}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def input_paths(images: ImageList, *more: str | os.PathLike) -> list[str]:
    """Every input of an extraction: the image source, extra files (a tag CSV), each image."""
    src = images.source.get("path")
    return [str(p) for p in ([src] if src else []) + list(more)] + list(images.paths)


def check_out(out: Path, overwrite: bool, images: ImageList, *more: str | os.PathLike) -> None:
    """Refuse an existing ``--out`` before any work starts: without ``--overwrite`` always,
    with it unless ``out`` is an extraction this project wrote that holds none of the inputs."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise InputError(f"output directory {out} already exists; choose another --out or pass --overwrite")
        check_replaceable(out, (FORMAT,), lambda: input_paths(images, *more))


def extract_features(
    images: ImageList,
    backbone: Backbone,
    out: str | os.PathLike,
    *,
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 2,
    shard_size: int = 2048,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    views: int = 0,
) -> ExtractionResult:
    """Extract ``backbone`` features of every image in ``images`` into ``out``.

    Args:
        images: the images (see :func:`~lagnh_pyg.extract.images.list_image_source`).
        backbone: the network (see :func:`~lagnh_pyg.extract.backbones.build_backbone`).
        device: ``cpu`` or ``cuda[:N]`` (already resolved).
        batch_size / workers: images a forward pass, decoding processes.
        shard_size: images per resumable shard.
        dtype: ``float32`` or ``float16`` storage.
        progress: called with the number of images finished (decoded or skipped).
        views: also extract the features of this many augmented versions of each image
            (``views.npy``; :func:`lagnh_pyg.extract.views.augment_tensor` on the network's
            input, seeded per shard so a resumed run gives the same views).

    Returns:
        counts, wall time and throughput. Undecodable images are skipped and listed.
    """
    out = Path(out)
    if batch_size < 1 or workers < 0 or shard_size < 1:
        raise InputError("--batch-size and --shard-size must be at least 1 and --workers at least 0")
    if dtype not in ("float32", "float16"):
        raise InputError(f"feature dtype must be float32 or float16, got {dtype}")
    if views < 0:
        raise InputError(f"--views must be 0 (none) or positive, got {views}")
    check_out(out, overwrite, images)
    work = _work_dir(out, _plan_key(images, backbone, shard_size, dtype, views), len(images), backbone)
    n = len(images)
    n_shards = (n + shard_size - 1) // shard_size
    shard = _Shard(images, backbone, device, batch_size, workers, dtype, views, progress)
    t0 = time.perf_counter()
    computed = resumed = 0
    for s in range(n_shards):
        lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
        if shard.extract(work / f"shard-{s:05d}.npz", s, lo, hi):
            computed += hi - lo
        else:
            resumed += hi - lo
    seconds = time.perf_counter() - t0
    rate = computed / seconds if seconds > 0 and computed else 0.0
    run = {"device": device, "batch_size": batch_size, "workers": workers, "seconds": round(seconds, 3),
           "images_per_s": round(rate, 2), "resumed_images": resumed}
    n_ok, skipped = _assemble(out, work, n_shards, images, backbone, dtype, views, overwrite, run)
    shutil.rmtree(work, ignore_errors=True)
    return ExtractionResult(out, n_ok, len(skipped), seconds, rate)


def _work_dir(out: Path, key: str, n: int, backbone: Backbone) -> Path:
    """The unfinished extraction's directory next to ``out`` (resumed when its plan is the
    same images and settings, started over when it is ours but different)."""
    work = out.parent / f".{out.name}.partial"
    plan_file = work / "plan.json"
    if work.exists():
        try:
            old = json.loads(plan_file.read_text()).get("key")
        except (OSError, ValueError, RecursionError, AttributeError):
            old = None
        if old != key:
            if not plan_file.is_file():  # not our own work directory: never delete it
                raise InputError(f"{work} exists but is not an unfinished extraction; move it away or choose another --out")
            logger.info("discarding unfinished extraction in %s (different images or settings)", work)
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_file, {"key": key, "n": n, "backbone": backbone.describe()})
    return work


@dataclass
class _Shard:
    """Extracts one shard of images (and their augmented views) into a ``.npz`` file."""

    images: ImageList
    backbone: Backbone
    device: str
    batch_size: int
    workers: int
    dtype: str
    views: int
    progress: Callable[[int], None] | None

    def extract(self, path: Path, s: int, lo: int, hi: int) -> bool:
        """Images ``lo:hi`` into ``path`` (shard number ``s``); False when it was done before."""
        if path.is_file():
            if self.progress:
                self.progress(hi - lo)
            return False
        rows, feats, failed, reasons = [], [], [], []
        view_feats: list[list[np.ndarray]] = [[] for _ in range(self.views)]
        try:
            for (idx, nbad, j), f in embed(self.backbone, self._batches(s, lo, hi, failed, reasons), self.device):
                if j >= 0:
                    view_feats[j].append(f)
                    continue
                rows.extend(idx)
                feats.append(f)
                if self.progress:
                    self.progress(len(idx) + nbad)
        except RuntimeError as e:
            if "DataLoader worker" in str(e) or "timed out" in str(e):
                raise LagnhError(f"an image-decoding worker failed ({str(e).splitlines()[0]}); retry with --workers 0") from None
            raise
        dim = self.backbone.dim
        f_all = np.concatenate(feats).astype(self.dtype) if feats else np.zeros((0, dim), dtype=self.dtype)
        if not np.isfinite(f_all).all():
            raise LagnhError(f"the backbone produced NaN/inf features in shard {s}; try --dtype float32 or another backbone")
        tmp = path.with_name(path.name + ".tmp.npz")
        extra = {"views": _stack_views(view_feats, len(f_all), dim)} if self.views else {}
        np.savez(tmp, rows=np.asarray(rows, dtype=np.int64), features=f_all,
                 failed=np.asarray(failed, dtype=np.int64), reasons=np.asarray(reasons, dtype=str), **extra)
        os.replace(tmp, path)
        return True

    def _batches(self, s: int, lo: int, hi: int, failed: list, reasons: list):
        """Decoded batches of images ``lo:hi``, each followed by its ``views`` augmentations;
        undecodable images go to ``failed`` / ``reasons``."""
        gen = _views_generator(s) if self.views else None
        paths = self.images.paths
        for idx, x, bad in iterate_batches(paths, range(lo, hi), self.backbone.transform(), self.batch_size,
                                           self.workers):
            for i, r in bad:
                failed.append(i)
                reasons.append(r)
                logger.debug("skipped %s: %s", paths[i], r)
            if x is None:
                if self.progress and bad:
                    self.progress(len(bad))
                continue
            yield (idx, len(bad), -1), x
            for j in range(self.views):  # the same batch, augmented: view j of each image
                yield (idx, 0, j), _augment_views(x, gen)


def _assemble(out: Path, work: Path, n_shards: int, images: ImageList, backbone: Backbone, dtype: str, views: int,
              overwrite: bool, run: dict) -> tuple[int, list[tuple[int, str]]]:
    """The shards assembled into the extraction directory ``out`` (atomically); returns the
    images extracted and the (index, reason) of those skipped."""
    n_ok = 0
    skipped: list[tuple[int, str]] = []
    for s in range(n_shards):
        with np.load(work / f"shard-{s:05d}.npz") as z:
            n_ok += len(z["rows"])
            skipped.extend(zip(z["failed"].tolist(), z["reasons"].tolist()))
    if n_ok == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise InputError(f"none of the {len(images)} images could be decoded (first: {images.paths[skipped[0][0]]}: "
                         f"{skipped[0][1]})")
    skipped.sort()
    with atomic_dir(out, overwrite=overwrite, formats=(FORMAT,), inputs=lambda: input_paths(images)) as tmp:
        ok_rows = _write_rows(tmp, work, n_shards, n_ok, backbone.dim, dtype, views)
        write_lines(tmp / "ids.txt", (images.ids[i] for i in ok_rows))
        write_lines(tmp / "paths.txt", (images.paths[i] for i in ok_rows))
        write_lines(tmp / "skipped.tsv", (f"{images.ids[i]}\t{images.paths[i]}\t{_one_line(r)}" for i, r in skipped))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "kind": "features",
            "n_images": len(images),
            "n_items": n_ok,
            "n_skipped": len(skipped),
            "skipped": [{"id": images.ids[i], "path": escape_text(images.paths[i]), "reason": escape_text(r)} for i, r in skipped[:1000]],
            "features": {"file": "features.npy", "dim": backbone.dim, "dtype": dtype},
            "extractor": backbone.describe(),
            "source": images.source,
            **run,
            **({"views": _views_manifest(views)} if views else {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return n_ok, skipped


def _write_rows(tmp: Path, work: Path, n_shards: int, n_ok: int, dim: int, dtype: str, views: int) -> list[int]:
    """features.npy (and views.npy) of the shards, rows in image order; returns those rows."""
    feats = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=dtype, shape=(n_ok, dim))
    vfile = (np.lib.format.open_memmap(tmp / "views.npy", mode="w+", dtype=np.float16, shape=(n_ok, views, dim))
             if views else None)
    ok_rows: list[int] = []
    at = 0
    for s in range(n_shards):
        with np.load(work / f"shard-{s:05d}.npz") as z:
            order = np.argsort(z["rows"], kind="stable")
            block = z["features"][order]
            feats[at : at + len(block)] = block
            if vfile is not None:
                vfile[at : at + len(block)] = z["views"][order]
            at += len(block)
            ok_rows.extend(z["rows"][order].tolist())
    feats.flush()
    del feats
    if vfile is not None:
        vfile.flush()
        del vfile
    return ok_rows


def _one_line(reason: str) -> str:
    """A skip reason for skipped.tsv: no tab or line break (it is one tab-separated line)."""
    return " ".join(str(reason).split())


def _views_generator(shard: int):
    import torch

    return torch.Generator().manual_seed(VIEWS_SEED * 1_000_003 + shard)


def _augment_views(x, gen):
    """A random augmentation of the normalised batch ``x`` (geometric + contrast: see
    :func:`lagnh_pyg.extract.views.augment_tensor`)."""
    from .views import augment_tensor

    return augment_tensor(x, gen, photometric=False)


def _stack_views(parts: list[list[np.ndarray]], n: int, dim: int) -> np.ndarray:
    """Per-view lists of feature blocks -> (n, K, d) float16."""
    out = np.zeros((n, len(parts), dim), dtype=np.float16)
    for j, blocks in enumerate(parts):
        if blocks:
            out[:, j] = np.concatenate(blocks).astype(np.float16)
    if not np.isfinite(out).all():
        raise LagnhError("the backbone produced NaN/inf (or float16-overflowing) view features")
    return out


def _views_manifest(views: int) -> dict:
    from .views import RECIPE

    recipe = {k: v for k, v in RECIPE.items() if k != "brightness"}
    return {"file": "views.npy", "k": views, "dtype": "float16", "seed": VIEWS_SEED,
            "recipe": {**recipe, "applied_to": "the network's normalised input (no brightness change)"}}


def load_extraction(path: str | os.PathLike) -> dict:
    """Read an extraction directory's manifest (checks its format)."""
    path = Path(path)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise InputError(f"{path} is not an extraction directory (no manifest.json)")
    manifest = read_json(mf, "extraction manifest")
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not an extraction directory (format {manifest.get('format')!r})")
    return manifest

