"""Choosing the re-rank score on a validation split, then measuring it on the queries.

For each run: the training split is divided (seeded, :func:`validation_split`) into a *fit*
part, the database, and a *validation* part, the queries; both are encoded by the run's model
(the out-of-sample rule the queries get) and ranked with the training items' labels. K and R
are scaled by the database size (``K_val = K * n_fit / n_database``), so that validation
re-ranks the same fraction of its database as the real search. Every weighting of the
components on a small grid is scored there; the one with the best mean validation MAP over
all runs is the choice. Only then are the query and database splits read: plain Hamming
ranking against the chosen score (and each single component), under the authors' protocol
and the tie-aware one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.store import Dataset
from ..encoders import load_encoder
from ..errors import InputError
from ..files import write_json_atomic, write_text
from ..metrics import PROTOCOL_DESCRIPTIONS, evaluate_retrieval, hamming_rank
from ..report.provenance import provenance, provenance_markdown
from ..report.tables import markdown_table
from ..rerank import (
    COMPONENTS,
    DatasetVectors,
    RerankScore,
    Vectors,
    encode_with_output,
    real_output,
    save_run_score,
    score_candidates,
)
from ..retrieval import codes_dataset
from ..rundir import Run
from .tuning import validation_split

GRID_WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def weight_grid(levels: Sequence[float] = GRID_WEIGHTS) -> list[RerankScore]:
    """Every weighting of the components with weights in ``levels``, one per ratio (scores
    differing by a common factor rank alike), all-zero left out."""
    seen, out = set(), []
    for ws in itertools.product(levels, repeat=len(COMPONENTS)):
        if not any(ws):
            continue
        key = tuple(round(w / max(ws), 6) for w in ws)
        if key in seen:
            continue
        seen.add(key)
        out.append(RerankScore.parse(",".join(f"{n}:{w:g}" for n, w in zip(COMPONENTS, key) if w)))
    return out


def _scaled(value: int, n_small: int, n_big: int) -> int:
    return max(1, int(round(value * n_small / n_big)))


def validation_maps(run: Run, scores: Sequence[RerankScore], depth: int, topk: int, *, fraction: float = 0.2,
                    seed: int = 0, protocols: Sequence[str] = ("lagnh", "ties"), device: str = "cpu") -> dict:
    """MAP on the training split's validation part for plain ranking and each score.

    Returns ``{"plain": {protocol: map}, "scores": {str(score): {protocol: map}}, ...}``.
    """
    ds = codes_dataset(run)
    ds.require_labels("validation")
    fit, val = validation_split(ds.split("train"), fraction, seed)
    n_db = len(ds.split("database"))
    k_val, r_val = _scaled(topk, len(fit), n_db), min(len(fit), _scaled(depth, len(fit), n_db))
    enc = load_encoder(run, device)
    rows = np.concatenate([val, fit])
    feats, aux = ds.feature_rows(rows), ds.aux_rows(rows)
    parts = [encode_with_output(enc, feats[s : s + 4096], aux[s : s + 4096]) for s in range(0, len(rows), 4096)]
    codes, z = np.concatenate([c for c, _ in parts]), np.concatenate([z for _, z in parts])
    qc, dc = codes[: len(val)], codes[len(val):]
    lq, ld = ds.label_rows(val), ds.label_rows(fit)
    _, cand = hamming_rank(qc, dc, r_val)
    comps = _components(ds, fit, cand, Vectors(z[: len(val)], feats[: len(val)], aux[: len(val)]), dc)
    out = {"fit_items": len(fit), "validation_items": len(val), "topk": k_val, "rerank": r_val,
           **_maps(qc, dc, lq, ld, k_val, r_val, cand, comps, scores, protocols)}
    return out


def _maps(qc, dc, lq, ld, topk, depth, cand, comps, scores, protocols) -> dict:
    """Plain MAP and MAP re-ranked by each score, from the candidates' cached components."""
    out = {"plain": {p: evaluate_retrieval(qc, dc, lq, ld, topk, p, curves=False).map for p in protocols}, "scores": {}}
    for score in scores:
        def scorer(qrows, c, score=score):
            if not np.array_equal(c, cand[qrows]):
                raise RuntimeError("the candidates differ from the cached Hamming ranking")
            return sum(w * comps[n][qrows] for n, w in score.weights)

        out["scores"][str(score)] = {p: evaluate_retrieval(qc, dc, lq, ld, topk, p, curves=False, rerank=depth,
                                                           scorer=scorer).map for p in protocols}
    return out


