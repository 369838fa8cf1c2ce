"""The paper's Fig. 3: MAP as training goes on.

For each code length and seed one LAGNH run is trained to the first epoch count, encoded and
evaluated, then resumed (``train_run(resume=True)``, which continues exactly as an
uninterrupted run) to the next count, and so on. Training seconds are cumulative.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..codes import check_bits
from ..errors import InputError
from ..ownership import remove_owned
from ..report.plots import line_plot
from ..rundir import RUN_FORMAT
from .common import (
    LAGNH,
    RUN_MARKERS,
    Cell,
    ExperimentSpec,
    encode_and_evaluate,
    fit_method,
    fmt_mean,
    mean_std,
    table,
    write_report,
)


def run_epochs(spec: ExperimentSpec, epochs: Sequence[int], bits: Sequence[int] = (32,)) -> dict[str, Path]:
    epochs = [int(e) for e in epochs]
    if any(e < 1 for e in epochs) or epochs != sorted(set(epochs)):
        raise InputError(f"--epochs must be increasing positive integers, got {epochs}")
    bits = [check_bits(int(b)) for b in bits]
    cells: list[Cell] = []
    for b in bits:
        for s in spec.seeds:
            name = f"lagnh-{b}bits-seed{s}-epochs"
            run_dir = spec.out_dir / "runs" / name
            # a curve is one continuous training: start it over (only a run of ours is deleted)
            remove_owned(run_dir, (RUN_FORMAT,), markers=RUN_MARKERS)
            total = 0.0
            for i, e in enumerate(epochs):
                t0 = time.perf_counter()
                fit_method(LAGNH, spec, b, run_dir, s, overrides=[f"train.epochs={e}"], resume=i > 0)
                total += time.perf_counter() - t0
                c = Cell(LAGNH, b, s, name, (f"train.epochs={e}",), str(run_dir), train_seconds=total)
                encode_and_evaluate(spec, run_dir, c)
                c.extra["epochs"] = e
                cells.append(c)
    rows = [[e, *[fmt_mean([c.map for c in cells if c.extra["epochs"] == e and c.bits == b]) for b in bits]]
            for e in epochs]
    body = table(["epochs", *[f"{b} bits" for b in bits]], rows)
    files = write_report(spec, "epochs", "MAP versus training epochs (Fig. 3)", body, cells, extra_cols=["epochs"])
    series = {f"{b} bits": (epochs, [mean_std([c.map for c in cells if c.extra["epochs"] == e and c.bits == b])[0]
                                     for e in epochs]) for b in bits}
    files["figure"] = line_plot(spec.out_dir / "epochs.png", series, title=f"MAP vs epochs (protocol {spec.protocol})",
                                xlabel="epochs", ylabel="MAP")
    return files
