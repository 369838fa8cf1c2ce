"""Items added to a run after it was indexed: an append-only, crash-safe side store.

``lagnh add`` and ``POST /api/items`` (``lagnh serve``) append new pictures' codes here instead
of rebuilding the index; deletions are recorded the same way. Layout::

    RUN_DIR/added/
      meta.json     format, version, bits, model_fingerprint (the model the codes came from)
      log.jsonl     one JSON object a line, one line a request:
                    {"op": "add", "items": [{"id", "code" (hex of the packed code),
                                              "path" (relative to added/ or absolute), "tags",
                                              "source" (the uploaded file name),
                                              "held_out" (only when true: a dataset's held-out
                                              query item, put here by index-folder)}]}
                    {"op": "delete", "ids": [...]}
      images/       the uploaded pictures, named by their SHA-256 (never by a user string)
      vectors/      the added pictures' input features and aux (one .npz a request, by SHA-256),
                    what re-ranking and duplicate confirmation read of them

Why a log: one ``write`` of one line, then ``fsync``, is the commit of a request. A crash in
the middle leaves at most a torn last line, which the next reader drops (and a writer cuts
off), so a crash loses at most the request in flight and a restart sees every acknowledged
one. Several images sent in one request commit together. Item ids are never reused: a
deleted id stays reserved (a later add of it is refused), so replaying the log gives the same
collection in the same order as the server that wrote it.

One writer protocol for every process (``lagnh serve``, ``lagnh add``, ``lagnh index-folder``):
a change takes the exclusive lock on ``added/lock`` (``fcntl.flock``), reads the records other
processes appended since it last looked, checks its ids against all of them, and only then
appends its line. So of two writers adding one id, the second is refused (``lagnh add`` counts
it as already in), and an acknowledged item is never replaced. Readers take the lock too, so a
reader never mistakes a line being written for a crashed writer's torn one.

Ids and tags are checked (:func:`lagnh_pyg.text.check_text`) before they are written; a record
written by an older version with text that is not valid (a lone surrogate, a control
character) is read with that text escaped (:func:`lagnh_pyg.text.escape_text`), never refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_path, write_json_atomic
from .rundir import RunPaths
from .text import check_text, escape_text

logger = logging.getLogger(__name__)

ADDED_FORMAT = "lagnh-added"
ADDED_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class AddedItem:
    """One added picture: its id, packed code, image path (or ``None``) and tags."""

    id: str
    code: np.ndarray
    path: str | None = None
    tags: list[str] = field(default_factory=list)
    source: str | None = None
    held_out: bool = False  # a dataset's held-out query item that `lagnh index-folder` made searchable
    vectors: dict | None = None  # {"file": "vectors/<sha256>.npz", "row": j}: its features and aux

    def record(self) -> dict:
        rec = {"id": self.id, "code": self.code.tobytes().hex(), "path": self.path, "tags": self.tags,
               "source": self.source}
        if self.held_out:
            rec["held_out"] = True
        if self.vectors:
            rec["vectors"] = self.vectors
        return rec


@dataclass
class AddedState:
    """What the log says: live added items in order, and every deleted id (database or added).
    ``offset``: the bytes of the log read so far (a later :meth:`AddedLog.read_new` goes on
    from there); ``repeated``: records of an id already added (older versions could write them;
    the first is kept)."""

    items: dict[str, AddedItem]
    deleted: set[str]
    offset: int = 0
    repeated: int = 0
    news: list = field(default_factory=list)  # ("add", item) / ("delete", id) in log order, for a reader that follows


MAX_ID_CHARS = 512


def _vectors_ref(ref) -> dict | None:
    """A log record's ``vectors`` reference, checked to name a file of ``vectors/`` only."""
    if not ref:
        return None
    name = str(ref.get("file", ""))
    if not (name.startswith("vectors/") and name.count("/") == 1 and name.endswith(".npz") and ".." not in name):
        raise ValueError(f"bad vectors reference {name!r}")
    return {"file": name, "row": int(ref["row"])}


def check_item_id(item_id: str) -> str:
    """An item id is non-empty, valid one-line text (:func:`lagnh_pyg.text.check_text`) of at
    most 512 characters."""
    if not isinstance(item_id, str) or not item_id.strip():
        raise InputError("an item id must be a non-empty string")
    return check_text(item_id, "item id", MAX_ID_CHARS)


