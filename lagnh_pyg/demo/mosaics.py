"""The demo's constructed part: 2x2 mosaics of Fashion-MNIST items, multi-label like COCO.

Each mosaic is 56x56, four 28x28 quadrants holding 1-4 items in random quadrants (empty ones
black); its ground truth is the *set* of its items' classes (10 classes, multi-label; used
only for evaluation).

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

The ``tags`` aux variant (the NUS-WIDE analogue, :func:`noisy_tags`) is made here too: each
true class tag is dropped with probability ``tag_drop``, each absent class tag is added with
probability ``tag_add``, and ``junk_tags`` label-unrelated tags fire with probability
``junk_rate``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from .fashion_mnist import CLASSES, TILE

#: bump when the construction changes, so stale caches are never reused
BUILD_VERSION = 1
#: extra training mosaics are drawn (and their features cached) in blocks of this many
EXTRA_BLOCK = 5000


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


def noisy_tags(labels: np.ndarray, spec: DemoSpec, rng: np.random.Generator) -> np.ndarray:
    """NUS-WIDE-like tags: true tags dropped, spurious class tags added, junk tags appended."""
    keep = rng.random(labels.shape) >= spec.tag_drop
    add = rng.random(labels.shape) < spec.tag_add
    tags = np.where(labels > 0, keep, add).astype(np.float32)
    junk = (rng.random((len(labels), spec.junk_tags)) < spec.junk_rate).astype(np.float32)
    return np.concatenate([tags, junk], axis=1)
