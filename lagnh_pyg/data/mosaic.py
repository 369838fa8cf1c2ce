"""The offline demo dataset: real Fashion-MNIST images in 2x2 mosaics, multi-label like COCO.

What is real and what is constructed:

- real: the images (Fashion-MNIST photographs of clothing, 28x28 grey) and the feature
  network (EfficientNet-Lite0 with its ImageNet weights, shipped offline);
- constructed: the mosaics — each is 56x56, four 28x28 quadrants holding 1-4 items in random
  quadrants (empty ones black); its ground truth is the *set* of its items' classes (10
  classes, multi-label; used only for evaluation) — and the auxiliary semantics.

Auxiliary semantics (``aux``), two variants:

- ``detector`` (default, the MS COCO analogue): an independent "object detector" — a small
  MLP tile classifier trained on a *disjoint* pool of Fashion-MNIST items, applied to every
  non-empty quadrant; a class is present when its score is >= ``detector_threshold`` in some
  quadrant. aux is that multi-hot; the max scores are kept in ``aux_scores.npy``.
- ``tags`` (the NUS-WIDE analogue): noisy user tags — each true class tag is dropped with
  probability ``tag_drop``, each absent class tag is added with probability ``tag_add``, and
  ``junk_tags`` label-unrelated tags fire with probability ``junk_rate``.

Pools of items: the Fashion-MNIST training file is split (seeded) into the detector's pool
and the mosaic pool (training and database mosaics draw from it, each tile reused about
equally often); query mosaics are built from the test file's items only, so no query tile
appears in any training or database mosaic. Splits follow the paper: ``n_train`` training
mosaics, ``n_query`` queries, ``n_database`` database mosaics (training and database
disjoint unless ``train_in_database``).

More training data, same benchmark: ``extra_train`` adds training mosaics drawn from their own
random streams (blocks of ``EXTRA_BLOCK``, one seed each), after all the others. The query,
database and first ``n_train`` training mosaics (and their features, aux and labels) are then
exactly those of the dataset without them, and 20k extra mosaics are the first 20k of 45k:
training on 5k / 25k / 50k mosaics changes the training set only.

Building caches the expensive part (the features) under ``cache_dir``, keyed by everything
that decides it, and writes the mosaics as PNG files to ``DATA_DIR/images/`` (thumbnails for
``search --html``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..ownership import check_replaceable
from .views import RECIPE as VIEWS_RECIPE

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
#: bump when the construction changes, so stale caches are never reused
BUILD_VERSION = 1
#: extra training mosaics are drawn (and their features cached) in blocks of this many
EXTRA_BLOCK = 5000


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


# -- the construction -------------------------------------------------------------------------
@dataclass
class DemoSpec:
    """What decides the demo dataset (all of it is recorded in the manifest).

    Args:
        n_train / n_query / n_database: mosaics in each split.
        extra_train: training mosaics added on top of ``n_train`` without changing any other
            mosaic (see the module docstring).
        train_in_database: let the database hold the training mosaics as well.
        detector_pool: Fashion-MNIST training items reserved for the detector (never in a mosaic).
        aux: ``detector`` or ``tags`` (see the module docstring).
        detector_threshold: a quadrant's class score at or above which the class is detected.
        tag_drop / tag_add / junk_tags / junk_rate: the noisy-tags variant.
        image_size: the side the 56-px mosaics are resized to for the feature network.
        backbone / weights: the feature network (default: offline pretrained EfficientNet-Lite0).
        seed: every random choice.
    """

    n_train: int = 5000
    n_query: int = 1000
    n_database: int = 20000
    train_in_database: bool = False
    detector_pool: int = 10000
    aux: str = "detector"
    detector_threshold: float = 0.5
    tag_drop: float = 0.3
    tag_add: float = 0.05
    junk_tags: int = 10
    junk_rate: float = 0.1
    # 80 px (40 px a tile): 26,000 mosaics in ~75 s on 2 shared cores; 112 px costs ~2x for
    # P@20 0.766 vs 0.746 on a 2,800-mosaic sample (raw pixels 0.683, random weights 0.487)
    image_size: int = 80
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    seed: int = 0
    extra_train: int = 0

    def validate(self) -> None:
        for name in ("n_train", "n_query", "n_database"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.aux not in ("detector", "tags"):
            raise InputError(f"--aux must be detector or tags, got {self.aux!r}")
        if not 0 < self.detector_threshold < 1:
            raise InputError(f"--detector-threshold must lie in (0, 1), got {self.detector_threshold}")
        for name in ("tag_drop", "tag_add", "junk_rate"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise InputError(f"--{name.replace('_', '-')} is a probability in [0, 1], got {v}")
        if self.extra_train < 0:
            raise InputError(f"--extra-train must be non-negative, got {self.extra_train}")
        if self.junk_tags < 0:
            raise InputError(f"--junk-tags must be non-negative, got {self.junk_tags}")
        if not 100 <= self.detector_pool <= 30000:
            raise InputError(f"--detector-pool must lie in [100, 30000], got {self.detector_pool}")
        if self.image_size < 32:
            raise InputError(f"--image-size must be at least 32, got {self.image_size}")

    @property
    def n_mosaics(self) -> int:
        base = self.n_train + self.n_query + self.n_database - (self.n_train if self.train_in_database else 0)
        return base + self.extra_train

    def mosaic_key(self) -> str:
        """Hash of what decides the mosaics and their features (not the aux variant)."""
        # extra_train is not part of it: the base mosaics do not depend on it (the extra
        # blocks are cached under this key too, block by block)
        keep = {k: v for k, v in asdict(self).items()
                if k not in ("aux", "detector_threshold", "tag_drop", "tag_add", "junk_tags", "junk_rate", "extra_train")}
        keep["build_version"] = BUILD_VERSION
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Mosaics:
    """The constructed mosaics.

    ``tiles[i, q]`` is the item in quadrant q (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right) of mosaic i, as an index into the Fashion-MNIST ``train`` file for
    training/database mosaics and into the ``test`` file for queries; -1 = empty.
    """

    tiles: np.ndarray  # (n, 4) int32
    from_test: np.ndarray  # (n,) bool: tiles index the test file
    labels: np.ndarray  # (n, 10) uint8 multi-hot ground truth
    splits: dict[str, np.ndarray]
    ids: list[str]
    detector_items: np.ndarray  # indices into the train file: the detector's pool


def compose(spec: DemoSpec, train_y: np.ndarray, test_y: np.ndarray) -> Mosaics:
    """Draw the mosaics' layouts (which item goes in which quadrant) and their labels.

    Row order: training mosaics, then queries, then the remaining database mosaics, then the
    ``extra_train`` training mosaics.
    """
    rng = np.random.default_rng(spec.seed)
    n_file = len(train_y)
    if spec.detector_pool >= n_file:
        raise InputError(f"--detector-pool {spec.detector_pool} leaves no Fashion-MNIST item for the mosaics")
    perm = rng.permutation(n_file)
    detector_items = np.sort(perm[: spec.detector_pool])
    mosaic_pool = perm[spec.detector_pool :]
    n_db_only = spec.n_database - (spec.n_train if spec.train_in_database else 0)
    if n_db_only < 1:
        raise InputError("--n-database must exceed --n-train when the training mosaics are part of the database")
    n_pool_mosaics = spec.n_train + n_db_only
    n = n_pool_mosaics + spec.n_query

    counts = rng.integers(1, 5, size=n)  # 1-4 items a mosaic
    tiles = np.full((n, 4), -1, dtype=np.int32)
    from_test = np.zeros(n, dtype=bool)
    q_lo, q_hi = spec.n_train, spec.n_train + spec.n_query
    from_test[q_lo:q_hi] = True

    def fill(rows: np.ndarray, pool: np.ndarray, reuse: bool) -> None:
        need = int(counts[rows].sum())
        if not reuse and need > len(pool):
            raise InputError(f"{len(rows)} query mosaics need {need} test items; the test file has {len(pool)}")
        reps = -(-need // len(pool))  # cycle through shuffled copies: every tile used about equally
        order = np.concatenate([rng.permutation(pool) for _ in range(reps)])[:need]
        at = 0
        for i in rows:
            k = int(counts[i])
            quads = rng.choice(4, size=k, replace=False)
            tiles[i, quads] = order[at : at + k]
            at += k

    pool_rows = np.concatenate([np.arange(0, q_lo), np.arange(q_hi, n)])
    fill(pool_rows, mosaic_pool, reuse=True)
    fill(np.arange(q_lo, q_hi), np.arange(len(test_y)), reuse=False)

    extra = extra_tiles(spec, mosaic_pool)
    tiles = np.concatenate([tiles, extra])
    from_test = np.concatenate([from_test, np.zeros(len(extra), dtype=bool)])
    labels = _labels(tiles, from_test, train_y, test_y)

    train = np.concatenate([np.arange(0, spec.n_train), np.arange(n, n + len(extra))])
    query = np.arange(q_lo, q_hi)
    db_only = np.arange(q_hi, n)
    database = np.concatenate([train[: spec.n_train], db_only]) if spec.train_in_database else db_only
    ids = ([f"train-{i:05d}" for i in range(spec.n_train)] + [f"query-{i:05d}" for i in range(spec.n_query)]
           + [f"db-{i:05d}" for i in range(n_db_only)]
           + [f"train-{i:05d}" for i in range(spec.n_train, spec.n_train + len(extra))])
    return Mosaics(tiles, from_test, labels, {"train": train, "query": query, "database": database}, ids, detector_items)


def extra_tiles(spec: DemoSpec, mosaic_pool: np.ndarray) -> np.ndarray:
    """The layouts ``(extra_train, 4)`` of the extra training mosaics, from the mosaic pool.

    Block ``b`` of ``EXTRA_BLOCK`` mosaics has its own generator (seeded by ``spec.seed`` and
    ``b``) and is always drawn whole, then cut: a smaller ``extra_train`` gives a prefix of a
    larger one.
    """
    blocks = []
    for b in range(-(-spec.extra_train // EXTRA_BLOCK)):
        rng = np.random.default_rng([spec.seed, 1, b])
        counts = rng.integers(1, 5, size=EXTRA_BLOCK)
        need = int(counts.sum())
        reps = -(-need // len(mosaic_pool))
        order = np.concatenate([rng.permutation(mosaic_pool) for _ in range(reps)])[:need]
        block = np.full((EXTRA_BLOCK, 4), -1, dtype=np.int32)
        ends = np.cumsum(counts)
        for i in range(EXTRA_BLOCK):
            quads = rng.choice(4, size=int(counts[i]), replace=False)
            block[i, quads] = order[ends[i] - counts[i] : ends[i]]
        blocks.append(block)
    if not blocks:
        return np.empty((0, 4), dtype=np.int32)
    return np.concatenate(blocks)[: spec.extra_train]


def _labels(tiles: np.ndarray, from_test: np.ndarray, train_y: np.ndarray, test_y: np.ndarray) -> np.ndarray:
    """Multi-hot ground truth ``(n, 10)``: the set of the classes of a mosaic's items."""
    labels = np.zeros((len(tiles), len(CLASSES)), dtype=np.uint8)
    for q in range(4):
        has = tiles[:, q] >= 0
        idx = np.maximum(tiles[:, q], 0)
        cls = np.where(from_test, test_y[np.minimum(idx, len(test_y) - 1)], train_y[idx])
        labels[np.flatnonzero(has), cls[has]] = 1
    return labels


