"""`lagnh evaluate`: MAP@K, precision@K and precision-recall of a run's codes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.rerank import DEFAULT_SCORE as RERANK_SCORE  # numpy only: --help stays fast

from .common import DeviceOpt, handle_errors, parse_topk, say

logger = logging.getLogger(__name__)


@handle_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with codes (`lagnh encode`).")],
    topk: Annotated[str, typer.Option(help="K of MAP@K: a positive integer, or 'all' for the whole ranking.")] = "1000",
    protocol: Annotated[str, typer.Option(help="lagnh (authors' evaluator), calctopmap (all queries), hit (queries with a hit in the top K) or ties (expected AP over random orders of tied items).")] = "lagnh",
    json_file: Annotated[Path | None, typer.Option("--json", help="Also write the summary (MAP, P@K, PR, provenance) to this JSON file.")] = None,
    plots: Annotated[bool, typer.Option(help="Write the P@K and PR plots (PNG).")] = True,
    rerank: Annotated[str, typer.Option(help="Two-stage ranking: re-rank the Hamming top R by --rerank-score (0 = off).")] = "0",
    rerank_score: Annotated[str | None, typer.Option(help=f"The re-rank score: asym, features, aux, or weighted sums like 'features:1,aux:1' (default: the run's own, chosen by `lagnh experiment rerank --save`, else {RERANK_SCORE}).")] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """MAP@K, precision@K and precision-recall of a run; results in RUN_DIR/metrics/.

    Example: lagnh evaluate runs/lagnh32 --protocol ties --rerank 1000
    """
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.files import write_json_atomic
    from lagnh_pyg.metrics import check_protocol
    from lagnh_pyg.ownership import check_output_file
    from lagnh_pyg.rerank import RerankScore, check_depth
    from lagnh_pyg.retrieval import evaluate_run, topk_label

    k = parse_topk(topk)
    check_protocol(protocol)
    R = check_depth(rerank)
    score = RerankScore.parse(rerank_score) if rerank_score is not None else None
    if json_file is not None:
        check_output_file(json_file, "--json file")
    ev = evaluate_run(run_dir, k, protocol, plots=plots, rerank=R, rerank_score=score,
                      device=resolve_device(device) if R else "cpu")
    r = ev.result
    tag = f"(protocol {protocol}" + (f"; Hamming top {R} re-ranked by {ev.summary['rerank_score']})" if R else ")")
    say(f"MAP@{topk_label(k)} {tag} = {r.map:.4f}  ({ev.summary['method']}, {r.bits} bits; "
        f"{int(r.counted.sum())} of {r.n_query} queries counted; {r.n_db} database items)")
    if r.pk.size:
        pts = ", ".join(f"P@{int(kk)}={v:.4f}" for kk, v in zip(r.pk_cutoffs, r.pk) if kk in (50, 100, 500, 1000) or kk == r.pk_cutoffs[-1])
        say(f"precision@K {tag}: {pts}")
    r2 = min(2, r.bits)
    say(f"precision within Hamming radius {r2} {tag}: per query {r.pr_precision[r2]:.4f}, "
        f"pooled {r.pr_pooled_precision[r2]:.4f}")
    for p in ev.files.values():
        say(f"wrote {p} {tag}")
    if json_file is not None:
        write_json_atomic(json_file, ev.summary)
        say(f"wrote {json_file} {tag}")
