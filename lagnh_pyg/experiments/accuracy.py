"""The paper's Table 3: MAP@K of every method at every code length, plus P@K curves (Fig. 2)
and the size/time table (Table 4) of the same runs.

Writes ``accuracy.md`` (methods x bits, then per method: stored model size, training seconds
at each code length, encoding microseconds an item, and which augmentation a view-based
method trained with), ``accuracy.csv`` (one row per run), ``accuracy.json`` and
``pk-<bits>bits.png`` (one line per method) into the report directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..codes import check_bits
from ..report.plots import line_plot
from .common import Cell, ExperimentSpec, check_methods, fmt_mean, run_cell, table, write_report

logger = logging.getLogger(__name__)


def run_accuracy(spec: ExperimentSpec, methods: Sequence[str], bits: Sequence[int]) -> dict[str, Path]:
    """Fit, encode and evaluate every (method, bits, seed); write the table and the figures."""
    methods = check_methods(methods)
    bits = [check_bits(int(b)) for b in bits]
    cells: list[Cell] = []
    for b in bits:
        for m in methods:
            for s in spec.seeds:
                cells.append(run_cell(spec, m, b, s, f"{m}-{b}bits-seed{s}"))
    by = {(c.method, c.bits): [x for x in cells if (x.method, x.bits) == (c.method, c.bits)] for c in cells}
    rows = [[m, *[fmt_mean([c.map for c in by[(m, b)]]) for b in bits]] for m in methods]
    body = table(["method", *[f"{b} bits" for b in bits]], rows)
    body += "\n## Model size and time (Table 4)\n\n" + _size_time_table(methods, bits, by)
    files = write_report(spec, "accuracy", "Retrieval accuracy (Table 3)", body, cells)
    for b in bits:
        series = {}
        for m in methods:
            cs = by[(m, b)]
            series[m] = (cs[0].pk_cutoffs, np.mean([c.pk for c in cs], axis=0))
        files[f"pk_{b}"] = line_plot(spec.out_dir / f"pk-{b}bits.png", series,
                                     title=f"precision@K, {b} bits (protocol {spec.protocol})", xlabel="K",
                                     ylabel="precision@K")
    return files


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
