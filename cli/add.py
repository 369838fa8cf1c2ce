"""`lagnh add`: new pictures into a run's collection, without re-indexing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.errors import InputError

from .common import DeviceOpt, handle_errors, say


@handle_errors
def add(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with database codes.")],
    images: Annotated[Path, typer.Argument(help="A folder of pictures (recursive), a list file, or one picture.")],
    tags: Annotated[Path | None, typer.Option(help="A tag CSV (path,tags) for the pictures, where the run's aux are tags.")] = None,
    prefix: Annotated[str, typer.Option(help="Prepended to each picture's id (its path relative to the folder).")] = "",
    batch: Annotated[int, typer.Option(help="Pictures a commit: an interruption loses at most one batch; rerunning skips what is in.")] = 64,
    device: DeviceOpt = "cpu",
) -> None:
    """Add pictures to RUN_DIR's collection without re-indexing: featurized like the dataset,
    encoded by the run's model, appended to RUN_DIR/added (what `lagnh serve` and
    `lagnh dedup` search; a running server sees them at its next change or restart).
    Pictures that cannot be read (corrupt, a FIFO, a dangling link, too large) are skipped
    and named; ids another writer took meanwhile are counted as already in.

    Example: lagnh add runs/photos32 new_photos/ --tags new_tags.csv
    """
    from lagnh_pyg.collection import Collection
    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.ingest import add_pictures
    from lagnh_pyg.text import check_text

    if batch < 1:
        raise InputError("--batch must be positive")
    check_text(prefix, "--prefix")  # before the run is opened or a picture read
    coll = Collection(run_dir, device=resolve_device(device))
    res = add_pictures(coll, images, tags_csv=tags, prefix=prefix, batch=batch, log=say)
    say(f"added {res['added']} picture(s) to {run_dir} ({res['already']} already in, {res['unreadable']} unreadable); "
        f"{len(coll)} items now")
