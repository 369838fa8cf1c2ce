"""`lagnh train`: fit LAGNH on a dataset directory's training split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .common import DeviceOpt, handle_errors, out


@handle_errors
def train(
    data_dir: Annotated[Path, typer.Argument(help="A dataset directory (see `lagnh data`).")],
    config: Annotated[str, typer.Option(metavar="NAME|FILE", help="A shipped config's name (demo, coco, nuswide) or a YAML file.")],
    bits: Annotated[int, typer.Option(help="Code length: a multiple of 8 (16, 32, 64, 128).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory to create.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config value, e.g. --set train.epochs=50 (repeatable).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN_DIR/checkpoint.pt (same config; train.epochs may grow).")] = False,
    device: DeviceOpt = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar with the loss terms.")] = True,
    distributed: Annotated[bool, typer.Option(help="Data-parallel training (train.mode=sampled) under `torchrun --nproc_per_node=N -m lagnh_pyg train ...`.")] = False,
) -> None:
    """Train LAGNH and write RUN_DIR (checkpoint, encoder.safetensors, config.yaml, log.jsonl, run.json).

    In every mode but faithful, training ends with the neighbours encoding's cache of the
    training nodes (encoder.safetensors), computed layer by layer over the whole training
    graph in node chunks: bounded memory at any N (also sampled runs past 200,000 nodes, whose
    features stay memory-mapped).

    Example: lagnh train data/syn --config demo --bits 32 --out runs/demo32
    """
    from lagnh_pyg.ownership import check_writable_target
    from lagnh_pyg.training import train_run

    check_writable_target(out_dir, "--out", directory=True)  # before the data loads
    run_dir = train_run(data_dir, config, bits, out_dir, overrides=set_ or (), resume=resume, device=device,
                        progress=progress, distributed=distributed)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports (and writes)
        out.print(f"trained {run_dir}; next: lagnh encode {run_dir}")
