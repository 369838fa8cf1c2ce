"""`lagnh index`: the FAISS Hamming index of a run's database codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import handle_errors, say


@handle_errors
def index(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with database codes (`lagnh encode`).")],
    kind: Annotated[str, typer.Option(help="flat (exact, default), hash or multihash (sub-linear, approximate).")] = "flat",
    hash_bits: Annotated[int | None, typer.Option(help="Bits per hash table (hash / multihash).")] = None,
    nhash: Annotated[int | None, typer.Option(help="Number of hash tables (multihash).")] = None,
    nflip: Annotated[int | None, typer.Option(help="Bit flips probed at search time (hash / multihash).")] = None,
) -> None:
    """Build the FAISS Hamming index of the database codes into RUN_DIR/index/."""
    import time

    from lagnh_pyg.retrieval import build_index

    params = {k: v for k, v in {"hash_bits": hash_bits, "nhash": nhash, "nflip": nflip}.items() if v is not None}
    t0 = time.perf_counter()
    ix = build_index(run_dir, kind, **params)
    say(f"{ix!r} built in {time.perf_counter() - t0:.2f}s -> {Path(run_dir) / 'index'}")
