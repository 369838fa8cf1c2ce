"""`lagnh index-folder`: a folder of pictures to a served index in one resumable command.

extract features -> aux (the offline ImageNet classifier's top-k classes, or a tag CSV) ->
import -> train (LAGNH, or a baseline) -> encode -> index -> the query split added to the
collection (so every picture is searchable). Each stage is the same command a user would
run by hand (their functions are called here); a stage whose output is complete is skipped,
so after an interruption the same command carries on where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.errors import InputError

from .common import DeviceOpt, handle_errors, say


def _stage(name: str, done: bool, timings: dict, fn, *args, **kwargs) -> None:
    if done:
        say(f"[{name}] done before; skipped")
        timings[name] = 0.0
        return
    say(f"[{name}] ...")
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t0


def folder_split(n: int) -> tuple[int, int]:
    """(n_train, n_query) for a folder of ``n`` pictures: about 5% queries (1..200), the rest
    (up to 5000) for training; the database holds every non-query picture."""
    if n < 10:
        raise InputError(f"a folder of {n} readable pictures is too small to learn codes from (need 10 or more)")
    n_query = max(1, min(200, n // 20))
    return min(5000, n - n_query), n_query


def _train(method: str, data: Path, bits: int, run_dir: Path, config: Path, overrides: list[str], device: str) -> None:
    from lagnh_pyg.data.store import Dataset
    from lagnh_pyg.rundir import RunPaths

    from .baseline import baseline
    from .train import train

    if method != "lagnh":
        baseline(method, data, bits, run_dir)
        return
    n_train = len(Dataset.open(data).split("train"))
    small = [f"model.anchors={min(128, n_train)}", f"encode.k={min(20, n_train)}", f"graph.k={min(10, n_train - 1)}"]
    train(data, config, bits, run_dir, set_=small + list(overrides),
          resume=RunPaths(run_dir).checkpoint_path.is_file(), device=device, progress=True)


def _add_queries(run_dir: Path) -> None:
    """The query split is not in the index (it is held out from the database): add it to the
    collection, so that every picture of the folder is searchable."""
    from lagnh_pyg.added import AddedItem
    from lagnh_pyg.collection import Collection

    coll = Collection(run_dir)
    ds = coll.dataset
    qidx, codes = ds.split("query"), coll.run.load_codes("query")
    items = [AddedItem(ds.ids[r], codes[j : j + 1], ds.paths[r] if ds.paths else None)
             for j, r in enumerate(qidx) if ds.ids[r] not in coll and ds.ids[r] not in coll.deleted]
    if items:
        coll.add(items)
    say(f"{len(coll)} pictures searchable")


def _check_args(method: str, bits: int, topk: int, tags: Path | None, config: Path | None) -> None:
    from lagnh_pyg.baselines import BASELINES
    from lagnh_pyg.codes import check_bits
    from lagnh_pyg.extract.classifier import check_topk

    if method != "lagnh" and method not in BASELINES:
        raise InputError(f"--method must be lagnh or a baseline ({', '.join(sorted(BASELINES))}), got {method!r}")
    check_bits(bits)
    check_topk(topk)
    for what, p in (("--tags", tags), ("--config", config)):
        if p is not None and not p.is_file():
            raise InputError(f"{what} file {p} does not exist")


@handle_errors
def index_folder(
    photos: Annotated[Path, typer.Argument(help="A folder of pictures (searched recursively).")],
    out_dir: Annotated[Path, typer.Option("--out", help="The run directory to make (served by `lagnh serve`).")],
    work: Annotated[Path | None, typer.Option(help="Where features, aux and the dataset go (default: RUN_DIR.work next to it).")] = None,
    tags: Annotated[Path | None, typer.Option(help="A tag CSV (path,tags[,labels]) as aux instead of the classifier.")] = None,
    topk: Annotated[int, typer.Option(help="ImageNet classes kept per picture as aux (without --tags).")] = 5,
    backbone: Annotated[str, typer.Option(help="Feature backbone (efficientnet_lite0 works offline).")] = "efficientnet_lite0",
    image_size: Annotated[int | None, typer.Option(help="Input side for the backbone and classifier (default 224).")] = None,
    method: Annotated[str, typer.Option(help="lagnh, or a baseline: itq, lsh, pcah, sh, sklsh, sgh.")] = "lagnh",
    bits: Annotated[int, typer.Option(help="Code length.")] = 32,
    config: Annotated[Path | None, typer.Option(help="LAGNH config (default configs/demo.yaml).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="LAGNH config override key=value (repeatable).")] = None,
    device: DeviceOpt = "auto",
    workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 2,
) -> None:
    """Folder of pictures -> served index: extract -> import -> train -> encode -> index.

    Resumable: run the same command again after an interruption. Then: lagnh serve RUN_DIR.

    Example: lagnh index-folder photos/ --out runs/photos
    """
    from lagnh_pyg.config import shipped_config
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.extract.images import list_images
    from lagnh_pyg.index import is_index_dir
    from lagnh_pyg.rundir import Run, RunPaths

    from . import extract as x
    from .data import import_folder
    from .encode import encode
    from .index import index

    t_all = time.perf_counter()
    work = work or out_dir.with_name(out_dir.name + ".work")
    _check_args(method, bits, topk, tags, config)  # everything refused before any work is done
    dev = resolve_device(device)
    folder_split(len(list_images(photos)))
    feats, aux, data = work / "features", work / "aux", work / "data"
    timings: dict[str, float] = {}
    _stage("features", (feats / "manifest.json").is_file(), timings, x.features, photos, feats, backbone=backbone,
           image_size=image_size, device=dev, workers=workers)
    if tags is not None:
        _stage("aux", (aux / "manifest.json").is_file(), timings, x.objects, photos, aux, tags=tags)
    else:
        _stage("aux", (aux / "manifest.json").is_file(), timings, x.objects, photos, aux,
               classifier="efficientnet_lite0", topk=topk, image_size=image_size, device=dev, workers=workers)
    aux_file = next(p for p in (aux / "aux.npz", aux / "aux.npy") if p.is_file())
    n_ok = len((feats / "ids.txt").read_text().splitlines())
    n_train, n_query = folder_split(n_ok)
    _stage("import", (data / "manifest.json").is_file(), timings, import_folder, photos, out_dir=data,
           features=feats / "features.npy", aux=aux_file, csv_file=tags, n_train=n_train, n_query=n_query)
    paths = RunPaths(out_dir)
    _stage("train", paths.meta_path.is_file(), timings, _train, method, data, bits, out_dir,
           config or shipped_config("demo.yaml"), set_ or [], dev)
    run = Run.open(out_dir)
    coded = run.codes_meta_path().is_file() and run.codes_meta().get("model_fingerprint") == run.model_fingerprint
    _stage("encode", coded and run.codes_file("query").is_file(), timings, encode, out_dir, device=dev)
    _stage("index", is_index_dir(run.index_dir()), timings, index, out_dir)
    _stage("queries", False, timings, _add_queries, out_dir)
    total = time.perf_counter() - t_all
    say("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + f"; total {total:.1f} s")
    say(f"next: lagnh serve {out_dir}")
