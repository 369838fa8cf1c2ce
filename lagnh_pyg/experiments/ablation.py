"""The paper's Table 5: LAGNH variants (``variant=...`` of the LAGNH config) at each code length."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..codes import check_bits
from ..errors import InputError
from .common import LAGNH, Cell, ExperimentSpec, fmt_mean, run_cell, table, write_report

# Table 5's order; recons-Sa is LAGNH itself.
TABLE5_VARIANTS = ("no-aux", "no-att", "only-Sv", "only-Sa", "recons-ZZ", "recons-feat", "recons-S",
                   "recons-Sv", "recons-Sa")


def run_ablation(spec: ExperimentSpec, variants: Sequence[str] = TABLE5_VARIANTS,
                 bits: Sequence[int] = (32,)) -> dict[str, Path]:
    from ..config import VARIANTS

    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise InputError(f"unknown variant(s) {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    bits = [check_bits(int(b)) for b in bits]
    cells: list[Cell] = []
    for b in bits:
        for v in variants:
            for s in spec.seeds:
                c = run_cell(spec, LAGNH, b, s, f"lagnh-{v}-{b}bits-seed{s}", overrides=[f"variant={v}"])
                c.extra["variant"] = v
                cells.append(c)
    rows = [[v, *[fmt_mean([c.map for c in cells if c.extra["variant"] == v and c.bits == b]) for b in bits]]
            for v in variants]
    body = table(["variant", *[f"{b} bits" for b in bits]], rows)
    return write_report(spec, "ablation", "LAGNH ablations (Table 5)", body, cells, extra_cols=["variant"])
