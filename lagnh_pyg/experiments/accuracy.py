"""The paper's Table 3: MAP@K of every method at every code length, plus P@K curves.

Writes ``accuracy.md`` (methods x bits), ``accuracy.csv`` (one row per run),
``accuracy.json`` and ``pk-<bits>bits.png`` (one line per method) into the report directory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..codes import check_bits
from ..report import line_plot
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
