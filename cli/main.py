"""The `lagnh` command line: one module of cli/ per command or command group (``lagnh data ...``
in data.py, ``lagnh search`` in search.py, ...), each a thin wrapper that parses, calls the
library and prints; what they share is in common.py."""

from __future__ import annotations

import os
import warnings
from typing import Annotated

# OpenMP threads that spin while waiting waste the CPU whenever the machine is shared:
# measured here, EfficientNet feature extraction ran 6x slower without this. Must be set
# before torch loads its OpenMP runtime; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

# torch_geometric calls torch.jit.script at import; torch 2.14 warns about it on every run.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
# torch's one-time notes that sparse CSR tensors are "beta" (the library silences them locally too)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

from . import data, experiment, extract
from .add import add
from .baseline import baseline
from .dedup import dedup
from .demo import demo
from .encode import encode
from .evaluate import evaluate
from .index import index
from .index_folder import index_folder
from .search import search
from .serve import serve
from .train import train

app = typer.Typer(
    name="lagnh",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Unsupervised hashing for scalable image retrieval (LAGNH on PyTorch Geometric).",
)
# one file of cli/ per command (group), in the order of the data flow
app.add_typer(data.app, name="data")
app.add_typer(extract.app, name="extract")
app.command()(train)
app.command()(baseline)
app.command()(encode)
app.command()(evaluate)
app.command()(index)
app.command()(search)
app.add_typer(experiment.app, name="experiment")
app.command()(demo)
app.command()(serve)
app.command()(add)
app.command()(dedup)
app.command(name="index-folder")(index_folder)


@app.callback()
def _root(
    threads: Annotated[int | None, typer.Option(help="Threads for torch and FAISS, and the CPU budget that work split over processes shares (the demo's side-by-side runs) (default: all cores).", envvar="LAGNH_THREADS")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from lagnh_pyg.runtime import set_thread_budget

    from .common import setup_logging

    setup_logging(verbose)
    set_thread_budget(threads)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
