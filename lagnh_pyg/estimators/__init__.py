"""The public Python API: every method as a scikit-learn estimator (``from lagnh_pyg import ...``).

* :class:`~lagnh_pyg.estimators.lagnh.LAGNH` — the method of this package;
* the shallow baselines ``LSH``, ``SKLSH``, ``SH``, ``PCAH``, ``ITQ``, ``SGH`` and the deep ones
  ``UHBDNN``, ``DeepBit``, ``SSDH``, ``SADH``, ``TBH``, ``CIBHash``, ``BiHalf``
  (:mod:`lagnh_pyg.estimators.baselines`).

What they share (:mod:`lagnh_pyg.estimators.base`): ``fit(X, aux=None)`` returns the estimator,
``transform`` gives ±1 codes, ``encode`` packed uint8 codes, ``get_params``/``set_params``, and
``save(path)``/``cls.load(path)`` in the run directory format of the command line.
"""

from .base import HashingEstimator, NotFittedError
from .baselines import (
    DEEP,
    ITQ,
    LSH,
    PCAH,
    SADH,
    SGH,
    SH,
    SHALLOW,
    SKLSH,
    SSDH,
    TBH,
    UHBDNN,
    BaselineEstimator,
    BiHalf,
    CIBHash,
    DeepBit,
)
from .lagnh import LAGNH

__all__ = ["BaselineEstimator", "BiHalf", "CIBHash", "DEEP", "DeepBit", "HashingEstimator", "ITQ", "LAGNH", "LSH",
           "NotFittedError", "PCAH", "SADH", "SGH", "SH", "SHALLOW", "SKLSH", "SSDH", "TBH", "UHBDNN"]
