"""The paper's Table 3: MAP@K of every method at every code length, plus P@K curves (Fig. 2)
and the size/time table (Table 4) of the same runs, in two blocks that cannot mislead.

* **visual-only baselines (the paper's protocol)** (block ``visual``): the baselines hash the
  visual features alone, while LAGNH also sees every item's aux;
* **same inputs** (block ``same``): every baseline hashes LAGNH's inputs, ``inputs=both``
  (``[x/|x|, w a/|a|]``), with ``w`` chosen per method and code length on a validation split
  of the training data (:mod:`lagnh_pyg.experiments.same_inputs`).

Both blocks carry LAGNH's rows (one model, the same runs) and reference rows that do not hash:
cosine ranking on the features, on the aux, and on their concatenation (weight 1 and the
weight chosen on the validation split), under the same MAP@K protocol.

Writes ``accuracy.md`` (one table per block, the aux weights chosen and their validation
scores, then per method: stored model size, training seconds at each code length, encoding
microseconds an item, and which augmentation a view-based method trained with),
``accuracy.csv`` (one row per run; ``block``, ``inputs`` and ``aux_weight`` columns),
``accuracy-references.csv`` (the reference rows), ``accuracy.json`` and ``pk-<bits>bits.png``
(one line per method of the visual block; ``pk-same-<bits>bits.png`` for the same-inputs block)
into the report directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..codes import check_bits
from ..errors import InputError
from ..report.plots import line_plot
from ..report.tables import write_csv
from .common import (
    Cell,
    ExperimentSpec,
    check_methods,
    fmt_mean,
    is_lagnh,
    run_cell,
    table,
    write_report,
)
from .same_inputs import (
    AUX_WEIGHTS,
    VALIDATION,
    Validation,
    check_weights,
    choose_aux_weight,
    cosine_references,
)

logger = logging.getLogger(__name__)

#: the blocks of Table 3 and their titles
BLOCKS = {"visual": "Visual-only baselines (the paper's protocol)", "same": "Same inputs"}


def check_blocks(blocks: Sequence[str]) -> list[str]:
    out = []
    for b in blocks:
        b = str(b).strip().lower()
        if b not in BLOCKS:
            raise InputError(f"unknown Table 3 block {b!r}; choose visual, same or both (visual,same)")
        if b not in out:
            out.append(b)
    return [b for b in BLOCKS if b in out]


def run_accuracy(spec: ExperimentSpec, methods: Sequence[str], bits: Sequence[int],
                 blocks: Sequence[str] = ("visual",), aux_weights: Sequence[float] = AUX_WEIGHTS,
                 extend_weights: bool = False) -> dict[str, Path]:
    """Fit, encode and evaluate every (method, bits, seed) of each block; write the tables and figures.

    Args:
        blocks: ``visual`` (the paper's protocol), ``same`` (every baseline with
            ``inputs=both``, its ``aux_weight`` chosen on the validation split), or both.
        aux_weights: the grid the same-inputs block and the tuned cosine reference choose from.
        extend_weights: go on past the grid's edge when a pick lies there
            (:func:`~lagnh_pyg.experiments.tuning.sweep_weights`). Off here, so that a
            script's fixed grid means what it did; ``lagnh experiment accuracy`` turns it on
            unless told ``--no-extend-weights``.
    """
    methods = check_methods(methods)
    bits = [check_bits(int(b)) for b in bits]
    blocks = check_blocks(blocks)
    weights = check_weights(aux_weights)
    validation = Validation(spec)
    cells = [c for b in bits for m in methods
             for c in _method_cells(spec, validation, m, b, blocks, weights, extend_weights)]
    refs = cosine_references(spec, validation, weights, extend_weights)
    body = "".join(_block(blk, methods, bits, cells, refs, weights, extend_weights) for blk in blocks)
    body += _choices_table(methods, bits, cells, refs, weights) if "same" in blocks else ""
    body += "\n## Model size and time (Table 4)\n\n" + _size_time_table(_rows(methods, blocks), bits, _by(cells))
    prov = {"blocks": blocks, "model_selection": _selection_note(blocks, weights, extend_weights)}
    files = write_report(spec, "accuracy", "Retrieval accuracy (Table 3)", body, cells,
                         extra_cols=("block", "inputs", "aux_weight"), extra_json={"blocks": blocks, "references": refs},
                         prov_extra=prov)
    files["references_csv"] = write_csv(
        spec.out_dir / "accuracy-references.csv",
        ["reference", "inputs", "aux_weight", "protocol", "topk", "map", "seconds"],
        [[r["name"], r["inputs"], r["aux_weight"], spec.protocol, "all" if spec.topk is None else spec.topk, r["map"],
          r["seconds"]] for r in refs])
    files.update(_pk_plots(spec, methods, bits, blocks, cells))
    return files


def _method_cells(spec: ExperimentSpec, validation: Validation, m: str, b: int, blocks: Sequence[str],
                  weights: Sequence[float], extend: bool = False) -> list[Cell]:
    """The cells of method ``m`` at ``b`` bits, one per seed and block (LAGNH: one set for both)."""
    from ..device import resolve_device

    cells = []
    if "visual" in blocks or is_lagnh(m):
        for s in spec.seeds:
            c = run_cell(spec, m, b, s, f"{m}-{b}bits-seed{s}")
            c.extra.update(block="visual+same" if is_lagnh(m) else "visual", inputs="both" if is_lagnh(m) else "visual",
                           aux_weight=None)
            cells.append(c)
    if "same" in blocks and not is_lagnh(m):
        choice = choose_aux_weight(spec, validation, m, b, weights, resolve_device(spec.device), extend)
        w = choice["aux_weight"]
        for s in spec.seeds:
            c = run_cell(spec, m, b, s, f"{m}-both-{b}bits-seed{s}", ("inputs=both", f"aux_weight={w!r}"))
            c.extra.update(block="same", inputs="both", aux_weight=w, aux_weight_choice=choice)
            cells.append(c)
    return cells


def _pk_plots(spec: ExperimentSpec, methods: Sequence[str], bits: Sequence[int], blocks: Sequence[str],
              cells: Sequence[Cell]) -> dict[str, Path]:
    """One P@K figure per block and code length: ``pk-<b>bits.png`` (visual), ``pk-same-<b>bits.png``."""
    files = {}
    for blk in blocks:
        for b in bits:
            series = {}
            for (label, bb), cs in _by(cells).items():
                in_block = label in methods if blk == "visual" else (label.endswith(SAME_SUFFIX) or is_lagnh(label))
                if bb == b and in_block:
                    series[label] = (cs[0].pk_cutoffs, np.mean([c.pk for c in cs], axis=0))
            same = blk == "same"
            files[f"pk_same_{b}" if same else f"pk_{b}"] = line_plot(
                spec.out_dir / (f"pk-same-{b}bits.png" if same else f"pk-{b}bits.png"), series,
                title=f"precision@K, {b} bits (protocol {spec.protocol}{', same inputs' if same else ''})",
                xlabel="K", ylabel="precision@K")
    return files


SAME_SUFFIX = " (same inputs)"
#: what the notes add when the sweep may leave the grid (:func:`~lagnh_pyg.experiments.tuning.sweep_weights`)
EXTENDED_NOTE = (" (a pick at the grid's edge goes on past it, doubling or halving w until two weights in a row bring "
                 "no gain)")


def _label(c: Cell) -> str:
    return c.method + (SAME_SUFFIX if c.extra.get("block") == "same" else "")


def _by(cells: Sequence[Cell]) -> dict[tuple[str, int], list[Cell]]:
    """Cells grouped by (row label, bits): one entry per seed."""
    by: dict[tuple[str, int], list[Cell]] = {}
    for c in cells:
        by.setdefault((_label(c), c.bits), []).append(c)
    return by


def _rows(methods: Sequence[str], blocks: Sequence[str]) -> list[str]:
    """The row labels of Table 4: each method of the visual block, then the same-inputs runs."""
    rows = [m for m in methods if "visual" in blocks or is_lagnh(m)]
    return rows + [m + SAME_SUFFIX for m in methods if "same" in blocks and not is_lagnh(m)]


def _ref_row(r: dict, bits: Sequence[int]) -> list[str]:
    inputs = f"[features, {r['aux_weight']:g} × aux]" if r["inputs"] == "both" else {"visual": "features"}.get(
        r["inputs"], r["inputs"])
    tuned = " (weight from validation)" if "validation" in r else ""
    return [f"*{r['name']}* (no hashing)", *[f"{r['map']:.4f}" for _ in bits], inputs + tuned]


def _block(blk: str, methods: Sequence[str], bits: Sequence[int], cells: Sequence[Cell], refs: Sequence[dict],
           weights: Sequence[float], extend: bool = False) -> str:
    by = _by(cells)
    rows = []
    for m in methods:
        label = m if blk == "visual" or is_lagnh(m) else m + SAME_SUFFIX
        if (label, bits[0]) not in by:
            continue
        if is_lagnh(m):
            inputs = "features + aux (graph, attention)"
        elif blk == "visual":
            inputs = "features"
        else:
            inputs = "[features, w × aux], w = " + " / ".join(f"{by[(label, b)][0].extra['aux_weight']:g}" for b in bits)
        rows.append([m, *[fmt_mean([c.map for c in by[(label, b)]]) for b in bits], inputs])
    rows += [_ref_row(r, bits) for r in refs]
    if blk == "visual":
        note = ("The baselines hash the visual features alone; LAGNH also sees the aux of every item (training, "
                "query and database). This is the paper's comparison, and it compares methods fed different inputs.")
    else:
        grid = ", ".join(f"{w:g}" for w in weights)
        note = ("Every baseline hashes LAGNH's inputs, [x/|x|, w a/|a|] (`inputs=both`), each query and database item "
                f"with its own aux; w (`aux_weight`) is chosen per method and code length from {{{grid}}}"
                f"{EXTENDED_NOTE if extend else ''} on a "
                f"validation split of the training data ({VALIDATION['fraction']:.0%} of it, seed "
                f"{VALIDATION['seed']}, ranked against the rest; the query and database splits are never read), "
                "w listed per code length.")
    refs_note = ("Rows in *italics* rank the database by cosine similarity, without codes, under the same MAP@K "
                 "protocol (ties by database order): one value, repeated at every code length.")
    return (f"\n## {BLOCKS[blk]}\n\n{note} {refs_note}\n\n"
            + table(["method", *[f"{b} bits" for b in bits], "inputs"], rows))


def _choices_table(methods: Sequence[str], bits: Sequence[int], cells: Sequence[Cell], refs: Sequence[dict],
                   weights: Sequence[float]) -> str:
    """Every aux weight's validation MAP, per method and code length (the chosen one in bold)."""
    by = _by(cells)
    sweeps = []  # (method, bits, chosen weight, results, seconds)
    for m in methods:
        for b in bits:
            cs = by.get((m + SAME_SUFFIX, b))
            if cs:
                choice = cs[0].extra["aux_weight_choice"]
                sweeps.append((m, b, choice["aux_weight"], choice["results"], f"{choice['seconds']:.1f}"))
    tuned = next(r for r in refs if "validation" in r)
    sweeps.append(("*cosine on [features, aux]*", "-", tuned["aux_weight"], tuned["validation"], "-"))
    # the grid's weights, then any tried past its edge, in increasing order
    columns = sorted({float(w) for w in weights} | {r["aux_weight"] for s in sweeps for r in s[3]})
    rows = []
    for m, b, chosen, results, seconds in sweeps:
        by_weight = {r["aux_weight"]: r for r in results}
        rows.append([m, b, *[_mark(by_weight[w], chosen) if w in by_weight else "-" for w in columns], seconds])
    past = set(columns) - {float(w) for w in weights}
    note = (f" Weights outside the grid ({', '.join(f'{w:g}' for w in sorted(past))}) were tried because a pick lay at "
            "its edge; -: not tried." if past else "")
    return ("\n### aux_weight on the validation split\n\nValidation MAP of each weight (held-out training items "
            f"against the other training items; the chosen weight in bold); s: seconds of the sweep.{note}\n\n"
            + table(["method", "bits", *[f"w={w:g}" for w in columns], "s"], rows))


