"""The paper's tables and figures on any dataset directory.

============  =========================================  ===========================
experiment    what                                       entry point
============  =========================================  ===========================
accuracy      Table 3: MAP@K per method and code length  :func:`run_accuracy`
timing        Table 4: training and encoding seconds     :func:`run_timing`
ablation      Table 5: LAGNH variants                    :func:`run_ablation`
epochs        Fig. 3: MAP versus training epochs         :func:`run_epochs`
sensitivity   Fig. 4: MAP versus alpha, beta, lambda, eta :func:`run_sensitivity`
============  =========================================  ===========================

Each takes an :class:`ExperimentSpec` (dataset, report directory, protocol, K, seeds, LAGNH
config) and writes ``<name>.md``, ``<name>.csv``, ``<name>.json`` and its figures into the
report directory, with the dataset, split sizes, protocol, seeds, software versions and
machine recorded. Runs are kept under ``REPORT_DIR/runs``.
"""

from .ablation import TABLE5_VARIANTS, run_ablation
from .accuracy import run_accuracy
from .common import Cell, ExperimentSpec, known_methods, run_cell
from .epochs import run_epochs
from .sensitivity import DEFAULT_GRID, PARAMETERS, run_sensitivity
from .timing import run_timing

__all__ = [
           "DEFAULT_GRID",
           "PARAMETERS",
           "TABLE5_VARIANTS",
           "Cell",
           "ExperimentSpec",
           "known_methods",
           "run_ablation",
           "run_accuracy",
           "run_cell",
           "run_epochs",
           "run_sensitivity",
           "run_timing",
]
