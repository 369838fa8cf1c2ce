"""A controllable multi-label dataset of any size, for tests and scaling runs.

Each item carries 1-3 of ``classes`` labels (class frequencies follow a mild power law, like
COCO's). Its feature vector is the non-negative mixture

    x = relu( sum_{l in labels} w_l p_l  +  v * q_{nuisance}  +  noise * eps ),

with unit class prototypes p_l, a nuisance "background" prototype q shared by items of
unrelated classes (so raw visual neighbours are not always semantic neighbours; the
auxiliary semantics have something to fix), and Gaussian noise eps. The auxiliary semantics
are the labels seen through a noisy "detector/tagger": each true label is dropped with
probability ``aux_drop``, each absent label appears with probability ``aux_add``, and
``junk_tags`` extra tag columns fire at random (uninformative tags, NUS-WIDE style).

Rows are generated and streamed to disk in chunks, so memory stays bounded for any N.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .store import DatasetWriter


@dataclass
class SyntheticSpec:
    n: int
    dim: int = 512
    classes: int = 24
    junk_tags: int = 40
    noise: float = 1.0
    nuisance: float = 1.0
    nuisance_clusters: int = 16
    aux_drop: float = 0.2
    aux_add: float = 0.02
    junk_rate: float = 0.05
    n_train: int | None = None  # None: 5,000, clamped so that the database keeps a third of N
    n_query: int | None = None  # None: 1,000, at most a tenth of N
    train_in_database: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.n < 3:
            raise InputError(f"--n must be at least 3, got {self.n}")
        if self.dim < 2 or self.classes < 2:
            raise InputError("--dim and --classes must be at least 2")
        for name, flag in (("aux_drop", "--aux-noise"), ("aux_add", "--aux-add"), ("junk_rate", "junk_rate")):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise InputError(f"{flag} is a probability in [0, 1], got {v}")
        if self.noise < 0 or self.nuisance < 0:
            raise InputError("--noise and --nuisance must be non-negative")
        split_sizes(self)


def split_sizes(spec: SyntheticSpec) -> tuple[int, int]:
    """Train and query sizes: given ones exactly (refused when they leave no database),
    defaults clamped so that the database keeps at least a third of N."""
    n_query = spec.n_query if spec.n_query is not None else min(1000, max(1, spec.n // 10))
    if spec.n_train is not None:
        n_train = spec.n_train
    else:
        n_train = min(5000, max(1, (spec.n - n_query) // 3 if not spec.train_in_database else spec.n - n_query))
    if n_train < 1 or n_query < 1:
        raise InputError(f"--n-train and --n-query must be at least 1, got {n_train} and {n_query}")
    database = spec.n - n_query - (0 if spec.train_in_database else n_train)
    if n_train + n_query > spec.n or database < 1:
        raise InputError(
            f"--n {spec.n} cannot hold {n_train} training and {n_query} query items and still leave a database"
            f"{'' if spec.train_in_database else ' (the database excludes training items unless --train-in-database)'}"
            "; lower --n-train / --n-query or raise --n"
        )
    return n_train, n_query


BLOCK_ROWS = 32768


def generate(spec: SyntheticSpec, out: str | os.PathLike, overwrite: bool = False, progress=None) -> Path:
    """Write a synthetic dataset directory to ``out``; returns its path.

    Rows come in blocks of ``BLOCK_ROWS``, each from its own generator seeded by
    ``(seed, block)``, so any N is produced with bounded memory and a row never depends on
    how the work is scheduled.
    """
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    C, D = spec.classes, spec.dim
    protos = rng.standard_normal((C, D)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    nuis = rng.standard_normal((spec.nuisance_clusters, D)).astype(np.float32)
    nuis /= np.linalg.norm(nuis, axis=1, keepdims=True)
    freq = 1.0 / np.arange(1, C + 1) ** 0.7
    freq /= freq.sum()
    scale = 4.0  # signal magnitude; noise is relative to it through spec.noise
    aux_dim = C + spec.junk_tags
    n_train, n_query = split_sizes(spec)
    perm = rng.permutation(spec.n)
    query = np.sort(perm[:n_query])
    train = np.sort(perm[n_query : n_query + n_train])
    database = np.sort(perm[n_query:]) if spec.train_in_database else np.sort(perm[n_query + n_train :])
    names = [f"class_{i}" for i in range(C)]
    with DatasetWriter(
        out, spec.n, D, aux_dim, label_dim=C, aux_names=names + [f"junk_{j}" for j in range(spec.junk_tags)],
        label_names=names, provenance={"source": "synthetic", "spec": asdict(spec)}, overwrite=overwrite,
    ) as w:
        for s in range(0, spec.n, BLOCK_ROWS):
            m = min(BLOCK_ROWS, spec.n - s)
            rng = np.random.default_rng([spec.seed, 1 + s // BLOCK_ROWS])
            n_lab = rng.choice([1, 2, 3], size=m, p=[0.45, 0.35, 0.2])
            labels = np.zeros((m, C), dtype=np.uint8)
            # draw up to 3 distinct labels per row by the Gumbel-top-k trick on log frequencies
            g = np.log(freq)[None, :] - np.log(-np.log(rng.random((m, C))))
            top = np.argsort(-g, axis=1)[:, :3]
            for j in range(3):
                sel = n_lab > j
                labels[np.flatnonzero(sel), top[sel, j]] = 1
            weights = labels * rng.uniform(0.6, 1.4, size=(m, C)).astype(np.float32)
            x = weights @ protos
            x += spec.nuisance * nuis[rng.integers(0, spec.nuisance_clusters, size=m)]
            x *= scale
            x += (spec.noise * rng.standard_normal((m, D), dtype=np.float32))
            np.maximum(x, 0, out=x)
            aux = np.zeros((m, aux_dim), dtype=np.float32)
            keep = rng.random((m, C)) >= spec.aux_drop
            spurious = rng.random((m, C)) < spec.aux_add
            aux[:, :C] = ((labels.astype(bool) & keep) | (~labels.astype(bool) & spurious))
            if spec.junk_tags:
                aux[:, C:] = rng.random((m, spec.junk_tags)) < spec.junk_rate
            w.write_rows(s, x, aux, labels)
            if progress is not None:
                progress(m)
        w.set_splits(train=train, query=query, database=database)
    return Path(out)
