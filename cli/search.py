"""`lagnh search`: the top-k database items of a query (an item id, or a new picture)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.errors import InputError
from lagnh_pyg.rerank import DEFAULT_SCORE as RERANK_SCORE  # numpy only: --help stays fast

from .common import DeviceOpt, handle_errors, say

logger = logging.getLogger(__name__)


@handle_errors
def search(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with database codes.")],
    item: Annotated[str | None, typer.Option("--id", help="Query by a dataset item id (its stored code, or encoded now).")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Query by a new picture: featurized like the run's dataset (its extraction recipe), encoded with the run's model.")] = None,
    tags: Annotated[str | None, typer.Option("--tags", help="With --image: the picture's tags, e.g. \"beach;dog\", where the dataset's aux are tags (mapped to its vocabulary).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 10,
    html_file: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML contact sheet here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    device: DeviceOpt = "cpu",
    rerank: Annotated[str, typer.Option(help="Two-stage ranking: re-rank the Hamming top R by --rerank-score (0 = off).")] = "0",
    rerank_score: Annotated[str | None, typer.Option(help=f"The re-rank score: asym, features, aux, or weighted sums like 'features:1,aux:1' (default: the run's own, chosen by `lagnh experiment rerank --save`, else {RERANK_SCORE}).")] = None,
) -> None:
    """The top-k database items of a query: rank, id, Hamming distance, image path.

    Example: lagnh search runs/lagnh32 --id ITEM -k 10 --rerank 1000 --html result.html
    """
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.files import write_text
    from lagnh_pyg.report.contact_sheet import contact_sheet_html
    from lagnh_pyg.rerank import RerankScore, check_depth
    from lagnh_pyg.retrieval import image_query, search_run
    from lagnh_pyg.rundir import Run

    if (item is None) == (image is None):
        raise InputError("give exactly one of --id ITEM or --image PATH")
    if tags is not None and image is None:
        raise InputError("--tags goes with --image (a dataset item already has its aux)")
    if k < 1:
        raise InputError(f"-k must be a positive integer, got {k}")
    R, score = check_depth(rerank), RerankScore.parse(rerank_score) if rerank_score is not None else None
    run = Run.open(run_dir)
    if html_file is not None:
        _check_html(html_file, image, run)
    q = None
    if image is not None:
        q = image_query(run, image, resolve_device(device), tags=[tags] if tags else None)
    res = search_run(run, item_id=item, query_code=q.code if q else None, k=k, device=device, rerank=R,
                     rerank_score=score, query_vectors=q.vectors if q else None)
    if image is not None:
        res.query_id, res.query_path = image.name, str(image.resolve())
    if len(res.hits) < k and res.index_kind != "flat":
        logger.warning("the %s index found %d of the %d items asked for (it probes only nearby buckets); "
                       "rebuild with a larger --nflip or use `lagnh index %s --kind flat` for exact results",
                       res.index_kind, len(res.hits), k, run_dir)
    if not res.index_saved:
        logger.info("no saved index in %s: searched the database codes exactly (build one with `lagnh index`)",
                    run.index_dir())
    notes = (q.notes if q else []) + res.notes
    ranked = (f"Hamming top {res.rerank} re-ranked by {res.rerank_score}, then by Hamming distance" if res.rerank
              else "ranked by Hamming distance, ties by database order") + ("; the query's own item first" if item else "")
    if as_json:
        rows = [h.__dict__ for h in res.hits]
        typer.echo(json.dumps({"query": res.query_id, "query_path": res.query_path, "query_labels": res.query_labels,
                               "index": res.index_kind, "ranking": ranked, "rerank": res.rerank,
                               "rerank_score": res.rerank_score, "notes": notes, "results": rows}, indent=1))
    else:  # the notes went to stderr as warnings already
        say(f"query {res.query_id}" + (f"  ({res.query_path})" if res.query_path else "")
                  + (f"  labels: {', '.join(res.query_labels)}" if res.query_labels else "") + f"  [{ranked}]")
        for h in res.hits:
            mark = {True: "relevant", False: "irrelevant", None: ""}[h.relevant]
            sc = f" s={h.score:.4f}" if h.score is not None else ""
            say(f"{h.rank:>4}  d={h.distance:<3}{sc} {h.id}  {h.path or ''}  {mark}".rstrip())
    if html_file is not None:
        meta = [f"run {run.root} — {run.method}, {run.bits} bits, {res.index_kind} index", ranked, *notes]
        if any(h.relevant is not None for h in res.hits):
            n_rel = sum(bool(h.relevant) for h in res.hits)
            meta.append(f"{n_rel} of {len(res.hits)} results share a label with the query (green: relevant, red: not)")
        page = contact_sheet_html(
            {"id": res.query_id, "path": res.query_path, "labels": res.query_labels},
            [h.__dict__ for h in res.hits],
            title=f"lagnh search: {res.query_id}", meta_lines=meta, image_root=res.dataset.root,
        )
        write_text(html_file, page)
        say(f"wrote {html_file}")


def _check_html(html_file: Path, image: Path | None, run) -> None:
    """Before any work: the page never lands on the query picture or a dataset picture (nor a
    file of a run or dataset)."""
    from lagnh_pyg.ownership import check_output_file
    from lagnh_pyg.retrieval import codes_dataset

    def read_pictures():
        if image is not None:
            yield image
        ds = codes_dataset(run)
        for p in ds.paths or ():
            yield p if Path(p).is_absolute() else ds.root / p

    check_output_file(html_file, "--html file", inputs=read_pictures)