def _components(ds: Dataset, db_rows: np.ndarray, cand: np.ndarray, queries: Vectors, db_codes: np.ndarray) -> dict:
    """(n_query, R) cosine of each component for every query's candidates."""
    db = DatasetVectors(ds, db_rows)
    out = {}
    for name in COMPONENTS:
        one = RerankScore.parse(name)
        parts = []
        for s in range(0, len(cand), 64):
            c = cand[s : s + 64]
            vec, present = db(c, one)
            parts.append(score_candidates(one, queries.rows(slice(s, s + 64)), db_codes[c], vec, present))
        out[name] = np.concatenate(parts)
    return out


def query_maps(run: Run, scores: Sequence[RerankScore], depth: int, topk: int,
               protocols: Sequence[str] = ("lagnh", "ties"), device: str = "cpu") -> dict:
    """MAP@K of the run's query split against its database: plain, and re-ranked by each score
    (the same numbers as ``lagnh evaluate RUN --rerank R --rerank-score S``)."""
    ds = codes_dataset(run)
    qidx, didx = ds.split("query"), ds.split("database")
    qc, dc = run.load_codes("query"), run.load_codes("database")
    lq, ld = ds.label_rows(qidx), ds.label_rows(didx)
    feats, aux = ds.feature_rows(qidx), ds.aux_rows(qidx)
    z = real_output(load_encoder(run, device), feats, aux)
    _, cand = hamming_rank(qc, dc, depth)
    comps = _components(ds, didx, cand, Vectors(z, feats, aux), dc)
    return _maps(qc, dc, lq, ld, topk, depth, cand, comps, scores, protocols)


def rerank_study(runs: Sequence[str | Path], out_dir: str | Path, *, depth: int = 1000, topk: int = 1000,
                 fraction: float = 0.2, seed: int = 0, device: str = "cpu", save: bool = False) -> dict[str, Path]:
    """Choose the re-rank score on the runs' validation splits; report it on their queries.

    Two choices, both on validation only: one for all the runs (the best mean, what
    :data:`lagnh_pyg.rerank.DEFAULT_SCORE` records) and one per dataset (the best mean over the
    runs of that dataset: how much the aux deserve depends on the data). With ``save`` each run
    keeps its dataset's choice in ``RUN/rerank.json``, the score its searches then use.
    Writes ``rerank.md`` (tables) and ``rerank.json`` (every figure) into ``out_dir``.
    """
    if not runs:
        raise InputError("give at least one run directory")
    opened = [Run.open(r) for r in runs]
    grid = weight_grid()
    t0 = time.perf_counter()
    val = {str(r.root): validation_maps(r, grid, depth, topk, fraction=fraction, seed=seed, device=device)
           for r in opened}
    overall = _best(val, [str(r.root) for r in opened], grid)
    datasets: dict[str, list[str]] = {}
    for r in opened:
        datasets.setdefault(codes_dataset(r).fingerprint, []).append(str(r.root))
    per_dataset = {root: _best(val, members, grid) for members in datasets.values() for root in members}
    singles = [RerankScore.parse(n) for n in COMPONENTS]
    test = {}
    for r in opened:
        own = per_dataset[str(r.root)]
        report = list({str(s): s for s in [own, overall, *singles]}.values())
        test[str(r.root)] = query_maps(r, report, depth, topk, device=device)
    seconds = time.perf_counter() - t0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance(runs=[str(r.root.resolve()) for r in opened], depth=depth, topk=topk, fraction=fraction,
                      seed=seed, seconds=round(seconds, 1), protocols={p: PROTOCOL_DESCRIPTIONS[p] for p in ("lagnh", "ties")},
                      model_selection="validation items of each run's training split against its other training "
                                      "items (labels of the training split only); the query split is read only "
                                      "to report the chosen scores")
    if save:
        for r in opened:
            own = per_dataset[str(r.root)]
            save_run_score(r, own, chosen_on=f"validation splits ({fraction:.0%} of the training items, seed {seed}) "
                                              f"of {len(datasets[codes_dataset(r).fingerprint])} run(s) on this dataset",
                           validation_map=val[str(r.root)]["scores"][str(own)]["lagnh"],
                           plain_validation_map=val[str(r.root)]["plain"]["lagnh"], depth=depth, topk=topk)
    md = _markdown(opened, val, overall, per_dataset, test, prov)
    files = {"markdown": write_text(out_dir / "rerank.md", md)}
    files["json"] = out_dir / "rerank.json"
    write_json_atomic(files["json"], {"chosen_for_all": str(overall),
                                      "chosen_per_dataset": {k: str(v) for k, v in per_dataset.items()},
                                      "validation": val, "queries": test, "provenance": prov})
    return files


