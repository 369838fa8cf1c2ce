"""The paper's Fig. 4: MAP as one loss weight or the fusion weight varies, the rest fixed.

Parameters: ``alpha`` (semantic guidance, Eq. 11), ``beta`` (reconstruction, Eq. 9),
``lambda`` (quantisation, Eq. 8), ``eta`` (fusion of S^a, Eq. 5). Every value is reported;
none is chosen (model selection never looks at the query set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..codes import check_bits
from ..errors import InputError
from ..report.plots import line_plot
from .common import LAGNH, Cell, ExperimentSpec, fmt_mean, mean_std, run_cell, table, write_report

PARAMETERS = {"alpha": "loss.alpha", "beta": "loss.beta", "lambda": "loss.lam", "eta": "graph.eta"}
DEFAULT_GRID = {
    "alpha": (0.01, 0.1, 1.0, 10.0, 100.0),
    "beta": (1.0, 10.0, 100.0, 1000.0),
    "lambda": (0.01, 0.1, 1.0, 10.0, 100.0),
    "eta": (0.0, 0.1, 1.0, 10.0),
}


def run_sensitivity(spec: ExperimentSpec, grid: Mapping[str, Sequence[float]],
                    bits: Sequence[int] = (32,)) -> dict[str, Path]:
    bad = [p for p in grid if p not in PARAMETERS]
    if bad:
        raise InputError(f"unknown parameter(s) {', '.join(bad)}; choose from {', '.join(PARAMETERS)}")
    bits = [check_bits(int(b)) for b in bits]
    from ..config import load_config

    for p, values in grid.items():  # every value is checked (finite, in range) before the first run
        for v in values:
            load_config(spec.config, [*spec.overrides, f"{PARAMETERS[p]}={float(v)!r}"])
    cells: list[Cell] = []
    for p, values in grid.items():
        for v in values:
            for b in bits:
                for s in spec.seeds:
                    c = run_cell(spec, LAGNH, b, s, f"lagnh-{p}{v:g}-{b}bits-seed{s}",
                                 overrides=[f"{PARAMETERS[p]}={float(v)!r}"])
                    c.extra.update({"parameter": p, "value": float(v)})
                    cells.append(c)
    body = ""
    files: dict[str, Path] = {}
    for p, values in grid.items():
        rows = [[f"{v:g}", *[fmt_mean([c.map for c in cells if c.extra["parameter"] == p and c.extra["value"] == v
                                       and c.bits == b]) for b in bits]] for v in values]
        body += f"## {p} ({PARAMETERS[p]})\n\n" + table([p, *[f"{b} bits" for b in bits]], rows) + "\n"
    files.update(write_report(spec, "sensitivity", "Parameter sensitivity (Fig. 4)", body, cells,
                              extra_cols=["parameter", "value"]))
    for p, values in grid.items():
        series = {}
        for b in bits:
            ys = [mean_std([c.map for c in cells if c.extra["parameter"] == p and c.extra["value"] == v
                            and c.bits == b])[0] for v in values]
            series[f"{b} bits"] = (list(values), ys)
        files[f"fig_{p}"] = line_plot(spec.out_dir / f"sensitivity-{p}.png", series,
                                      title=f"MAP vs {p} (protocol {spec.protocol})", xlabel=p, ylabel="MAP",
                                      xscale=_xscale(values))
    return files


def _xscale(values: Sequence[float]) -> str:
    """Log axis for grids spanning decades (symlog when 0 is among them), else linear."""
    pos = [abs(v) for v in values if v]
    if len(pos) < 2 or max(pos) / min(pos) < 50:
        return "linear"
    return "symlog" if len(pos) < len(values) or min(values) < 0 else "log"