def render(m: Mosaics, train_x: np.ndarray, test_x: np.ndarray, rows: slice | np.ndarray | None = None) -> np.ndarray:
    """The mosaics ``rows`` as uint8 ``(n, 56, 56)`` grey images (empty quadrants black)."""
    tiles = m.tiles if rows is None else m.tiles[rows]
    test = m.from_test if rows is None else m.from_test[rows]
    out = np.zeros((len(tiles), 2 * TILE, 2 * TILE), dtype=np.uint8)
    for q in range(4):
        r, c = divmod(q, 2)
        has = tiles[:, q] >= 0
        idx = np.maximum(tiles[:, q], 0)
        block = np.where(test[:, None, None], test_x[np.minimum(idx, len(test_x) - 1)], train_x[idx])
        out[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = np.where(has[:, None, None], block, 0)
    return out


# -- the "detector" ----------------------------------------------------------------------------
class TileDetector:
    """A small MLP (784 -> 256 -> 10) over a tile's pixels: the demo's independent object detector.

    Trained on the detector pool only (items that appear in no mosaic), like a Faster R-CNN
    trained on other data; applied to each non-empty quadrant of a mosaic.
    """

    def __init__(self, seed: int = 0, hidden: int = 256) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.net = torch.nn.Sequential(torch.nn.Linear(TILE * TILE, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, len(CLASSES)))
        for mod in self.net:
            if isinstance(mod, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(mod.weight, a=5 ** 0.5, generator=g)
                torch.nn.init.zeros_(mod.bias)

    @staticmethod
    def _x(tiles: np.ndarray):
        import torch

        return torch.from_numpy(tiles.reshape(len(tiles), -1).astype(np.float32) / 255.0)

    def fit(self, tiles: np.ndarray, labels: np.ndarray, epochs: int = 10, batch: int = 128) -> TileDetector:
        import torch

        x, y = self._x(tiles), torch.from_numpy(labels.astype(np.int64))
        opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(self.net(x[idx]), y[idx]).backward()
                opt.step()
        self.net.eval()
        return self

    def scores(self, tiles: np.ndarray) -> np.ndarray:
        """Softmax class scores ``(n, 10)`` of ``(n, 28, 28)`` tiles."""
        import torch

        with torch.inference_mode():
            return torch.softmax(self.net(self._x(tiles)), 1).numpy()

    def detect(self, mosaics: np.ndarray) -> np.ndarray:
        """Per class, the highest score over a mosaic's non-empty quadrants: ``(n, 10)``."""
        best = np.zeros((len(mosaics), len(CLASSES)), dtype=np.float32)
        for q in range(4):
            r, c = divmod(q, 2)
            quad = mosaics[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            present = quad.reshape(len(quad), -1).max(1) > 0  # the "region proposal": something is there
            if present.any():
                best[present] = np.maximum(best[present], self.scores(quad[present]))
        return best


def noisy_tags(labels: np.ndarray, spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    """NUS-WIDE-like tags: true tags dropped, spurious class tags added, junk tags appended."""
    keep = rng.random(labels.shape) >= spec.tag_drop
    add = rng.random(labels.shape) < spec.tag_add
    tags = np.where(labels > 0, keep, add).astype(np.float32)
    junk = (rng.random((len(labels), spec.junk_tags)) < spec.junk_rate).astype(np.float32)
    return np.concatenate([tags, junk], axis=1)


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
    (:mod:`lagnh_pyg.data.views`), for the baselines that learn from views.
    """
    from .store import DatasetWriter

    spec.validate()
    if views < 0:
        raise InputError(f"--views must be 0 (none) or positive, got {views}")
    out = Path(out)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    spec_dict = asdict(spec)
    if out.exists() and not overwrite:
        existing = _existing_spec(out)
        if existing == spec_dict and _existing_views(out) == views:
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

    # the detector: trained on its own pool, checked on held-out pool items
    t = time.perf_counter()
    pool = mos.detector_items
    n_val = max(1, len(pool) // 10)
    n_fit = len(pool) - n_val
    epochs = max(8, -(-150 // -(-n_fit // 512)))  # at least ~150 Adam steps, however small the pool
    det = TileDetector(seed=spec.seed).fit(train_x[pool[n_val:]], train_y[pool[n_val:]], epochs=epochs, batch=512)
    val_acc = float((det.scores(train_x[pool[:n_val]]).argmax(1) == train_y[pool[:n_val]]).mean())
    det_scores = det.detect(images)
    det_hot = (det_scores >= spec.detector_threshold).astype(np.float32)
    tp = float((det_hot * mos.labels).sum())
    precision = tp / max(1.0, float(det_hot.sum()))
    recall = tp / max(1.0, float(mos.labels.sum()))
    timings["detector_s"] = time.perf_counter() - t
    log(f"detector: tile accuracy {val_acc:.3f} on held-out pool items; on the mosaics precision {precision:.3f}, recall {recall:.3f}")

    # the features (cached by everything that decides them): the base mosaics in one file, the
    # extra training mosaics block by block
    t = time.perf_counter()
    feat_cache = cache_root / spec.mosaic_key()
    n_base = len(images) - spec.extra_train
    backbone = _LazyBackbone(spec)
    parts = [_cached_features(images[:n_base], feat_cache / "features.npy", backbone, device, batch_size, progress, log)]
    for b, lo in enumerate(range(n_base, len(images), EXTRA_BLOCK)):
        hi = min(len(images), lo + EXTRA_BLOCK)
        block_file = feat_cache / f"extra-{b:03d}-{hi - lo}.npy"
        parts.append(_cached_features(images[lo:hi], block_file, backbone, device, batch_size, progress, log))
    features = np.concatenate(parts) if len(parts) > 1 else parts[0]
    timings["features_s"] = time.perf_counter() - t
    view_feats = None
    if views:
        t = time.perf_counter()
        view_feats = _demo_views(spec, images[mos.splits["train"]], views, feat_cache, device, batch_size, log)
        timings["views_s"] = time.perf_counter() - t

    if spec.aux == "detector":
        aux, aux_names = det_hot, [f"det:{c}" for c in CLASSES]
    else:  # the base rows' tags first, so that extra rows never change them
        aux = np.concatenate([noisy_tags(mos.labels[:n_base], spec, np.random.default_rng(spec.seed + 1)),
                              noisy_tags(mos.labels[n_base:], spec, np.random.default_rng([spec.seed, 2]))])
        aux_names = [f"tag:{c}" for c in CLASSES] + [f"tag:junk{j}" for j in range(spec.junk_tags)]

    t = time.perf_counter()
    final_out = out.resolve()
    paths = [str(final_out / "images" / f"{i}.png") for i in mos.ids]
    summary = {
        "detector": {"tile_accuracy_heldout": round(val_acc, 4), "mosaic_precision": round(precision, 4),
                     "mosaic_recall": round(recall, 4), "threshold": spec.detector_threshold,
                     "trained_on": f"{len(pool) - n_val} Fashion-MNIST training items outside every mosaic"},
        "mean_labels_per_mosaic": round(float(mos.labels.sum(1).mean()), 3),
        "mean_aux_per_mosaic": round(float((aux > 0).sum(1).mean()), 3),
    }
    provenance = {
        "source": "demo",
        "demo_spec": spec_dict,
        "real": "Fashion-MNIST images (Xiao et al. 2017); EfficientNet-Lite0 ImageNet weights",
        "constructed": "2x2 mosaics of 1-4 items (labels = set of item classes); aux from a tile-classifier "
                       "'detector' trained on disjoint items, or noisy tags",
        "feature_cache": str(feat_cache),
        **summary,
    }
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
    timings["write_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t_start
    return {"cached": False, "out": str(out), "n_items": len(images), "feature_dim": int(features.shape[1]),
            "aux_dim": int(aux.shape[1]), "timings": {k: round(v, 2) for k, v in timings.items()}, **summary}


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
    from .views import view_features

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
