"""`lagnh data ...`: create (synthetic, demo), import, inspect dataset directories, and add views to one."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from lagnh_pyg.errors import InputError

from .common import DeviceOpt, handle_errors, image_progress, out

app = typer.Typer(no_args_is_help=True, help="Create, import and inspect dataset directories.")
import_app = typer.Typer(no_args_is_help=False, invoke_without_command=True)
app.add_typer(import_app, name="import")

# Options shared by the importers that take features from elsewhere (coco, nuswide, folder).
FeaturesOpt = Annotated[Optional[Path], typer.Option("--features", help="N x d features (.npy, memory-mapped), one row per id of --ids.")]
IdsOpt = Annotated[Optional[Path], typer.Option("--ids", help="Item ids of the --features rows (.txt one a line, or a 1-D .npy); file names work too.")]
AuxOpt = Annotated[Optional[Path], typer.Option("--aux", help="N x c aux semantics in [0,1] (.npy or sparse .npz), replacing the dataset's own tags.")]
AuxIdsOpt = Annotated[Optional[Path], typer.Option("--aux-ids", help="Item ids of the --aux rows (default: --ids when the row counts agree).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Dataset directory to create (must not exist).")]
SparseOpt = Annotated[Optional[bool], typer.Option("--sparse-aux/--dense-aux", help="Aux storage (default: sparse for sparse input or >= 256 columns).", show_default=False)]
SeedOpt = Annotated[int, typer.Option(help="Seed of the split sampling.")]


def _new_out(out_dir: Path | None) -> None:
    """A dataset directory to create: an existing one (nothing is ever replaced) or one that
    cannot be written is refused before any input is read."""
    if out_dir is None:
        return
    from lagnh_pyg.ownership import check_writable_target

    if out_dir.exists() or out_dir.is_symlink():
        raise InputError(f"output directory {out_dir} already exists; choose another --out or remove it")
    check_writable_target(out_dir, "--out", directory=True)


def _load_array(path: Path, what: str):
    from lagnh_pyg.data.sources import load_matrix

    return load_matrix(path, what)


@import_app.callback()
@handle_errors
def import_npy(
    ctx: typer.Context,
    features: Annotated[Optional[Path], typer.Option(help="N x d feature matrix (.npy, float16/32/64).")] = None,
    aux: Annotated[Optional[Path], typer.Option(help="N x c aux semantics in [0,1] (.npy, or a scipy sparse .npz).")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Optional N x m multi-hot labels (.npy), evaluation only.")] = None,
    train_idx: Annotated[Optional[Path], typer.Option("--train-idx", help="Training row indices (.npy).")] = None,
    query_idx: Annotated[Optional[Path], typer.Option("--query-idx", help="Query row indices (.npy).")] = None,
    database_idx: Annotated[Optional[Path], typer.Option("--database-idx", help="Database row indices (.npy).")] = None,
    ids: Annotated[Optional[Path], typer.Option(help="Optional text file, one item id a line.")] = None,
    paths: Annotated[Optional[Path], typer.Option(help="Optional text file, one image path a line.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Dataset directory to create.")] = None,
    sparse_aux: Annotated[bool, typer.Option(help="Store aux as sparse CSR (large tag vocabularies).")] = False,
) -> None:
    """Import .npy arrays into a dataset directory, or a real dataset with a subcommand.

    Example:

    lagnh data import --features X.npy --aux A.npy --labels L.npy --train-idx T.npy --query-idx Q.npy --database-idx D.npy --out data/mine

    Real datasets: lagnh data import coco|nuswide|mat|folder --help
    """
    given = {"--features": features, "--aux": aux, "--labels": labels, "--train-idx": train_idx,
             "--query-idx": query_idx, "--database-idx": database_idx, "--ids": ids, "--paths": paths,
             "--out": out_dir}
    if ctx.invoked_subcommand is not None:
        early = [k for k, v in given.items() if v is not None] + (["--sparse-aux"] if sparse_aux else [])
        if early:
            raise InputError(f"{', '.join(early)} belong(s) after the importer name: "
                             f"lagnh data import {ctx.invoked_subcommand} ... {early[0]} ...")
        return
    need = ("--features", "--aux", "--train-idx", "--query-idx", "--database-idx", "--out")
    missing = [k for k in need if given[k] is None]
    if missing:
        raise InputError(f"missing option(s) {', '.join(missing)} (or name an importer: coco, nuswide, mat, folder)")
    _new_out(out_dir)
    from lagnh_pyg.data.store import write_dataset

    X = _load_array(features, "features")
    A = _load_array(aux, "aux")
    L = _load_array(labels, "labels") if labels is not None else None
    splits = {s: _load_array(p, f"{s} index") for s, p in
              (("train", train_idx), ("query", query_idx), ("database", database_idx))}
    id_list = _read_lines(ids, "ids") if ids else None
    path_list = _read_lines(paths, "paths") if paths else None
    write_dataset(out_dir, X, A, labels=L, splits=splits, ids=id_list, paths=path_list,
                  aux_sparse=True if sparse_aux else None,
                  provenance={"source": "npy", "features": str(features), "aux": str(aux),
                              "labels": str(labels) if labels else None})
    out.print(f"wrote dataset {out_dir} ({X.shape[0]} items, {X.shape[1]}-d features, {A.shape[1]} aux columns)")


def _read_lines(path: Path, what: str) -> list[str]:
    from lagnh_pyg.files import read_text, text_lines

    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    return text_lines(read_text(path, what))


def _write_catalog(catalog, out_dir: Path, features: Optional[Path], ids: Optional[Path], aux: Optional[Path],
                   aux_ids: Optional[Path], sparse_aux: Optional[bool], features_hint: str,
                   feature_ids: Optional[list] = None) -> None:
    """An importer's catalog with the given features/aux written as a dataset
    (:func:`lagnh_pyg.data.sources.import_catalog`); its notes and summary printed."""
    from lagnh_pyg.data.sources import import_catalog

    for note in catalog.notes:
        out.print(note, markup=False, highlight=False)
    if features is None:
        raise InputError(f"--features is required: {features_hint}")
    import_catalog(catalog, out_dir, features, ids=ids, aux=aux, aux_ids=aux_ids, sparse_aux=sparse_aux,
                   feature_ids=feature_ids)
    _print_written(out_dir, catalog)


def _print_written(out_dir: Path, catalog=None) -> None:
    """The written dataset's summary on stdout, then the catalog's warnings on stderr (held
    until now: before an error line they would break the one-line contract)."""
    from lagnh_pyg.data.store import Dataset

    m = Dataset.open(out_dir).manifest
    lab = m["labels"]
    out.print(f"wrote dataset {out_dir} ({m['n_items']} items, {m['features']['dim']}-d features, "
              f"{m['aux']['dim']} aux columns ({m['aux']['storage']}), "
              f"{'no labels' if lab is None else str(lab['dim']) + ' label classes'}; "
              + ", ".join(f"{k} {v}" for k, v in m["splits"].items()) + ")", markup=False, highlight=False)
    for warning in catalog.warnings if catalog is not None else ():
        logging.getLogger("lagnh_pyg.data").warning("warning: %s", warning)


@import_app.command("coco")
@handle_errors
def import_coco(
    train_json: Annotated[Path, typer.Argument(help="instances_train2017.json", show_default=False)],
    val_json: Annotated[Path, typer.Argument(help="instances_val2017.json", show_default=False)],
    out_dir: OutOpt,
    features: FeaturesOpt = None,
    ids: IdsOpt = None,
    aux: AuxOpt = None,
    aux_ids: AuxIdsOpt = None,
    images: Annotated[Optional[Path], typer.Option(help="COCO image root holding train2017/ and val2017/ (paths are recorded).")] = None,
    n_train: Annotated[int, typer.Option(help="Training images sampled from train2017.")] = 5000,
    seed: SeedOpt = 0,
    no_annotation: Annotated[str, typer.Option(help="Images without annotations: drop, or keep with all-zero labels (the paper's counts).")] = "drop",
    sparse_aux: SparseOpt = None,
) -> None:
    """MS COCO 2017, the paper's split: 5,000 train from train2017, its rest the database, val2017 the queries.

    Labels are the 80 categories. Features and aux (detector scores over the 80 categories, from `lagnh extract objects`) are .npy files whose rows --ids names by COCO image id or file name. Images without annotations are dropped (--no-annotation keep gives the paper's 113,287 / 5,000).

    Example:

    lagnh data import coco annotations/instances_train2017.json annotations/instances_val2017.json --features fc7.npy --aux detections.npy --ids image_ids.txt --images coco/ --out data/coco
    """
    from lagnh_pyg.data import coco

    _new_out(out_dir)
    catalog = coco.build_catalog(train_json, val_json, n_train=n_train, seed=seed, no_annotation=no_annotation,
                                 images=images)
    _write_catalog(catalog, out_dir, features, ids, aux, aux_ids, sparse_aux,
                   "COCO features come from extraction or a .npy whose rows --ids names by image id")


@import_app.command("nuswide")
@handle_errors
def import_nuswide(
    root: Annotated[Path, typer.Argument(help="NUS-WIDE directory (Concepts81.txt, Groundtruth/, AllTags1k.txt, ImageList/).", show_default=False)],
    out_dir: OutOpt,
    features: Annotated[Optional[Path], typer.Option("--features", help="Features (.npy): one row per line of Imagelist.txt, per kept image, or per id of --ids.")] = None,
    ids: IdsOpt = None,
    aux: AuxOpt = None,
    aux_ids: AuxIdsOpt = None,
    images: Annotated[Optional[Path], typer.Option(help="The Flickr/ image folder (<concept>/<file>); paths are recorded.")] = None,
    concepts: Annotated[int, typer.Option("--concepts", help="Keep images of this many most frequent concepts.")] = 21,
    per_concept: Annotated[int, typer.Option(help="Queries sampled per concept (then de-duplicated).")] = 200,
    n_train: Annotated[int, typer.Option(help="Training images sampled from the non-queries.")] = 5000,
    seed: SeedOpt = 0,
    min_tag_count: Annotated[int, typer.Option(help="Keep tags used by at least this many kept images.")] = 1,
    concepts_file: Annotated[Optional[Path], typer.Option(help="Concepts81.txt, if not under ROOT.")] = None,
    labels_dir: Annotated[Optional[Path], typer.Option(help="The folder of Labels_<concept>.txt, if not under ROOT.")] = None,
    tags_file: Annotated[Optional[Path], typer.Option(help="AllTags1k.txt, if not under ROOT.")] = None,
    tag_names_file: Annotated[Optional[Path], typer.Option(help="TagList1k.txt, if not under ROOT.")] = None,
    image_list: Annotated[Optional[Path], typer.Option(help="ImageList/Imagelist.txt, if not under ROOT.")] = None,
    sparse_aux: SparseOpt = None,
) -> None:
    """NUS-WIDE, the 21-concept protocol: 200 queries per concept (de-duplicated), 5,000 train, the rest database.

    Images carrying one of the 21 most frequent concepts are kept; those concepts are the labels and the 1k user tags the aux (sparse). Features are a .npy with one row per line of Imagelist.txt (or per id of --ids).

    Example:

    lagnh data import nuswide NUS-WIDE/ --features fc7.npy --images NUS-WIDE/Flickr --out data/nuswide
    """
    from lagnh_pyg.data import nuswide

    _new_out(out_dir)
    catalog = nuswide.build_catalog(
        root, n_concepts=concepts, per_concept=per_concept, n_train=n_train, seed=seed, min_tag_count=min_tag_count,
        images=images, concepts_file=concepts_file, labels_dir=labels_dir, tags_file=tags_file,
        tag_names_file=tag_names_file, image_list=image_list, with_tags=aux is None)
    _write_catalog(catalog, out_dir, features, ids, aux, aux_ids, sparse_aux,
                   "NUS-WIDE features come from extraction or a .npy aligned with Imagelist.txt (or named by --ids)")


@import_app.command("mat")
@handle_errors
def import_mat(
    path: Annotated[Path, typer.Argument(help="A .mat (v5 or v7.3) or .h5 file.", show_default=False)],
    out_dir: OutOpt,
    features_key: Annotated[Optional[str], typer.Option(help="Feature key(s): KEY, or TRAIN,QUERY,DATABASE (default: first known preset, e.g. I_tr,I_te,I_db).")] = None,
    aux_key: Annotated[Optional[str], typer.Option(help="Aux (tags/text) key(s), as many as the feature keys (e.g. T_tr,T_te,T_db).")] = None,
    labels_key: Annotated[Optional[str], typer.Option(help="Label key(s), as many as the feature keys (e.g. L_tr,L_te,L_db).")] = None,
    transpose: Annotated[str, typer.Option(help="auto (transpose MATLAB v7.3 only), yes, or no.")] = "auto",
    binarize_aux: Annotated[bool, typer.Option(help="Use aux > 0 as 0/1 (tag counts, bag-of-words).")] = False,
    n_train: Annotated[int, typer.Option(help="Whole-array files: training items.")] = 5000,
    n_query: Annotated[int, typer.Option(help="Whole-array files: query items.")] = 1000,
    train_in_database: Annotated[bool, typer.Option(help="Whole-array files: the database also holds the training items.")] = True,
    seed: SeedOpt = 0,
    sparse_aux: SparseOpt = None,
) -> None:
    """Features, tags and labels from a .mat (v5, v7.3) or .h5 file as hashing code bases distribute them.

    Split files (three keys each: train, query, database) keep their splits; whole-array files get a seeded split. Without key options the first known preset is used (I_tr/T_tr/L_tr..., XTrain/YTrain/LTrain..., XAll/YAll/LAll, ...). MATLAB v7.3 matrices are read transposed.

    Example:

    lagnh data import mat mirflickr25k.mat --features-key I_tr,I_te,I_db --aux-key T_tr,T_te,T_db --labels-key L_tr,L_te,L_db --out data/flickr
    """
    from lagnh_pyg.data import mat as matmod
    from lagnh_pyg.data.sources import write_catalog

    _new_out(out_dir)
    catalog, feats, handle = matmod.build(
        path, features_key=features_key, aux_key=aux_key, labels_key=labels_key, transpose=transpose,
        n_train=n_train, n_query=n_query, seed=seed, train_in_database=train_in_database, binarize_aux=binarize_aux)
    try:
        for note in catalog.notes:
            out.print(note, markup=False, highlight=False)
        write_catalog(catalog, out_dir, feats, sparse_aux=sparse_aux)
    finally:
        handle.close()
    _print_written(out_dir, catalog)


@import_app.command("folder")
@handle_errors
def import_folder(
    root: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).", show_default=False)],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Dataset directory to create (must not exist).")] = None,
    features: Annotated[Optional[Path], typer.Option("--features", help="N x d features (.npy), rows in the order of --print-list, or named by --ids.")] = None,
    ids: IdsOpt = None,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="CSV with columns path (or file_name), tags, labels; terms separated by ; or |.")] = None,
    aux: AuxOpt = None,
    aux_ids: AuxIdsOpt = None,
    min_tag_count: Annotated[int, typer.Option(help="Keep tags used by at least this many images.")] = 1,
    n_train: Annotated[int, typer.Option(help="Training images.")] = 5000,
    n_query: Annotated[int, typer.Option(help="Query images.")] = 1000,
    train_in_database: Annotated[bool, typer.Option(help="The database also holds the training images.")] = True,
    seed: SeedOpt = 0,
    print_list: Annotated[bool, typer.Option("--print-list", help="Print the sorted image list (the row order --features must follow) and exit.")] = False,
    sparse_aux: SparseOpt = None,
) -> None:
    """An image folder, with tags (aux) and labels from an optional CSV; a seeded split.

    The CSV has columns path (or file_name), tags and optionally labels, terms separated by ; or |. Features are computed elsewhere, one row per image in the order --print-list shows, or named by --ids; `lagnh extract features` output brings its own ids. Images without a feature row (skipped by extraction as unreadable) are dropped, with a warning, before the split is drawn.

    Example:

    lagnh data import folder photos/ --print-list > images.txt

    lagnh data import folder photos/ --csv tags.csv --features X.npy --n-train 2000 --n-query 500 --out data/photos
    """
    from lagnh_pyg.data import folder

    if print_list:
        for p in folder.list_images(root):
            print(p)
        return
    if out_dir is None:
        raise InputError("missing option --out (the dataset directory to create)")
    _new_out(out_dir)
    catalog = folder.import_folder(root, out_dir, features, ids=ids, csv_path=csv_file, aux=aux, aux_ids=aux_ids,
                                   min_tag_count=min_tag_count, n_train=n_train, n_query=n_query, seed=seed,
                                   train_in_database=train_in_database, sparse_aux=sparse_aux,
                                   notes=lambda m: out.print(m, markup=False, highlight=False))
    _print_written(out_dir, catalog)


@app.command()
@handle_errors
def info(
    data_dir: Annotated[Path, typer.Argument(help="A dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    verify: Annotated[bool, typer.Option(help="Recompute file checksums against the manifest and check every value (finite features, aux in [0, 1]); exit 2 on a mismatch.")] = False,
) -> None:
    """Shapes, label and aux cardinality, empty rows, split sizes and overlaps."""
    from lagnh_pyg.data.store import Dataset

    ds = Dataset.open(data_dir)
    info = ds.info()
    problems: list[str] = []
    if verify:
        bad, values = ds.verify(), ds.check_values()
        problems = ([f"checksum mismatch in {', '.join(bad)}"] if bad else []) + values
        info["checksums"] = "ok" if not bad else {"mismatch": bad}
        info["values"] = "ok" if not values else values
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
        if verify:
            out.print(f"  verified   {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}", markup=False)
    if problems:  # the dataset changed after import: bad input for every later stage
        raise InputError(f"dataset {data_dir} failed verification: {'; '.join(problems)}; re-import it")


def _print_info(info: dict) -> None:
    a, lab = info["aux"], info["labels"]
    out.print(f"[bold]{info['root']}[/bold]: {info['n_items']} items")
    out.print(f"  features   {info['features']['dim']}-d {info['features']['dtype']}")
    out.print(f"  aux        {a['dim']} columns ({a['storage']}), {a['mean_nonzero_per_item']:.2f} non-zero per item, "
              f"{a['empty_rows']} empty rows, {a['unused_columns']} unused columns")
    if lab is None:
        out.print("  labels     none (evaluation impossible)")
    else:
        out.print(f"  labels     {lab['dim']} classes, {lab['mean_labels_per_item']:.2f} per item, "
                  f"{lab['empty_rows']} empty rows, {lab['items_per_label_min']}-{lab['items_per_label_max']} items per class")
    out.print("  splits     " + ", ".join(f"{k} {v}" for k, v in info["splits"].items()))
    out.print("  overlaps   " + ", ".join(f"{k} {v}" for k, v in info["overlaps"].items()))
    if info["provenance"].get("source"):
        out.print(f"  source     {info['provenance']['source']}")


@app.command()
@handle_errors
def synthetic(
    n: Annotated[int, typer.Option("--n", help="Number of items.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to create.")],
    dim: Annotated[int, typer.Option(help="Feature dimension.")] = 512,
    classes: Annotated[int, typer.Option(help="Number of label classes.")] = 24,
    junk_tags: Annotated[int, typer.Option(help="Extra uninformative tag columns in aux.")] = 40,
    noise: Annotated[float, typer.Option(help="Feature noise (relative to the class signal).")] = 1.0,
    nuisance: Annotated[float, typer.Option(help="Weight of label-unrelated 'background' clusters.")] = 1.0,
    aux_noise: Annotated[float, typer.Option("--aux-noise", help="Probability that a true label is missing from aux.")] = 0.2,
    aux_add: Annotated[float, typer.Option(help="Probability that an absent label appears in aux.")] = 0.02,
    n_train: Annotated[Optional[int], typer.Option(help="Training items, exactly (default: 5000, at most a third of the non-queries).", show_default=False)] = None,
    n_query: Annotated[Optional[int], typer.Option(help="Query items, exactly (default: 1000, at most a tenth of --n).", show_default=False)] = None,
    train_in_database: Annotated[bool, typer.Option(help="Let the database include the training items.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate a controllable multi-label dataset (tests, scaling runs): any N, bounded memory."""
    from rich.progress import Progress

    from lagnh_pyg.data.synthetic import SyntheticSpec, generate

    if not 0 <= aux_noise <= 1:  # named here: the spec calls it aux_drop
        raise InputError(f"--aux-noise is a probability in [0, 1], got {aux_noise}")
    spec = SyntheticSpec(n=n, dim=dim, classes=classes, junk_tags=junk_tags, noise=noise, nuisance=nuisance,
                         aux_drop=aux_noise, aux_add=aux_add, n_train=n_train, n_query=n_query,
                         train_in_database=train_in_database, seed=seed)
    spec.validate()
    with Progress(console=out, transient=True) as bar:
        task = bar.add_task("generating", total=n)
        generate(spec, out_dir, progress=lambda m: bar.advance(task, m))
    out.print(f"wrote synthetic dataset {out_dir} ({n} items, {dim}-d)")


@app.command("demo")
@handle_errors
def data_demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to create (reused when already built with the same options).")],
    aux: Annotated[str, typer.Option(help="detector (tile-classifier detections, COCO-like) or tags (noisy tags, NUS-WIDE-like).")] = "detector",
    n_train: Annotated[int, typer.Option(help="Training mosaics.")] = 5000,
    extra_train: Annotated[int, typer.Option(help="Training mosaics added without changing any other mosaic (same queries and database as without them): e.g. 45000 for 50,000 training mosaics.")] = 0,
    n_query: Annotated[int, typer.Option(help="Query mosaics (built from Fashion-MNIST test items only).")] = 1000,
    n_database: Annotated[int, typer.Option(help="Database mosaics.")] = 20000,
    train_in_database: Annotated[bool, typer.Option(help="Let the database hold the training mosaics too.")] = False,
    image_size: Annotated[int, typer.Option(help="Side the 56-px mosaics are resized to for EfficientNet-Lite0.")] = 80,
    detector_threshold: Annotated[float, typer.Option(help="Detector score threshold in (0, 1).")] = 0.5,
    detector_pool: Annotated[int, typer.Option(help="Fashion-MNIST training items reserved for the detector (in no mosaic).")] = 10000,
    seed: Annotated[int, typer.Option(help="Random seed of every choice.")] = 0,
    fashion_mnist_dir: Annotated[Path | None, typer.Option(help="Folder with the four Fashion-MNIST IDX files (default: the Debian package's, else download).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Where features are cached (default ~/.cache/lagnh-pyg/demo, or $LAGNH_CACHE).")] = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option(help="Mosaics a forward pass.")] = 64,
    images: Annotated[bool, typer.Option(help="Write the mosaics as PNG files to DATA_DIR/images (thumbnails).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Rebuild even if --out exists.")] = False,
    views: Annotated[int, typer.Option(help="Also store features of this many augmented renderings of each training mosaic (for cibhash/deepbit; 0: none).")] = 0,
) -> None:
    """The offline demo dataset: real Fashion-MNIST images in 2x2 mosaics (multi-label), EfficientNet-Lite0 features.

    Example: lagnh data demo --out data/demo; with 50,000 training mosaics and the same queries and
    database: lagnh data demo --extra-train 45000 --out data/demo50k
    """
    from lagnh_pyg.demo.build import build_demo
    from lagnh_pyg.demo.mosaics import DemoSpec
    from lagnh_pyg.device import resolve_device

    spec = DemoSpec(n_train=n_train, extra_train=extra_train, n_query=n_query, n_database=n_database, train_in_database=train_in_database,
                    aux=aux, detector_threshold=detector_threshold, detector_pool=detector_pool, image_size=image_size,
                    seed=seed)
    spec.validate()
    if cache_dir is not None:  # a cache of its own: never inside a run or a dataset
        from lagnh_pyg.ownership import check_output_dir

        check_output_dir(cache_dir, "--cache-dir")
    dev = resolve_device(device)
    with image_progress() as bar:
        task = bar.add_task("EfficientNet-Lite0 features", total=spec.n_mosaics)
        res = build_demo(spec, out_dir, fashion_mnist_dir=fashion_mnist_dir, cache_dir=cache_dir, device=dev,
                         batch_size=batch_size, write_images=images, overwrite=overwrite,
                         progress=lambda k: bar.advance(task, k), log=lambda m: bar.console.print(m), views=views)
    if res["cached"]:
        out.print(f"demo dataset {out_dir} is already built with these options (cached); nothing to do")
        return
    t = res["timings"]
    out.print(f"wrote demo dataset {out_dir}: {res['n_items']} mosaics, {res['feature_dim']}-d features, "
              f"{res['aux_dim']} aux columns ({aux}), {res['mean_labels_per_mosaic']:.2f} labels a mosaic; "
              f"{t['total_s']:.0f} s (features {t['features_s']:.0f} s)")


@app.command("add-views")
@handle_errors
def add_views(
    data_dir: Annotated[Path, typer.Argument(help="A dataset directory.")],
    extraction: Annotated[Path, typer.Argument(help="An extraction directory written by `lagnh extract features --views K`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The dataset copy to create (files hard-linked where possible).")],
    split: Annotated[str, typer.Option(help="Whose views to store (train: what cibhash and deepbit read).")] = "train",
) -> None:
    """Store the features of augmented views (for the view-based baselines) in a copy of a dataset.

    Example: lagnh extract features data/coco --views 4 --out feats-views/ && lagnh data add-views data/coco feats-views/ --out data/coco-views
    """
    from lagnh_pyg.data.add_views import add_views as _add_views
    from lagnh_pyg.data.store import Dataset

    _new_out(out_dir)
    path = _add_views(data_dir, extraction, out_dir, split)
    v = Dataset.open(path).manifest["views"]
    out.print(f"wrote {path}: {v['k']} views of each of {v['rows']} {split} items")
