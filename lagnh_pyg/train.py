"""The entry point ``lagnh train`` calls; the training itself lives in :mod:`lagnh_pyg.training`.

Example::

    from lagnh_pyg.train import train_run
    run_dir = train_run("data/syn", "configs/demo.yaml", bits=32, out_dir="runs/demo32")
"""

from .rundir import load_checkpoint  # noqa: F401  (read a run's checkpoint.pt)
from .training import Trainer, train_run  # noqa: F401
