"""A folder of pictures to a served index in one resumable call (what ``lagnh index-folder``
runs; a Python program can call :func:`index_folder` the same way).

extract features -> aux (the offline ImageNet classifier's top-k classes, or a tag CSV) ->
import -> train (LAGNH, or a baseline) -> encode -> index -> the query split added to the
collection (so every picture is searchable). Each stage is the library call its own command
makes; a stage whose output is complete is skipped, so after an interruption the same call
carries on where it stopped.

A stage counts as done only when it was made from the same inputs and options: the work
directory records (``index-folder.json``) a key per stage, hashed from its options (backbone,
image size, top-k, the tag CSV's contents, method, bits, config and overrides), the set of
pictures (each one's path, size and modification time) and the keys of the stages before it.
A stage whose key differs is done again in the work directory (ours); a run directory made
from other options or pictures is refused unless ``overwrite`` (it may hold items added
since). ``out_dir`` and ``work`` may not be, lie in or hold the inputs, nor lie in a lagnh
directory. Every check runs before any work.

Example::

    from lagnh_pyg.index_folder import index_folder
    timings = index_folder("photos/", "runs/photos", method="itq", bits=32)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderWork:
    """Where the stages before training write, under ``root`` (default: ``RUN_DIR.work``)."""

    root: Path

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def aux(self) -> Path:
        return self.root / "aux"

    @property
    def data(self) -> Path:
        return self.root / "data"


def folder_split(n: int) -> tuple[int, int]:
    """(n_train, n_query) for a folder of ``n`` pictures: about 5% queries (1..200), the rest
    (up to 5000) for training; the database holds every non-query picture."""
    if n < 10:
        raise InputError(f"a folder of {n} readable pictures is too small to learn codes from (need 10 or more)")
    n_query = max(1, min(200, n // 20))
    return min(5000, n - n_query), n_query


def check_arguments(method: str, bits: int, topk: int, tags: str | os.PathLike | None,
                    config: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Path:
    """Everything :func:`index_folder` refuses, checked before any work is done; returns the
    LAGNH config's file (``config``: a path or a shipped config's name, default ``demo``)."""
    from .baselines import BASELINES
    from .codes import check_bits
    from .config import find_config, load_config
    from .extract.classifier import check_topk

    if method != "lagnh" and method not in BASELINES:
        raise InputError(f"--method must be lagnh or a baseline ({', '.join(sorted(BASELINES))}), got {method!r}")
    check_bits(bits)
    check_topk(topk)
    if tags is not None and not Path(tags).is_file():
        raise InputError(f"--tags file {tags} does not exist")
    path = find_config(config if config is not None else "demo")
    if method == "lagnh":
        load_config(path, overrides)  # a bad value fails now, not after the extraction
    return path


def index_folder(
    photos: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    work: str | os.PathLike | None = None,
    tags: str | os.PathLike | None = None,
    topk: int = 5,
    backbone: str = "efficientnet_lite0",
    image_size: int | None = None,
    method: str = "lagnh",
    bits: int = 32,
    config: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    device: str = "cpu",
    workers: int = 2,
    say: Callable[[str], None] = logger.info,
    progress: Any = None,
    overwrite: bool = False,
) -> dict[str, float]:
    """Index the pictures under ``photos`` into the run directory ``out_dir`` (then
    ``lagnh serve out_dir``); resumable.

    Args:
        work: where features, aux and the dataset go (default ``out_dir.work`` next to it).
        tags: a tag CSV (path,tags[,labels]) as aux, instead of the classifier's ``topk``
            ImageNet classes.
        backbone, image_size: the feature network and its input side (and the classifier's).
        method: ``lagnh`` (``config``: a YAML file or a shipped config's name, default ``demo``;
            with ``overrides`` and limits for small folders) or a baseline. bits: the code length.
        device: a resolved device (:func:`~lagnh_pyg.device.resolve_device`).
        say: receives one line per stage.
        progress: one display for the whole pipeline (``None``: none), with
            ``begin(stage, step, steps, total)`` at each stage run, ``advance(n)`` as it goes,
            and the training loop's ``start(total, done)``, ``update(terms)``, ``close()``
            (:func:`lagnh_pyg.training.train_run`); the stages' own bars stay off.
        overwrite: replace a run in ``out_dir`` made from other pictures or options.

    Returns:
        Seconds per stage (0 for a stage done before).
    """
    from .extract.images import list_images

    photos, out_dir = Path(photos), Path(out_dir)
    config = check_arguments(method, bits, topk, tags, config, overrides)  # the LAGNH config checked too
    n = len(list_images(photos))
    folder_split(n)  # too small a folder is refused before any work
    w = FolderWork(Path(work) if work is not None else out_dir.with_name(out_dir.name + ".work"))
    tags = Path(tags) if tags is not None else None
    stages = _Stages(say, progress, w.root, _stage_keys(photos, tags, topk, backbone, image_size, method, bits, config,
                                                        overrides))
    inputs = [p for p in (photos, tags, config) if p is not None]
    _check_outputs(out_dir, w.root, inputs, overwrite, run_stale=not stages.done["train"] and not stages.resuming_train)
    w.root.mkdir(parents=True, exist_ok=True)
    advance = stages.advance
    stages.run("features", stages.stale("features", w.features, EXTRACT), n, _features, photos, w.features, backbone,
               image_size, device, workers, advance)
    stages.run("aux", stages.stale("aux", w.aux, EXTRACT), None if tags is not None else n, _aux, photos, w.aux, tags,
               topk, image_size, device, workers, advance)
    stages.run("import", stages.stale("import", w.data, ("lagnh-dataset",)), None, _import, photos, w, tags)
    if not (stages.resuming_train and not stages.done["train"]):  # else: interrupted with these very settings: resume
        stages.stale("train", out_dir, RUN_FORMATS, started=True)
    stages.run("train", not (stages.done["train"] and _trained(out_dir)), None, _train, method, w.data, bits, out_dir,
               config, overrides, device, progress or False)
    encoded = stages.done["encode"] and _encoded(out_dir)
    stages.run("encode", not encoded, n, _encode, out_dir, device, advance)
    stages.run("index", not (stages.done["index"] and encoded and _indexed(out_dir)), None, _index, out_dir)
    stages.run("queries", True, None, _add_queries, out_dir, say)
    say("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.timings.items())
        + f"; total {stages.total():.1f} s")
    return stages.timings


STAGES = ("features", "aux", "import", "train", "encode", "index", "queries")
PLAN_FILE = "index-folder.json"
RECORDED = ("features", "aux", "import", "train", "encode", "index")  # the stages whose key is kept
EXTRACT = ("lagnh-extract",)
RUN_FORMATS = ("lagnh-run",)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_key(p: Path | None):
    from .files import sha256_file

    return None if p is None else [os.path.realpath(p), sha256_file(p)]


def _pictures_key(photos: Path) -> str:
    """The set of pictures: each one's id, size and modification time."""
    from .extract.images import list_image_files

    h = hashlib.sha256()
    for i, rel in list_image_files(photos):
        try:
            st = os.stat(photos / rel)
            h.update(f"{i}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:  # a dangling link: listed (it is skipped when read), no size
            h.update(f"{i}\t-\n".encode())
    return h.hexdigest()[:20]


def _stage_keys(photos: Path, tags: Path | None, topk: int, backbone: str, image_size: int | None, method: str,
                bits: int, config: Path, overrides: Sequence[str]) -> dict[str, str]:
    """Each stage's key: its options, the pictures, and the keys of the stages it reads."""
    pics = _pictures_key(photos)
    k = {"features": _key("features", os.path.realpath(photos), pics, backbone, image_size)}
    k["aux"] = _key("aux", os.path.realpath(photos), pics, _file_key(tags), topk if tags is None else None,
                    image_size if tags is None else None)
    k["import"] = _key("import", k["features"], k["aux"], _file_key(tags))
    k["train"] = _key("train", k["import"], method, bits, _file_key(config) if method == "lagnh" else None,
                      list(overrides) if method == "lagnh" else None)
    k["encode"] = k["index"] = k["train"]
    return k


def _run_markers() -> tuple[str, ...]:
    from .rundir import RunPaths

    p = RunPaths(".")
    return (p.checkpoint_path.name, p.log_path.name)


def _check_outputs(out_dir: Path, work: Path, inputs: list[Path], overwrite: bool, run_stale: bool) -> None:
    """Refuse, before any work, an ``out_dir`` or ``work`` that is, lies in or holds an input,
    lies in a lagnh directory, or nests in the other; and a run made otherwise unless
    ``overwrite``."""
    from .ownership import _under, check_output_dir, check_replaceable

    check_output_dir(out_dir, "--out", inputs=inputs, formats=RUN_FORMATS)
    check_output_dir(work, "--work", inputs=inputs)
    a, b = os.path.realpath(out_dir), os.path.realpath(work)
    if _under(a, b) or _under(b, a):
        raise InputError(f"--out {out_dir} and --work {work} must lie apart (neither inside the other)")
    if run_stale and out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(f"--out {out_dir} holds a run made from other pictures or options (or not by "
                             "index-folder); pass --overwrite to replace it (items added to it are lost), or choose "
                             "another --out")
        check_replaceable(out_dir, RUN_FORMATS, inputs, markers=_run_markers())


class _Stages:
    """Runs the stages in order, skipping those done before (made from the same keys, recorded
    in the work directory's ``index-folder.json``); their seconds in ``timings``; tells the
    pipeline's ``progress`` display (if any) where it is."""

    def __init__(self, say: Callable[[str], None], progress: Any, work: Path, keys: dict[str, str]) -> None:
        self.say, self.progress, self.timings, self.t0 = say, progress, {}, time.perf_counter()
        self.work, self.keys = work, keys
        try:
            plan = json.loads((work / PLAN_FILE).read_text())
        except (OSError, ValueError, RecursionError):
            plan = {}
        self.plan = plan if isinstance(plan, dict) else {}
        self.done = {s: self.plan.get(s) == keys[s] for s in RECORDED}
        for i, s in enumerate(RECORDED[1:], 1):  # a stage after one that is redone is redone too
            self.done[s] = self.done[s] and self.done[RECORDED[i - 1]]
        self.resuming_train = self.plan.get("train-started") == keys["train"]

    def _save(self) -> None:
        from .files import write_json_atomic

        write_json_atomic(self.work / PLAN_FILE, self.plan)

    def stale(self, stage: str, where: Path, formats: tuple[str, ...], started: bool = False) -> bool:
        """Whether ``stage`` must run; its stale output (ours) is removed first, and the plan
        forgets it and the stages after it (an interruption never leaves it 'done')."""
        from .ownership import remove_owned

        if self.done[stage] and where.exists():
            return False
        for s in RECORDED[RECORDED.index(stage):]:
            self.plan.pop(s, None)
        if started:
            self.plan[f"{stage}-started"] = self.keys[stage]
        self._save()
        if where.exists():
            remove_owned(where, formats, markers=_run_markers() if formats == RUN_FORMATS else ())
        return True

    def run(self, name: str, todo: bool, total: int | None, fn, *args) -> None:
        if not todo:
            self.say(f"[{name}] done before; skipped")
            self.timings[name] = 0.0
            return
        self.say(f"[{name}] ...")
        if self.progress is not None:
            self.progress.begin(name, STAGES.index(name) + 1, len(STAGES), total)
        t0 = time.perf_counter()
        fn(*args)
        self.timings[name] = time.perf_counter() - t0
        if name in self.keys:
            self.plan[name] = self.keys[name]
            self._save()

    def advance(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(n)

    def total(self) -> float:
        return time.perf_counter() - self.t0


def _extracted(path: Path) -> bool:
    return (path / "manifest.json").is_file()  # an extraction directory is complete once it has one


def _trained(out_dir: Path) -> bool:
    from .rundir import RunPaths

    return RunPaths(out_dir).meta_path.is_file()


def _encoded(out_dir: Path) -> bool:
    from .rundir import Run

    run = Run.open(out_dir)
    return (run.codes_meta_path().is_file() and run.codes_meta().get("model_fingerprint") == run.model_fingerprint
            and run.codes_file("query").is_file())


def _indexed(out_dir: Path) -> bool:
    from .index import is_index_dir
    from .rundir import RunPaths

    return is_index_dir(RunPaths(out_dir).index_dir())


def _features(photos: Path, out: Path, backbone: str, image_size: int | None, device: str, workers: int,
              progress: Callable[[int], None]) -> None:
    from .extract.backbones import build_backbone
    from .extract.features import check_out, extract_features
    from .extract.images import list_image_source

    images = list_image_source(photos)
    check_out(out, False, images)
    extract_features(images, build_backbone(backbone, "imagenet", image_size=image_size), out, device=device,
                     workers=workers, progress=progress)


def _aux(photos: Path, out: Path, tags: Path | None, topk: int, image_size: int | None, device: str,
         workers: int, progress: Callable[[int], None]) -> None:
    from .extract.images import list_image_source

    images = list_image_source(photos)
    if tags is not None:
        from .extract.objects import tags_aux

        tags_aux(images, tags, out)
        return
    from .extract.classifier import classify_images

    classify_images(images, out, classifier="efficientnet_lite0", topk=topk, image_size=image_size, device=device,
                    batch_size=16, workers=workers, progress=progress)


def _import(photos: Path, w: FolderWork, tags: Path | None) -> None:
    from .data.folder import import_folder

    aux_file = next(p for p in (w.aux / "aux.npz", w.aux / "aux.npy") if p.is_file())
    n_train, n_query = folder_split(len((w.features / "ids.txt").read_text(encoding="utf-8").split("\n")) - 1)
    import_folder(photos, w.data, w.features / "features.npy", aux=aux_file, csv_path=tags, n_train=n_train,
                  n_query=n_query)


def _train(method: str, data: Path, bits: int, run_dir: Path, config: Path, overrides: Sequence[str],
           device: str, progress: Any) -> None:
    from .data.store import Dataset
    from .rundir import RunPaths

    if method != "lagnh":
        from .baselines import DeepBaseline, baseline_class, fit_run

        fit_run(method, data, bits, run_dir, device=device if issubclass(baseline_class(method), DeepBaseline)
                else "cpu")
        return
    from .training import train_run

    n_train = len(Dataset.open(data).split("train"))  # a small folder: limits its config cannot exceed
    small = [f"model.anchors={min(128, n_train)}", f"graph.k={min(10, n_train - 1)}"]
    train_run(data, config, bits, run_dir, overrides=small + list(overrides),
              resume=RunPaths(run_dir).checkpoint_path.is_file(), device=device, progress=progress)


def _encode(out_dir: Path, device: str, progress: Callable[[int], None]) -> None:
    from .encoders import encode_splits
    from .rundir import Run

    encode_splits(Run.open(out_dir), ["query", "database"], device=device, progress=lambda split, m: progress(m))


def _index(out_dir: Path) -> None:
    from .retrieval import build_index

    build_index(out_dir, "flat")


def _add_queries(run_dir: Path, say: Callable[[str], None]) -> None:
    """The query split is not in the index (it is held out from the database): add it to the
    collection, so that every picture of the folder is searchable."""
    from .added import AddedItem
    from .collection import Collection

    coll = Collection(run_dir)
    ds = coll.dataset
    qidx, codes = ds.split("query"), coll.run.load_codes("query")
    items = [AddedItem(ds.ids[r], codes[j : j + 1], ds.paths[r] if ds.paths else None, held_out=True)
             for j, r in enumerate(qidx) if ds.ids[r] not in coll and ds.ids[r] not in coll.deleted]
    if items:
        coll.add(items)
    say(f"{len(coll)} pictures searchable")
