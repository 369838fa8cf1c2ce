"""`lagnh data ...`: create, import and inspect dataset directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from lagnh_pyg.errors import InputError

from .common import handle_errors, out

app = typer.Typer(no_args_is_help=True, help="Create, import and inspect dataset directories.")
import_app = typer.Typer(
    no_args_is_help=False,
    invoke_without_command=True,
    help="Import features, aux semantics, labels and splits into a dataset directory.",
)
app.add_typer(import_app, name="import")


def _load_array(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    try:
        if path.suffix == ".npz":
            import scipy.sparse as sp

            return sp.load_npz(path).tocsr()
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read {what} file {path}: {e}") from None


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
    """Import .npy arrays (the contract form), or a real dataset with a subcommand.

    Example: lagnh data import --features X.npy --aux A.npy --labels L.npy
    --train-idx T.npy --query-idx Q.npy --database-idx D.npy --out data/mine
    """
    if ctx.invoked_subcommand is not None:
        return
    need = {"--features": features, "--aux": aux, "--train-idx": train_idx, "--query-idx": query_idx,
            "--database-idx": database_idx, "--out": out_dir}
    missing = [k for k, v in need.items() if v is None]
    if missing:
        raise InputError(f"missing option(s) {', '.join(missing)} (or name an importer: coco, nuswide, mat, folder)")
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
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    return path.read_text().splitlines()


@app.command()
@handle_errors
def info(
    data_dir: Annotated[Path, typer.Argument(help="A dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    verify: Annotated[bool, typer.Option(help="Recompute file checksums against the manifest.")] = False,
) -> None:
    """Shapes, label and aux cardinality, empty rows, split sizes and overlaps."""
    from lagnh_pyg.data.store import Dataset

    ds = Dataset.open(data_dir)
    info = ds.info()
    if verify:
        bad = ds.verify()
        info["checksums"] = "ok" if not bad else {"mismatch": bad}
    if as_json:
        print(json.dumps(info, indent=2))
        if verify and bad:
            raise typer.Exit(1)
        return
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
    if verify:
        out.print(f"  checksums  {'ok' if not bad else 'MISMATCH: ' + ', '.join(bad)}")
        if bad:
            raise typer.Exit(1)


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
    n_train: Annotated[int, typer.Option(help="Training items.")] = 5000,
    n_query: Annotated[int, typer.Option(help="Query items.")] = 1000,
    train_in_database: Annotated[bool, typer.Option(help="Let the database include the training items.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate a controllable multi-label dataset (tests, scaling runs): any N, bounded memory."""
    from rich.progress import Progress

    from lagnh_pyg.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(n=n, dim=dim, classes=classes, junk_tags=junk_tags, noise=noise, nuisance=nuisance,
                         aux_drop=aux_noise, aux_add=aux_add, n_train=n_train, n_query=n_query,
                         train_in_database=train_in_database, seed=seed)
    spec.validate()
    with Progress(console=out, transient=True) as bar:
        task = bar.add_task("generating", total=n)
        generate(spec, out_dir, progress=lambda m: bar.advance(task, m))
    out.print(f"wrote synthetic dataset {out_dir} ({n} items, {dim}-d)")
