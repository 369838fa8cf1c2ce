"""Fashion-MNIST, the demo's real images: the four IDX files read from a folder (the Debian
package ``dataset-fashion-mnist``'s, ``$LAGNH_FASHION_MNIST``, or a given one), or downloaded
with torchvision into the cache.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
TILE = 28
SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# -- Fashion-MNIST ---------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if len(data) < 8:
        raise InputError(f"{path} is too short to be an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise InputError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise InputError(f"{path} holds {body.size} bytes of data, its header announces {int(np.prod(dims))}")
    return body.reshape(dims)


def _find_files(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in FILES.items():
        for cand in (folder / f"{stem}.gz", folder / stem, folder / "FashionMNIST" / "raw" / f"{stem}.gz",
                     folder / "FashionMNIST" / "raw" / stem):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def load_fashion_mnist(folder: str | os.PathLike | None = None, download_root: str | os.PathLike | None = None):
    """Fashion-MNIST as ``(train_x, train_y, test_x, test_y)``: uint8 ``(N, 28, 28)`` and labels.

    Looks in ``folder`` when given; else in ``$LAGNH_FASHION_MNIST``, the Debian package's
    ``/usr/share/datasets/fashion-mnist`` and ``download_root``; else tries torchvision's
    download into ``download_root``.

    Raises:
        InputError: the files are nowhere and cannot be downloaded (the message says how to
            install them offline).
    """
    if folder is not None:
        folder = Path(folder)
        files = _find_files(folder) if folder.is_dir() else None
        if files is None:
            raise InputError(
                f"--fashion-mnist-dir {folder} does not hold the four Fashion-MNIST IDX files "
                f"({', '.join(s + '[.gz]' for s in FILES.values())})"
            )
    else:
        candidates = [Path(p) for p in (os.environ.get("LAGNH_FASHION_MNIST"),) if p]
        candidates += [Path(p) for p in SYSTEM_DIRS]
        if download_root is not None:
            candidates.append(Path(download_root))
        files = next((f for f in (_find_files(c) for c in candidates if c.is_dir()) if f), None)
        if files is None:
            files = _download(download_root)
    arrays = {k: _read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or x.shape[1:] != (TILE, TILE) or len(x) != len(y) or (y.size and y.max() >= len(CLASSES)):
            raise InputError(f"the Fashion-MNIST {split} files have unexpected shapes {x.shape} / {y.shape}")
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


def _download(root: str | os.PathLike | None) -> dict[str, Path]:
    hint = (
        "Fashion-MNIST is not installed: on Debian/Ubuntu run `apt-get install dataset-fashion-mnist` "
        "(files in /usr/share/datasets/fashion-mnist), or pass --fashion-mnist-dir DIR holding its four IDX files"
    )
    if root is None:
        raise InputError(hint)
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except ImportError:
        raise InputError(hint + " (torchvision, which could download it, is not installed)") from None
    except Exception as e:  # noqa: BLE001 - no network shows as URLError, RuntimeError, ...
        raise InputError(f"{hint} (download failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})") from None
    files = _find_files(Path(root))
    if files is None:
        raise InputError(hint + f" (torchvision's download left no IDX files under {root})")
    return files
