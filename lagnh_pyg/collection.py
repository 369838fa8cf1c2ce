"""A run's searchable collection held in memory: the saved index plus added items.

What ``lagnh serve`` answers from and what ``lagnh add`` / ``lagnh dedup`` work on. It reads
the run directory (``run.json``, ``codes/``, ``index/``), the dataset of its codes (ids,
paths, label names) and the side store of items added since (:mod:`lagnh_pyg.added`):

* the index is the run's saved one (or, when none was saved, an exact in-memory one built
  from the database codes: :func:`lagnh_pyg.retrieval.open_index`); added items are appended
  to it in log order, so their positions, and the tie order, are the same after a restart;
* deleted items stay in the FAISS index but are filtered out of every answer (a tombstone
  set; a search asks FAISS for ``k`` plus the number of tombstones);
* searches rank exactly as :func:`lagnh_pyg.retrieval.search_run` (``lagnh search``): the
  same :meth:`HammingIndex.search`, ties by database order.

Thread safety: any number of searches run at once (FAISS releases the GIL). Changes are
committed one at a time (the log's fsync runs while searches go on); only the in-memory
append to the index excludes searches (a readers-writer lock), since a FAISS index must not
grow while it is searched.

Across processes (a server and ``lagnh add`` on one run): every change takes the side store's
lock, first applies what other processes committed since (their items join the index in log
order), then checks its ids against everything committed, then commits
(:mod:`lagnh_pyg.added`). A running server thus sees another process's items at its next
change, or after a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .added import AddedItem, AddedLog, check_item_id, check_tags
from .errors import InputError
from .rerank import DatasetVectors, RerankScore, Vectors, own_item_first, two_stage
from .rerank import query_vectors as make_query_vectors
from .rundir import Run
from .runtime import usable_cores

logger = logging.getLogger(__name__)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds new readers back (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


@dataclass
class Hit:
    rank: int
    id: str
    distance: int
    score: float | None = None  # the re-rank score (two-stage ranking), None when not re-ranked


@dataclass
class Encoded:
    """New pictures encoded: packed ``codes``, their ``vectors`` and the featurizing ``notes``."""

    codes: np.ndarray
    vectors: Vectors
    notes: list[str]


class Collection:
    """The searchable items of a run (see the module docstring).

    Args:
        run_dir: a run directory with database codes (``lagnh encode``).
        device: where new pictures are featurized and encoded (``cpu``, ``cuda``).
    """

    def __init__(self, run_dir: str | os.PathLike, device: str = "cpu") -> None:
        from .retrieval import codes_dataset, open_index

        self.run = Run.open(run_dir)
        self.device = device
        self.dataset = codes_dataset(self.run)
        self.index, self.index_saved = open_index(self.run)
        self.n_database = len(self.index)
        self.lock = ReadWriteLock()
        self._encode_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        # re-ranked searches computing at once: one a core. More threads than cores only queue
        # for the GIL between their many NumPy calls (16 threads re-ranking at 1M items: 243
        # searches/s unbounded, 440 bounded; plain searches gain little and are left unbounded)
        self._reranking = threading.BoundedSemaphore(usable_cores())
        self._encoder = None
        self.log = AddedLog(self.run.root, self.run.bits, self.run.model_fingerprint)
        self._state = self.log.read(repair=True)
        self._state.news.clear()
        self.added: dict[str, AddedItem] = {}
        self.deleted: set[str] = set(self._state.deleted)
        self._row: dict[str, int] | None = None
        self._tags_aux: bool | None = None
        self._position_rows: np.ndarray | None = None
        self._vector_cache: dict = {}
        self._take(list(self._state.items.values()))

    def _take(self, items: list[AddedItem]) -> None:
        """Append logged items to the index (the caller holds the write lock, or is __init__)."""
        fresh = [it for it in items if it.id not in self.index]
        if len(fresh) != len(items):
            logger.warning("%d added item(s) share an id with the index and are ignored", len(items) - len(fresh))
        if fresh:
            self.index.add(np.concatenate([np.asarray(it.code, np.uint8).reshape(1, -1) for it in fresh]), [it.id for it in fresh])
            self.added.update((it.id, it) for it in fresh)
            self._position_rows = None  # positions past the database moved on

    def _sync(self) -> None:
        """Apply what other processes committed since this one last read the log (hold the
        store's lock and ``_commit_lock``)."""
        self._state.news.clear()
        if not self.log.read_new(self._state):
            return
        with self.lock.write():
            for op, x in self._state.news:
                if op == "add":
                    self._take([x])
                else:
                    self.deleted.add(x)
                    self.added.pop(x, None)
        self._state.news.clear()

    # -- what is in it ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index) - len(self._known_deleted())

    def _known_deleted(self) -> set[str]:
        return {i for i in self.deleted.copy() if i in self.index}  # copy: atomic under the GIL

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.index and item_id not in self.deleted

    def dataset_row(self, item_id: str) -> int | None:
        """The dataset row of ``item_id`` (``None`` for added items and unknown ids)."""
        if self._row is None:
            self._row = {v: i for i, v in enumerate(self.dataset.ids)}
        return self._row.get(item_id)

    def labels_of(self, item_id: str) -> list[str] | None:
        row = self.dataset_row(item_id)
        if row is None or not self.dataset.has_labels:
            return None
        labels = self.dataset.labels
        names = self.dataset.label_names or [f"label_{j}" for j in range(self.dataset.label_dim)]
        return [names[j] for j in np.flatnonzero(labels.view(np.ndarray)[row] if isinstance(labels, np.memmap)
                                                 else np.asarray(labels[row]))]

    def tags_of(self, item_id: str) -> list[str] | None:
        """An item's tags: an added item's own, or, where the dataset's aux is a tag vocabulary
        (a tag CSV, the demo's noisy tags), the vocabulary terms of its aux row; ``None`` for
        other aux (detections, classifier classes) and unknown ids."""
        if item_id in self.added:
            return list(self.added[item_id].tags)
        row = self.dataset_row(item_id)
        if row is None or not self._aux_is_tags():
            return None
        aux = self.dataset.aux_rows(np.array([row]))[0]
        return [self.dataset.aux_names[j] for j in np.flatnonzero(aux > 0)]

    def _aux_is_tags(self) -> bool:
        if self._tags_aux is None:  # the dataset does not change under a running collection
            self._tags_aux = self._find_aux_is_tags()
        return self._tags_aux

    def _dataset_paths(self) -> list[str] | None:
        """The dataset's picture paths, looked up once (the service asks for every hit: no
        ``stat`` of a missing ``paths.txt`` a hit either)."""
        if not hasattr(self, "_paths"):
            self._paths = self.dataset.paths
        return self._paths

    def _find_aux_is_tags(self) -> bool:
        from .extract.recipe import extraction_recipe

        prov = self.dataset.manifest.get("provenance") or {}
        kind = (extraction_recipe(self.dataset).get("aux") or {}).get("kind")
        return bool(self.dataset.aux_names) and (kind == "tags" or (prov.get("demo_spec") or {}).get("aux") == "tags")

    def image_of(self, item_id: str) -> Path | None:
        """The picture of an item: the added copy, or the dataset's recorded path (absolute or
        relative to the dataset directory). Looked up by id, never built from it."""
        from .report.contact_sheet import resolve_image

        if item_id in self.added:
            p = self.log.image_path(self.added[item_id])
            return p if p is not None and p.is_file() else None
        row = self.dataset_row(item_id)
        paths = self._dataset_paths()
        if row is None or not paths:
            return None
        return resolve_image(paths[row], self.dataset.root)

    def picture_paths(self) -> Iterator[str]:
        """Every picture file the collection may read (the dataset's, relative ones both as given
        and under the dataset directory; the added items'): what no output may replace."""
        for p in self.dataset.paths or ():
            yield p
            if not os.path.isabs(p):
                yield str(self.dataset.root / p)
        for it in list(self.added.values()):
            q = self.log.image_path(it)
            if q is not None:
                yield str(q)

    # -- queries ------------------------------------------------------------------------------
    def code_of(self, item_id: str) -> np.ndarray:
        """The packed code of an item: the index's, or (a dataset item outside the index, e.g. a
        query) the stored or freshly encoded one, as ``lagnh search --id`` takes it."""
        from .retrieval import query_code_for_item

        if item_id in self.deleted:
            raise NotFoundError(f"item {item_id!r} was deleted")
        if item_id in self.index:
            with self.lock.read():
                return self.index.code(self.index.position(item_id)).reshape(1, -1)
        row = self.dataset_row(item_id)
        if row is None:
            raise NotFoundError(f"item {item_id!r} is not in the collection")
        with self._encode_lock:
            return query_code_for_item(self.run, self.dataset, row, self.device)

    def search(self, code: np.ndarray, k: int = 10, *, rerank: int = 0, score: RerankScore | None = None,
               query: Vectors | None = None, query_id: str | None = None) -> list[Hit]:
        """The ``k`` nearest live items of a packed code, ranked as ``lagnh search`` ranks.

        Args:
            rerank: R > 0 re-ranks the Hamming top R by ``score`` (:mod:`lagnh_pyg.rerank`),
                with the ``query``'s vectors; 0 = Hamming order, ties by database order.
            query_id: the query's own item: it comes first among the items tied with it.
        """
        k = int(k)
        with self._reranking if rerank else nullcontext(), self.lock.read():
            dead = self._known_deleted() if self.deleted else set()
            depth = max(k, int(rerank))
            want = min(len(self.index), depth + len(dead))
            r = self.index.search(np.asarray(code, np.uint8).reshape(1, -1), want, with_ids=False)
            pos, dist = r.positions[0], r.distances[0]
            keep = pos >= 0
            if dead:
                keep &= ~np.isin(pos, [self.index.position(i) for i in dead])
            pos, dist = pos[keep][:depth], dist[keep][:depth]
            scores = np.full(len(pos), np.nan)
            if rerank and score is not None and query is not None and len(pos):
                order, scores = two_stage(score, query, pos, self.index.codes_at(pos), self._vectors, int(rerank))
                pos, dist = pos[order], dist[order]
            own = self.index.position(query_id) if query_id is not None and query_id in self else None
            pos, dist, scores = _first_k(pos, dist, scores, k, own)
            pos, dist, scores = own_item_first(pos.tolist(), dist, scores, own)
            ids = [self.index.ids[p] for p in pos[:k]]
        return [Hit(j + 1, ids[j], int(dist[j]), None if np.isnan(scores[j]) else float(scores[j]))
                for j in range(len(ids))]

    def _row_of_position(self) -> np.ndarray:
        """Dataset row of each index position (-1: an added picture outside the dataset)."""
        n = len(self.index)
        if self._position_rows is None or len(self._position_rows) != n:
            rows = np.full(n, -1, np.int64)
            rows[: self.n_database] = self.dataset.split("database")[: self.n_database]
            for p in range(self.n_database, n):
                row = self.dataset_row(self.index.ids[p])
                rows[p] = -1 if row is None else row
            self._position_rows = rows
        return self._position_rows

    def _vectors(self, positions: np.ndarray, score: RerankScore):
        ids = self.index.ids
        return DatasetVectors(self.dataset, self._row_of_position(),
                              extra=lambda p: self.added_vectors(ids[p]))(positions, score)

    def added_vectors(self, item_id: str) -> Vectors | None:
        """The stored features and aux of an added picture (``None`` when not stored)."""
        it = self.added.get(item_id)
        if it is None or not it.vectors:
            return None
        key = (it.vectors["file"], it.vectors["row"])
        if key not in self._vector_cache:
            if len(self._vector_cache) > 4096:
                self._vector_cache.clear()
            got = self.log.load_vectors(it.vectors)
            self._vector_cache[key] = None if got is None else Vectors(None, *got)
        return self._vector_cache[key]

    def live_features(self, ids: Sequence[str]):
        """``features(idx) -> (rows, stored)`` over ``ids`` (e.g. :meth:`live_codes`'s): the
        stored input features of each item (dataset rows, or an added picture's), for
        confirming duplicates (:func:`lagnh_pyg.dedup.find_duplicates`)."""
        rows = np.array([-1 if (r := self.dataset_row(i)) is None else r for i in ids], np.int64)
        reader = DatasetVectors(self.dataset, rows, extra=lambda j: self.added_vectors(ids[j]))
        only = RerankScore.parse("features")

        def features(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            vec, stored = reader(np.asarray(idx, np.int64), only)
            return vec.features, stored

        return features

    def query_vectors(self, item_id: str, score: RerankScore) -> Vectors | None:
        """The vectors ``score`` needs of an item used as a query: its dataset row's stored
        features and aux (the model's output too for ``asym``); ``None`` when the item has no
        dataset row (an added picture)."""
        row = self.dataset_row(item_id)
        if row is None:
            return None
        rows = np.array([row])
        return make_query_vectors(score, self.dataset.feature_rows(rows), self.dataset.aux_rows(rows), self.encoder)

    def encoder(self):
        """The run's encoder, loaded once (uploads, and the model's output for ``asym``)."""
        from .encoders import load_encoder

        with self._encode_lock:
            if self._encoder is None:
                self._encoder = load_encoder(self.run, self.device)
            return self._encoder

    def encode_pictures(self, paths: Sequence[str], tags: Sequence[str] | None = None) -> np.ndarray:
        """Packed codes of new pictures: featurized like the run's dataset (its recorded recipe),
        encoded by the run's model, one code each (the encoders are batch-independent)."""
        return self.encode_query_pictures(paths, tags).codes

    def encode_query_pictures(self, paths: Sequence[str], tags: Sequence[str] | None = None) -> Encoded:
        """New pictures' codes, with what re-ranking reads of them (features, aux, the model's
        real-valued output) and the notes of their featurizing (no tags; unknown tags)."""
        from .extract import featurize_like
        from .rerank import encode_with_output

        enc = self.encoder()
        notes: list[str] = []
        with self._encode_lock:
            features, aux = featurize_like(self.dataset, list(paths), self.device, tags=tags, notes=notes)
            codes, z = encode_with_output(enc, features, aux)
        return Encoded(codes, Vectors(z, features, aux), notes)

    def warm_up(self) -> None:
        """Build the featurizing networks and the encoder now, so that the first upload is not
        the one that waits for them (seconds)."""
        import tempfile

        from PIL import Image

        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            Image.new("RGB", (64, 64), (128, 128, 128)).save(f.name)
            self.encode_pictures([f.name])

    # -- changes ------------------------------------------------------------------------------
    def add(self, items: Sequence[AddedItem], vectors: Vectors | None = None, skip_taken: bool = False) -> list[str]:
        """Commit ``items`` to the side store, then make them searchable; returns the ids
        committed. All or none: an id already used (now or ever, by this or another process)
        refuses the whole request, or with ``skip_taken`` is left out of it. ``vectors``
        (row-aligned with ``items``: their features and aux) are stored beside them for
        re-ranking and dedup."""
        if not items:
            raise InputError("nothing to add")
        for it in items:
            check_item_id(it.id)
            check_tags(it.tags, it.id)
            code = np.asarray(it.code)
            if code.dtype != np.uint8 or code.size * 8 != self.run.bits:
                raise InputError(f"item {it.id!r}: a code of this run is {self.run.bits // 8} packed bytes")
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            raise InputError("the same id is given twice in one request")
        if not skip_taken:  # what this process already knows is refused before anything is written
            self._refuse_taken(ids)
        if vectors is not None and vectors.features is not None:
            if len(vectors.features) != len(items):
                raise InputError(f"{len(vectors.features)} feature rows given for {len(items)} items")
            rel = self.log.store_vectors(vectors.features, vectors.aux)
            for j, it in enumerate(items):
                it.vectors = {"file": rel, "row": j}
        with self._commit_lock, self.log.locked():  # one change at a time, across processes: log order = index order
            self._sync()
            if not skip_taken:
                self._refuse_taken(ids)
            taken = {i for i in ids if i in self.index or i in self.deleted}
            items = [it for it in items if it.id not in taken]
            if not items:
                return []
            # the commit point: durable before it is searchable or acknowledged; searches go on
            # meanwhile (an fsync takes milliseconds) and wait only for the in-memory append
            self._state.offset = self.log.add(list(items))
            self._state.items.update((it.id, it) for it in items)
            with self.lock.write():
                self._take(list(items))
        return [it.id for it in items]

    def _refuse_taken(self, ids: Sequence[str]) -> None:
        for i in ids:
            if i in self.index or i in self.deleted:
                raise ConflictError(f"item id {i!r} is already used (ids are never reused, even after a delete)")

    def delete(self, item_id: str) -> None:
        if item_id not in self and not self.log.root.exists():  # no store, no other writer: nothing to create
            raise NotFoundError(f"item {item_id!r} is not in the collection")
        with self._commit_lock, self.log.locked():
            self._sync()
            if item_id not in self:
                raise NotFoundError(f"item {item_id!r} is not in the collection")
            self._state.offset = self.log.delete([item_id])
            self._state.items.pop(item_id, None)
            self._state.deleted.add(item_id)
            with self.lock.write():
                self.deleted.add(item_id)
                self.added.pop(item_id, None)

    def page(self, offset: int, limit: int) -> tuple[list[str], int]:
        """``(ids, total)``: live items ``offset .. offset + limit - 1`` in index order."""
        with self.lock.read():
            dead = self._known_deleted() if self.deleted else set()
            ids = self.index.ids
            if not dead:
                return ids[offset : offset + limit], len(ids)
            live = (i for i in ids if i not in dead)
            out = [i for _, i in zip(range(offset + limit), live)][offset:]
            return out, len(ids) - len(dead)

    def live_codes(self) -> tuple[np.ndarray, list[str]]:
        """Every live item's packed code and id, in index order (for ``lagnh dedup``)."""
        with self.lock.read():
            added = list(self.added.values())
            ids = list(self.index.ids)
        base = self.run.load_codes("database")  # the index holds them in this order (build_index)
        codes = np.concatenate([base, *[it.code.reshape(1, -1) for it in added]]) if added else base
        ids = ids[: len(base)] + [it.id for it in added]
        if self.deleted:
            keep = np.array([i not in self.deleted for i in ids])
            codes, ids = codes[keep], [i for i, k in zip(ids, keep) if k]
        return codes, ids

    def info(self) -> dict:
        ds = self.dataset
        return {
            "run": str(self.run.root.resolve()),
            "method": self.run.method,
            "bits": self.run.bits,
            "model_fingerprint": self.run.model_fingerprint,
            "items": len(self),
            "database_items": self.n_database,
            "added_items": sum(not it.held_out for it in self.added.values()),
            "held_out_items": sum(it.held_out for it in self.added.values()),
            "deleted_items": len(self._known_deleted()),
            "dataset": str(ds.root.resolve()),
            "has_labels": ds.has_labels,
            "index_kind": self.index.kind,
            "index_saved": self.index_saved,
            "upload_search": _has_recipe(ds),
        }


def _has_recipe(ds) -> bool:
    from .extract.recipe import extraction_recipe

    rec = extraction_recipe(ds).get("features")
    return bool(rec and isinstance(rec.get("extractor"), dict))


class ConflictError(InputError):
    """The request clashes with the collection's state (an id already used)."""


class NotFoundError(InputError):
    """No such item."""


def _first_k(pos: np.ndarray, dist: np.ndarray, scores: np.ndarray, k: int, own: int | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``k`` ranked positions, led by ``own`` where it lies further down: what
    :func:`~lagnh_pyg.rerank.own_item_first` keeps of the whole list, without listing R items."""
    hit = np.flatnonzero(pos == own) if own is not None else ()
    sel = np.r_[hit[0], np.arange(min(k, len(pos)))] if len(hit) and hit[0] >= k else slice(0, k)
    return pos[sel], dist[sel], scores[sel]


def timed(fn, *args, **kwargs):
    """``(result, milliseconds)`` of a call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1000.0
