"""The paper's Table 4: training and encoding seconds per method (default 32 bits).

Times are always measured afresh (finished runs are not reused) on the machine recorded in
the report; encoding covers the query and database splits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..codes import check_bits
from .common import Cell, ExperimentSpec, check_methods, fmt_mean, run_cell, table, write_report


def run_timing(spec: ExperimentSpec, methods: Sequence[str], bits: Sequence[int] = (32,)) -> dict[str, Path]:
    methods = check_methods(methods)
    bits = [check_bits(int(b)) for b in bits]
    fresh = dataclasses.replace(spec, reuse=False)
    cells: list[Cell] = []
    for b in bits:
        for m in methods:
            for s in spec.seeds:
                cells.append(run_cell(fresh, m, b, s, f"timing-{m}-{b}bits-seed{s}"))
    rows = []
    for b in bits:
        for m in methods:
            cs = [c for c in cells if (c.method, c.bits) == (m, b)]
            rows.append([m, b, fmt_mean([c.train_seconds for c in cs], 2), fmt_mean([c.encode_seconds for c in cs], 2),
                         fmt_mean([1e6 * c.encode_seconds / max(1, c.n_encoded) for c in cs], 1),
                         cs[0].n_encoded, fmt_mean([c.map for c in cs])])
    body = table(["method", "bits", "training s", "encoding s", "encoding µs/item", "items encoded", "MAP"], rows)
    body += ("\nTraining = fitting on the training split (LAGNH: graph construction included); encoding = the "
             "query and database splits. Device for LAGNH: " + spec.device + ".\n")
    return write_report(spec, "timing", "Training and encoding time (Table 4)", body, cells)
