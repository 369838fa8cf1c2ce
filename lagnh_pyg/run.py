"""Deprecated name of :mod:`lagnh_pyg.rundir` (the run directory), kept so that existing
imports (``from lagnh_pyg.run import Run``) keep working."""

from .rundir import (  # noqa: F401
    METHODS,
    RUN_FORMAT,
    RUN_VERSION,
    Encoder,
    Run,
    encode_splits,
    load_encoder,
    register_method,
    write_run_meta,
)