def check_tags(tags: list[str], item_id: str) -> list[str]:
    for t in tags:
        check_text(t, f"a tag of item {escape_text(item_id)[:80]!r}", MAX_ID_CHARS)
    return tags


def code_from_hex(text: str, bits: int) -> np.ndarray:
    """A packed code (1, bits/8) from its hex string (``np.packbits`` bytes, MSB first)."""
    text = str(text).strip().lower().removeprefix("0x")
    if len(text) != bits // 4:
        raise InputError(f"a {bits}-bit packed code is {bits // 4} hex digits, got {len(text)}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InputError("the code is not a hex string (0-9, a-f)") from None
    return np.frombuffer(raw, np.uint8).reshape(1, -1).copy()


class AddedLog:
    """The side store of ``run_dir`` (see the module docstring).

    Args:
        run_dir: the run directory; the store lives in ``run_dir/added``.
        bits: code length of the run. model_fingerprint: the run's model.
    """

    def __init__(self, run_dir: str | os.PathLike, bits: int, model_fingerprint: str) -> None:
        self.root = RunPaths(run_dir).added_dir()
        self.bits = int(bits)
        self.model_fingerprint = model_fingerprint
        self.log_path = self.root / "log.jsonl"
        self.images = self.root / "images"

    def exists(self) -> bool:
        return self.log_path.is_file()

    def _check_meta(self) -> None:
        mp = self.root / "meta.json"
        if not mp.is_file():
            return
        meta = json.loads(mp.read_text())
        if meta.get("format") != ADDED_FORMAT or meta.get("version") != ADDED_VERSION:
            raise InputError(f"{mp} is not a {ADDED_FORMAT} v{ADDED_VERSION} store")
        if meta.get("model_fingerprint") != self.model_fingerprint or int(meta.get("bits", -1)) != self.bits:
            raise InputError(f"the items in {self.root} were encoded by model {meta.get('model_fingerprint')}, not by this "
                             f"run's model {self.model_fingerprint}; move {self.root} away and add the pictures again")

    @contextlib.contextmanager
    def locked(self, create: bool = True) -> Iterator[None]:
        """The store's exclusive lock (``added/lock``), across processes. Where the lock file
        cannot be made (a read-only run directory: no writer can exist), nothing is locked."""
        path = self.root / "lock"
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if create or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT):
                raise
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def read(self, repair: bool = False) -> AddedState:
        """Replay the log under the lock. A torn last line (a writer that crashed mid-write) is
        dropped with a warning, and cut off the file when ``repair``; a bad line elsewhere is
        refused."""
        state = AddedState({}, set())
        if not self.exists():
            return state
        self._check_meta()
        with self.locked(create=False):
            self.read_new(state, repair=repair)
        if state.repeated:
            logger.info("%s: %d record(s) of ids already added are ignored (the first of each is kept)",
                        self.log_path, state.repeated)
        return state

    def read_new(self, state: AddedState, repair: bool = False) -> int:
        """Apply to ``state`` the records after ``state.offset`` (call it holding :meth:`locked`);
        returns how many records were applied."""
        if not self.exists():
            return 0
        with open(self.log_path, "rb") as f:
            f.seek(state.offset)
            data = f.read()
        good = 0
        applied = 0
        lines = data.split(b"\n")
        for n, line in enumerate(lines):
            last = n == len(lines) - 1
            if not line.strip():
                good += len(line) + (0 if last else 1)
                continue
            try:
                if last:  # no newline: the write never finished
                    raise ValueError("unterminated line")
                self._apply(state, json.loads(line))
                applied += 1
            except (ValueError, KeyError, TypeError, InputError) as e:
                if last or (n == len(lines) - 2 and not lines[-1].strip()):
                    logger.warning("%s: dropped an incomplete last request (%s)", self.log_path, str(e)[:80])
                    break
                raise InputError(f"{self.log_path}, line {n + 1} is corrupt ({str(e)[:80]}); "
                                 "the side store cannot be replayed") from None
            good += len(line) + 1
        if repair and good < len(data):
            with open(self.log_path, "r+b") as f:
                f.truncate(state.offset + good)
                os.fsync(f.fileno())
        state.offset += good
        return applied

    def _apply(self, state: AddedState, rec: dict) -> None:
        if rec["op"] == "add":
            parsed = [AddedItem(escape_text(str(it["id"])), code_from_hex(it["code"], self.bits), it.get("path"),
                                [escape_text(str(t)) for t in it.get("tags") or []], it.get("source"),
                                bool(it.get("held_out")), _vectors_ref(it.get("vectors"))) for it in rec["items"]]
            for it in parsed:  # two writers of an older version may have raced on one id: the first one wins
                if it.id in state.items or it.id in state.deleted:
                    state.repeated += 1
                    continue
                state.items[it.id] = it
                state.news.append(("add", it))
        elif rec["op"] == "delete":
            for i in rec["ids"]:
                i = escape_text(str(i))
                state.items.pop(i, None)
                state.deleted.add(i)
                state.news.append(("delete", i))
        else:
            raise ValueError(f"unknown op {rec['op']!r}")

    def _ensure(self) -> None:
        self.images.mkdir(parents=True, exist_ok=True)
        if not (self.root / "meta.json").is_file():
            write_json_atomic(self.root / "meta.json", {"format": ADDED_FORMAT, "version": ADDED_VERSION,
                                                        "bits": self.bits, "model_fingerprint": self.model_fingerprint})
        self._check_meta()

    def append(self, record: dict) -> int:
        """Commit one request: one line, written whole and fsynced (call it holding
        :meth:`locked`; the log file is flocked too, against writers of older versions).
        Returns the log's size after it."""
        self._ensure()
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _cut_torn_tail(fd)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def add(self, items: list[AddedItem]) -> int:
        return self.append({"op": "add", "items": [it.record() for it in items]})

    def delete(self, ids: list[str]) -> int:
        return self.append({"op": "delete", "ids": list(ids)})

    def store_image(self, data: bytes, name: str) -> str:
        """Save an uploaded picture as ``images/<sha256><suffix>`` (the suffix only if it is an
        image suffix); returns its path relative to ``added/``. Written before the log line, so
        an acknowledged item always has its picture."""
        suffix = Path(name or "").suffix.lower()
        return self._store("images", data, suffix if suffix in IMAGE_SUFFIXES else ".img")

    def _store(self, folder: str, data: bytes, suffix: str) -> str:
        """``data`` as ``<folder>/<sha256><suffix>`` (written once, fsynced); its path relative
        to ``added/``."""
        self._ensure()
        rel = f"{folder}/{hashlib.sha256(data).hexdigest()}{suffix}"
        target = self.root / rel
        if not target.is_file():
            target.parent.mkdir(exist_ok=True)
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
        return rel

    def store_vectors(self, features: np.ndarray, aux: np.ndarray) -> str:
        """Save new pictures' input features and aux (row-aligned) as ``vectors/<sha256>.npz``
        for re-ranking and for confirming duplicates; returns its path relative to ``added/``.
        Written (and fsynced) before the log line that refers to it, like the pictures."""
        import io

        buf = io.BytesIO()
        np.savez(buf, features=np.asarray(features, np.float32), aux=np.asarray(aux, np.float32))
        return self._store("vectors", buf.getvalue(), ".npz")

    def load_vectors(self, ref: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """``(features, aux)`` of one item stored by :meth:`store_vectors` (``None`` if gone)."""
        path = self.root / ref["file"]
        try:
            with np.load(path, allow_pickle=False) as z:
                j = int(ref["row"])
                return np.asarray(z["features"][j]), np.asarray(z["aux"][j])
        except (OSError, KeyError, IndexError, ValueError):
            logger.warning("the stored vectors %s of an added item cannot be read", path)
            return None

    def image_path(self, item: AddedItem) -> Path | None:
        if not item.path:
            return None
        p = Path(item.path)
        return p if p.is_absolute() else self.root / p


def _cut_torn_tail(fd: int) -> None:
    """Cut an unterminated last line (left by a writer that crashed) before appending, so a
    new request never glues onto it."""
    size = os.fstat(fd).st_size
    if not size:
        return
    back = min(size, 1 << 16)
    tail = os.pread(fd, back, size - back)
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    new_size = size - back + cut + 1 if cut >= 0 else (0 if back == size else size)
    if new_size != size:
        logger.warning("cutting an incomplete last request off the added-items log")
        os.ftruncate(fd, new_size)
