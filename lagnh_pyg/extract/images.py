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
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files import read_lines, read_text
from ..limits import (  # noqa: F401 - the limits, where the readers of pictures find them
    MAX_ASPECT,
    MAX_PIXELS,
    MAX_RESIZED_PIXELS,
    PictureTooLarge,
    UnreadableImage,
    check_geometry,
    check_resized,
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Image files under ``root`` (recursive, hidden entries skipped) as sorted relative POSIX
    paths: the item ids (:func:`list_image_files`; a name that is not UTF-8 is given in its
    escaped form)."""
    return [i for i, _ in list_image_files(root, extensions)]


def list_image_files(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[tuple[str, str]]:
    """``(item id, relative path)`` of every image file under ``root`` (recursive, hidden
    entries skipped), sorted by id. The id is the relative POSIX path, where a name that is not
    valid UTF-8 has each undecodable byte written ``\\xNN`` (:func:`lagnh_pyg.text.name_to_id`);
    the relative path is the real one. A name with a control character or a line break is
    skipped with one warning (:func:`lagnh_pyg.text.unrecordable_name`): the id and path files
    are one a line. Entries that are not regular files (a FIFO, a dangling link) are listed:
    reading them fails, and each command skips them with that reason."""
    from ..text import name_to_id, unrecordable_name

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    exts = {e.lower() for e in extensions}
    found, odd = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts:
                rel = Path(dirpath, f).relative_to(root).as_posix()
                why = unrecordable_name(rel)
                if why is None:
                    found.append((name_to_id(rel), rel))
                else:
                    odd.append((rel, why))
    if odd:
        from ..text import escape_text

        logger.warning("skipped %d picture(s) under %s: %s", len(odd), root,
                       "; ".join(f"{escape_text(r)!r}: {why}" for r, why in odd[:3]) + ("; ..." if len(odd) > 3 else ""))
    if not found:
        raise InputError(f"no images ({', '.join(sorted(exts))}) under {root}")
    ids = [i for i, _ in found]
    if len(set(ids)) != len(ids):  # a literal "\\xe9" next to the byte 0xe9: keep the first, say so
        seen: set[str] = set()
        keep = []
        for i, r in sorted(found):
            if i in seen:
                logger.warning("skipped %r under %s: its escaped id %r is another file's name", r.encode(
                    "utf-8", "surrogateescape"), root, i)
                continue
            seen.add(i)
            keep.append((i, r))
        found = keep
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
        except RecursionError:
            raise InputError(f"{src / 'manifest.json'} is not valid JSON (nested too deeply)") from None
        if not (src / "paths.txt").is_file():
            raise InputError(f"dataset {src} records no image paths (paths.txt); extract from its image folder instead")
        paths = read_lines(src / "paths.txt")
        ids = read_text(src / "ids.txt", "ids").splitlines() if (src / "ids.txt").is_file() else [str(i) for i in range(len(paths))]
        if len(ids) != len(paths):
            raise InputError(f"dataset {src}: {len(ids)} ids but {len(paths)} paths")
        base = src
        paths = [p if os.path.isabs(p) or Path(p).exists() else str(base / p) for p in paths]
        return ImageList(ids, paths, {"kind": "dataset", "path": str(src), "format": manifest.get("format")})
    if src.is_dir():
        files = list_image_files(src)
        return ImageList([i for i, _ in files], [str(src / r) for _, r in files], {"kind": "folder", "path": str(src)})
    if src.suffix.lower() in IMAGE_EXTENSIONS:  # read as a list file, a picture is garbage, and a FIFO blocks forever
        kind = "a picture" if src.is_file() else f"not a regular file ({_file_kind(os.stat(src).st_mode)})"
        raise InputError(f"image source {src} is {kind}; give a folder, a list file or a dataset directory")
    # a list file: one path a line, split at "\n" only; a path that is not UTF-8 keeps its bytes
    # and gets the id a folder would give it (written \xNN), a path with a control character
    # (no picture could be recorded under it) is refused with its line
    from ..text import escape_text, name_to_id, unrecordable_name

    numbered = [(n, ln.strip()) for n, ln in enumerate(read_lines(src), 1)]
    numbered = [(n, ln) for n, ln in numbered if ln and not ln.startswith("#")]
    if not numbered:
        raise InputError(f"image list {src} names no image (one path a line expected)")
    seen: set[str] = set()
    for n, ln in numbered:
        why = unrecordable_name(ln)
        if why is not None:
            raise InputError(f"image list {src}, line {n}: {escape_text(ln)[:80]!r}: {why}")
        if ln in seen:
            raise InputError(f"image list {src} names {escape_text(ln)!r} twice")
        seen.add(ln)
    lines = [ln for _, ln in numbered]
    paths = [ln if os.path.isabs(ln) else str(src.parent / ln) for ln in lines]
    return ImageList([name_to_id(ln) for ln in lines], paths, {"kind": "list", "path": str(src)})


def read_image(path: str, max_pixels: int = MAX_PIXELS):
    """Open and fully decode ``path`` as RGB; raise ``OSError``/``ValueError`` on a bad file and
    :class:`PictureTooLarge` on one over the size limits (checked on the header, before
    decoding). Only a regular file is opened: a FIFO would block the reader forever."""
    import stat

    from PIL import Image

    mode = os.stat(path).st_mode  # follows symlinks: a dangling one is FileNotFoundError
    if not stat.S_ISREG(mode):
        raise OSError(f"not a regular file ({_file_kind(mode)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked just below, with a clearer line
        img = Image.open(path)
    with img:
        check_geometry(*img.size, Path(path).name, max_pixels)
        img.load()  # decode now: a truncated file fails here, inside the worker
        return img.convert("RGB")


def _file_kind(mode: int) -> str:
    import stat

    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a file"


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
