"""The `lagnh` command line: thin wrappers that parse, call the library and print."""

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

from . import data as data_cli
from . import experiment as experiment_cli
from . import retrieval as retrieval_cli
from .baseline import baseline
from .collection import add, dedup
from .demo import demo
from .encode import encode
from .extract import app as extract_app
from .extract import data_demo
from .index_folder import index_folder
from .serve import serve
from .train import train
from .views import add_views

app = typer.Typer(
    name="lagnh",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Unsupervised hashing for scalable image retrieval (LAGNH on PyTorch Geometric).",
)
app.add_typer(data_cli.app, name="data")
data_cli.app.command("demo")(data_demo)
data_cli.app.command("add-views")(add_views)
app.add_typer(extract_app, name="extract")
app.command()(train)
app.command()(baseline)
app.command()(encode)
app.command()(retrieval_cli.evaluate)
app.command(name="index")(retrieval_cli.index)
app.command()(retrieval_cli.search)
app.add_typer(experiment_cli.app, name="experiment")
app.command()(demo)
app.command()(serve)
app.command()(add)
app.command()(dedup)
app.command(name="index-folder")(index_folder)


@app.callback()
def _root(
    threads: Annotated[int | None, typer.Option(help="Threads for torch and FAISS (default: all cores).", envvar="LAGNH_THREADS")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from lagnh_pyg.runtime import set_threads

    from .common import setup_logging

    setup_logging(verbose)
    set_threads(threads)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
