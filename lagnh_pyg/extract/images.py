"""Images to extract from, and a loader that never hangs or crashes on a bad file.

An image source is one of:

- a folder: every image file under it (recursive; :func:`list_images`),
  the item id being the path relative to the folder;
- a list file (``.txt``/``.lst``/``.csv`` without header): one image path a line, relative
  paths taken relative to the list file's folder, the line itself the item id;
- a dataset directory (``manifest.json`` + ``paths.txt``, e.g. an imported COCO or NUS-WIDE
  dataset): its image paths and item ids.

Decoding happens in worker processes. A file that cannot be decoded (truncated, corrupt, not
an image) is skipped and returned with the reason, so the caller lists it in its manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import read_text

logger = logging.getLogger(__name__)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


@dataclass
class ImageList:
    """Images to process: ``ids[i]`` names ``paths[i]``; ``source`` says where they came from."""

    ids: list[str]
    paths: list[str]
    source: dict

    def __len__(self) -> int:
        return len(self.ids)


def list_image_source(source: str | os.PathLike) -> ImageList:
    """Resolve a folder, a list file or a dataset directory into an :class:`ImageList`.

    Raises:
        InputError: the source does not exist, holds no image, or a dataset has no paths.
    """
    src = Path(source)
    if not src.exists():
        raise InputError(f"image source {src} does not exist (give a folder, a list file or a dataset directory)")
    if src.is_dir() and (src / "manifest.json").is_file():
        try:
            manifest = json.loads((src / "manifest.json").read_text())
        except ValueError as e:
            raise InputError(f"{src / 'manifest.json'} is not valid JSON: {e}") from None
        if not (src / "paths.txt").is_file():
            raise InputError(f"dataset {src} records no image paths (paths.txt); extract from its image folder instead")
        paths = read_text(src / "paths.txt", "image paths").splitlines()
        ids = read_text(src / "ids.txt", "ids").splitlines() if (src / "ids.txt").is_file() else [str(i) for i in range(len(paths))]
        if len(ids) != len(paths):
            raise InputError(f"dataset {src}: {len(ids)} ids but {len(paths)} paths")
        base = src
        paths = [p if os.path.isabs(p) or Path(p).exists() else str(base / p) for p in paths]
        return ImageList(ids, paths, {"kind": "dataset", "path": str(src), "format": manifest.get("format")})
    if src.is_dir():
        rel = list_images(src)
        return ImageList(rel, [str(src / r) for r in rel], {"kind": "folder", "path": str(src)})
    # a list file
    lines = [ln.strip() for ln in src.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InputError(f"image list {src} names no image (one path a line expected)")
    seen: set[str] = set()
    for ln in lines:
        if ln in seen:
            raise InputError(f"image list {src} names {ln!r} twice")
        seen.add(ln)
    paths = [ln if os.path.isabs(ln) else str(src.parent / ln) for ln in lines]
    return ImageList(lines, paths, {"kind": "list", "path": str(src)})


def read_image(path: str):
    """Open and fully decode ``path`` as RGB; raise ``OSError``/``ValueError`` on a bad file."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now: a truncated file fails here, inside the worker
        return img.convert("RGB")


class ImageDataset:
    """``torch.utils.data.Dataset`` over image paths: ``(index, tensor | None, error | None)``.

    Args:
        paths: the image files.
        transform: PIL image -> tensor (see :meth:`Backbone.transform`), or ``None`` to return
            a ``uint8`` HWC array (detectors do their own resizing).
    """

    def __init__(self, paths: Sequence[str], transform: Callable | None = None) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = read_image(self.paths[i])
            if self.transform is None:
                import numpy as np
                import torch

                return i, torch.from_numpy(np.array(img, dtype=np.uint8)), None
            return i, self.transform(img), None
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"
            return i, None, reason[:200]


def collate(items):
    """Stack decodable images; pass failures through as ``(index, reason)`` pairs."""
    import torch

    ok = [(i, x) for i, x, err in items if err is None]
    bad = [(i, err) for i, x, err in items if err is not None]
    idx = [i for i, _ in ok]
    if not ok:
        return idx, None, bad
    xs = [x for _, x in ok]
    if all(x.shape == xs[0].shape for x in xs):
        return idx, torch.stack(xs), bad
    return idx, xs, bad  # variable-size uint8 images (detector input)


def iterate_batches(
    paths: Sequence[str],
    indices: Sequence[int],
    transform: Callable | None,
    batch_size: int,
    workers: int,
    timeout_s: float = 300.0,
) -> Iterator[tuple[list[int], object, list[tuple[int, str]]]]:
    """Yield ``(indices, batch, failures)`` over ``indices`` of ``paths`` in order.

    ``workers`` processes decode in parallel (0 = in this process). A worker that stalls for
    ``timeout_s`` seconds on one batch raises instead of hanging forever.
    """
    from torch.utils.data import DataLoader, Subset

    ds = Subset(ImageDataset(paths, transform), list(indices))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        timeout=timeout_s if workers > 0 else 0,
        persistent_workers=False,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
    # ImageDataset returns each item's index into ``paths``, so no re-mapping is needed
    yield from loader


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)  # decoding workers must not compete with the network's threads
