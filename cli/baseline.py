"""`lagnh baseline`: fit a shallow hashing baseline and write a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.errors import InputError

from .common import handle_errors, out


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["anchors=500", "reg=1e-5"]`` -> ``{"anchors": "500", "reg": "1e-5"}`` (typed later)."""
    params: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects key=value (e.g. --set iterations=50), got {item!r}")
        params[key.strip()] = value.strip()
    return params


@handle_errors
def baseline(
    name: Annotated[str, typer.Argument(help="Method: lsh, sklsh, sh, pcah, itq or sgh.", show_default=False)],
    data_dir: Annotated[Path, typer.Argument(help="A dataset directory (the method is fitted on its train split).")],
    bits: Annotated[int, typer.Option(help="Code length: a positive multiple of 8.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory to create (must not exist).")],
    seed: Annotated[int, typer.Option(help="Seed of the method's random choices.")] = 0,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Method parameter key=value (repeatable; see above).")] = None,
) -> None:
    from lagnh_pyg.baselines import fit_run
    from lagnh_pyg.run import Run

    run_dir = fit_run(name, data_dir, bits, out_dir, seed=seed, **parse_sets(sets))
    run = Run.open(run_dir)
    fit = run.meta.get("fit", {})
    out.print(f"wrote {run.method} run {run_dir} ({run.bits} bits, fitted on {fit.get('train_items')} items "
              f"in {fit.get('fit_seconds', 0):.2f} s); next: lagnh encode {run_dir}")


def _help() -> str:
    from lagnh_pyg.baselines import BASELINES

    lines = [
        "Fit a shallow hashing baseline on DATA_DIR's train split; write RUN_DIR.",
        "",
        "encode, evaluate, index and search then work on RUN_DIR as on a LAGNH run.",
        "Example: lagnh baseline itq data/coco --bits 64 --out runs/itq64",
        "",
        "Methods, with their --set parameters and defaults:",
    ]
    for cls in BASELINES.values():
        lines.append(f"  {cls.name:<6} {cls.summary}")
        for p in cls.params:
            lines.append(f"           --set {p.describe()}")
    return "\n".join(lines)


baseline.__doc__ = _help()
