"""`lagnh encode`: codes for the query/database splits from any run (LAGNH or baseline)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from lagnh_pyg.errors import InputError

from .common import DeviceOpt, handle_errors, out

logger = logging.getLogger(__name__)

SPLIT_CHOICES = {"query": ["query"], "database": ["database"], "train": ["train"], "all": ["query", "database"]}


@handle_errors
def encode(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `lagnh train` or `lagnh baseline`.")],
    split: Annotated[str, typer.Option(help="query, database, train, or all (= query and database).")] = "all",
    data: Annotated[Optional[Path], typer.Option(help="Encode the items of another dataset directory with this model.")] = None,
    device: DeviceOpt = "auto",
    chunk: Annotated[int, typer.Option(help="Items per encoding chunk (memory only; codes do not depend on it).")] = 8192,
    encoding: Annotated[Optional[str], typer.Option(help="LAGNH runs only: neighbours (default), self, or faithful (batches of 256, as released).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write the codes to this directory instead of RUN_DIR/codes (needed with --data: another dataset's codes never replace the run's own).")] = None,
) -> None:
    """Write packed codes to RUN_DIR/codes/{query,database}.npy (uint8, np.packbits order).

    LAGNH's default neighbours encoding reads the training nodes' cache memory-mapped and
    links each item to training nodes by FAISS: exact up to 200,000 training nodes, beyond a
    chunked PCA-64 + IVF index over the memory-mapped features with an exact re-rank, so
    memory stays bounded at a million training nodes.

    Example:

    lagnh encode runs/coco32

    lagnh encode runs/coco32 --data data/other --out codes/other
    """
    from rich.progress import Progress

    from lagnh_pyg.device import resolve_device
    from lagnh_pyg.encoders import encode_splits
    from lagnh_pyg.rundir import Run

    if split not in SPLIT_CHOICES:
        raise InputError(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    if chunk <= 0:
        raise InputError("--chunk must be positive")
    run = Run.open(run_dir)
    if encoding is not None and run.method != "lagnh":
        raise InputError(f"--encoding applies to LAGNH runs; {run_dir} was made by {run.method}")
    ds = run.dataset(data)
    own = Path(ds.root).resolve() == run.data_dir.resolve()
    if not own and out_dir is None:
        raise InputError(f"--data {data} is not the dataset {run.root} was trained on: its codes would replace the "
                         "run's own codes/; pass --out DIR to write them elsewhere")
    if out_dir is not None:
        _check_codes_out(out_dir, run)
    if own and ds.fingerprint != run.meta.get("data_fingerprint"):
        logger.warning("warning: dataset %s changed since %s was trained (fingerprint %s, trained on %s); "
                       "encoding its current contents", ds.root, run.root, ds.fingerprint, run.meta.get("data_fingerprint"))
    totals = {s: len(ds.split(s)) for s in SPLIT_CHOICES[split]}
    with Progress(console=out, transient=True) as bar:
        tasks = {s: bar.add_task(f"encoding {s}", total=totals[s]) for s in SPLIT_CHOICES[split]}
        log = _ProgressLog(totals)
        written = encode_splits(run, SPLIT_CHOICES[split], data_dir=data, device=resolve_device(device), chunk=chunk,
                                progress=lambda s, m: (bar.advance(tasks[s], m), log(s, m)),
                                encoder_options={"encoding": encoding} if encoding else None, out_dir=out_dir)
    for s, p in written.items():
        out.print(f"{s}: {p}")


class _ProgressLog:
    """A log line at every tenth of a split of 100,000 items or more (items/s so far): the
    progress bar is not shown when the output is not a terminal (a long batch job)."""

    def __init__(self, totals: dict[str, int]) -> None:
        import time

        self.totals, self.done, self.clock, self.t0 = totals, dict.fromkeys(totals, 0), time.perf_counter, {}

    def __call__(self, split: str, m: int) -> None:
        total = self.totals[split]
        t0, first = self.t0.setdefault(split, (self.clock(), m))  # the rate from the end of the first chunk
        before, self.done[split] = self.done[split], self.done[split] + m
        if total >= 100_000 and before * 10 // total != self.done[split] * 10 // total:
            rate = (self.done[split] - first) / max(self.clock() - t0, 1e-9)
            logger.info(f"encoding {split}: {self.done[split]:,} of {total:,} items, {rate:,.0f} items/s")


def _check_codes_out(out_dir: Path, run) -> None:
    """``--out`` must be new, empty, or codes this project wrote (their old .npy files are
    replaced), and never the run's own directory or the dataset's."""
    from lagnh_pyg.codes import CODES_FORMAT
    from lagnh_pyg.ownership import check_replaceable, check_writable_target

    check_writable_target(out_dir, "--out", directory=True)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        check_replaceable(out_dir, (CODES_FORMAT,), inputs=[run.meta_path, run.model_path])