def _mark(r: dict, chosen: float) -> str:
    text = f"{r['validation_map']:.4f}"
    return f"**{text}**" if r["aux_weight"] == chosen else text


def _selection_note(blocks: Sequence[str], weights: Sequence[float], extend: bool = False) -> str:
    if "same" not in blocks:
        return ("the query set chooses nothing; the tuned cosine reference's aux weight comes from a validation split of "
                "the training data")
    return (f"aux_weight of each same-inputs baseline and of the tuned cosine reference chosen from "
            f"{', '.join(f'{w:g}' for w in weights)}{EXTENDED_NOTE if extend else ''} on a validation split of the "
            "training data "
            f"(fraction {VALIDATION['fraction']}, seed {VALIDATION['seed']}); the query set chooses nothing")


def stored_numbers(run_dir: str | Path) -> int | None:
    """How many numbers a run's fitted model stores: the arrays of a baseline's ``.npz``, or
    every tensor of the run's ``.safetensors`` files (deep baselines; LAGNH's encoder)."""
    from ..rundir import Run

    run = Run.open(run_dir)
    if run.model_path.suffix == ".npz":
        with np.load(run.model_path, allow_pickle=False) as z:
            return int(sum(z[k].size for k in z.files if z[k].ndim > 0 and z[k].dtype.kind in "fiu"))
    files = sorted(Path(run.root).glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for f in files:
        with safe_open(str(f), framework="np") as st:
            total += sum(int(np.prod(st.get_slice(k).get_shape())) for k in st.keys())
    return total


def _augmentation(run_dir: str) -> str:
    from ..rundir import Run

    aug = Run.open(run_dir).meta.get("fit", {}).get("augmentation")
    return aug["variant"] if aug else "-"


def _size_time_table(methods: Sequence[str], bits: Sequence[int], by: dict) -> str:
    top = max(bits)
    rows = []
    for m in methods:
        if (m, top) not in by:
            continue
        cs_top = by[(m, top)]
        size = stored_numbers(cs_top[0].run_dir)
        rows.append([m, "-" if size is None else f"{size:,}",
                     *[fmt_mean([c.train_seconds for c in by[(m, b)]], 2) for b in bits],
                     fmt_mean([1e6 * c.encode_seconds / max(1, c.n_encoded) for c in cs_top], 1),
                     _augmentation(cs_top[0].run_dir)])
    header = ["method", f"stored numbers ({top} bits)", *[f"training s ({b} bits)" for b in bits],
              f"encoding µs/item ({top} bits)", "views"]
    note = ("\nTraining = fitting on the training split (LAGNH: graph construction included; reused runs keep "
            "the time of their first fit); encoding = query + database splits. views: the augmentation a "
            "view-based method trained with (stored views of the dataset, or the feature-level fallback).\n")
    return table(header, rows) + note
