"""`lagnh baseline`: fit a hashing baseline (shallow or deep) and write a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, handle_errors, out


@handle_errors
def baseline(
    name: Annotated[str, typer.Argument(help="Method: one of those listed above.", show_default=False)],
    data_dir: Annotated[Path, typer.Argument(help="A dataset directory (the method is fitted on its train split).")],
    bits: Annotated[int, typer.Option(help="Code length: a positive multiple of 8.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory to create (must not exist).")],
    seed: Annotated[int, typer.Option(help="Seed of the method's random choices.")] = 0,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Method parameter key=value (repeatable; see above).")] = None,
    config: Annotated[str | None, typer.Option("--config", metavar="NAME|FILE", help="Parameters: a YAML file or a shipped baseline config's name (default: the method's own, configs/baselines/NAME.yaml).")] = None,
    device: DeviceOpt = "auto",
) -> None:
    from lagnh_pyg.baselines import BASELINES, DeepBaseline, baseline_class, fit_run
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.ownership import check_writable_target
    from lagnh_pyg.params import split_assignments
    from lagnh_pyg.rundir import Run

    check_writable_target(out_dir, "--out", directory=True)  # before the fit, which may take minutes
    deep = issubclass(baseline_class(name), DeepBaseline) if name.lower() in BASELINES else False
    dev = resolve_device(device) if deep else "cpu"
    run_dir = fit_run(name, data_dir, bits, out_dir, seed=seed, device=dev, config=config, **split_assignments(sets, "--set", "--set iterations=50"))
    run = Run.open(run_dir)
    fit = run.meta.get("fit", {})
    aug = fit.get("augmentation")
    note = f"; views: {aug['variant']}" if aug else ""
    out.print(f"wrote {run.method} run {run_dir} ({run.bits} bits, fitted on {fit.get('train_items')} items "
              f"in {fit.get('fit_seconds', 0):.2f} s{note}); next: lagnh encode {run_dir}")


def _help() -> str:
    from lagnh_pyg.baselines import DEEP, INPUT_CHOICES, SHALLOW

    lines = [
        "Fit a hashing baseline on DATA_DIR's train split; write RUN_DIR.",
        "",
        "encode, evaluate, index and search then work on RUN_DIR as on a LAGNH run.",
        "Example: lagnh baseline itq data/coco --bits 64 --out runs/itq64",
        "Example: lagnh baseline cibhash data/coco --bits 64 --out runs/c64 --device cuda",
        "",
        "Deep methods train a small network on the features (deterministic per",
        "seed and device); defaults in configs/baselines/NAME.yaml. Methods marked",
        "(views) learn from augmented views: the dataset's stored views when it has",
        "them (lagnh data demo --views K; lagnh data add-views), else a feature-level",
        "fallback (dropout view_dropout + Gaussian noise view_noise x each dimension's",
        "std); run.json's fit.augmentation.variant says which ran.",
        "",
    ]
    for title, group in (("Shallow methods", SHALLOW), ("Deep methods", DEEP)):
        lines.append(f"{title}, with their --set parameters and defaults:")
        for cls in group:
            tag = " (views)" if getattr(cls, "uses_views", False) else ""
            lines.append(f"  {cls.name:<8} {cls.summary}{tag}")
            for p in cls.params:
                lines.append(f"           --set {p.describe()}")
        lines.append("")
    lines.append("Every method also takes the inputs it hashes (x: an item's features, a: its aux):")
    for choice, what in INPUT_CHOICES.items():
        lines.append(f"  --set inputs={choice:<7} {what}")
    lines += [
        "  --set aux_weight=1.0   with inputs=both: the aux part is aux_weight * a/|a| beside x/|x|",
        "Queries and database items are encoded from their own aux, as LAGNH encodes them;",
        "experiment tune --grid aux_weight=... chooses the weight on the training data.",
        "Example: lagnh baseline itq data/coco --bits 64 --out runs/itq64b --set inputs=both",
    ]
    return "\n".join(lines).rstrip()


baseline.__doc__ = _help()