def _best(val: dict, roots: list[str], grid: Sequence[RerankScore]) -> RerankScore:
    """The weighting with the best mean validation MAP (protocol lagnh) over ``roots``."""
    mean = {str(s): float(np.mean([val[r]["scores"][str(s)]["lagnh"] for r in roots])) for s in grid}
    return RerankScore.parse(max(mean, key=mean.get))


def _markdown(runs, val, overall, per_dataset, test, prov) -> str:
    roots = [str(r.root) for r in runs]
    mean = {s: float(np.mean([val[r]["scores"][s]["lagnh"] for r in roots])) for s in val[roots[0]]["scores"]}
    lines = [f"# Two-stage ranking: Hamming top R, re-ranked\n\nChosen on validation for all runs: **{overall}** "
             f"(mean validation MAP {mean[str(overall)]:.4f} over {len(runs)} runs; {len(mean)} weightings tried). "
             "Chosen per dataset: " + ", ".join(sorted({f"**{per_dataset[r]}** ({Path(r).name})" for r in roots})) + ".\n"]
    singles = [str(RerankScore.parse(n)) for n in COMPONENTS]
    head = ["run", "protocol", "plain", "dataset's choice", "gain", "choice for all", "gain", *singles]
    rows = []
    for r in runs:
        t, own = test[str(r.root)], str(per_dataset[str(r.root)])
        for p in ("lagnh", "ties"):
            plain = t["plain"][p]
            mine, alls = t["scores"][own][p], t["scores"][str(overall)][p]
            rows.append([r.root.name, p, f"{plain:.4f}", f"{mine:.4f} ({own})", f"{mine - plain:+.4f}", f"{alls:.4f}",
                         f"{alls - plain:+.4f}", *[f"{t['scores'][s][p]:.4f}" for s in singles]])
    lines.append(f"## Queries against the database: MAP@{prov['topk']}, R = {prov['depth']}\n")
    lines.append(markdown_table(head, rows))
    best = sorted(mean, key=mean.get, reverse=True)[:8]
    vrows = [[s, f"{mean[s]:.4f}", *[f"{val[r]['scores'][s]['lagnh']:.4f}" for r in roots]] for s in best]
    vrows.append(["plain (no re-rank)", f"{np.mean([val[r]['plain']['lagnh'] for r in roots]):.4f}",
                  *[f"{val[r]['plain']['lagnh']:.4f}" for r in roots]])
    lines.append("\n## Validation (training split), protocol lagnh: the 8 best weightings on average\n")
    lines.append(markdown_table(["score", "mean", *[r.root.name for r in runs]], vrows))
    return "\n".join(lines) + "\n\n" + provenance_markdown(prov)
