"""The estimators checked by a suite nobody here wrote: scikit-learn's ``check_estimator``
(through ``parametrize_with_checks``), every check it runs on an unsupervised transformer.

The checks' data are small (10 to 100 samples of 1 to 10 features), so the instances are sized
to them: PCAH and ITQ take one principal direction per bit, hence ``bits=2`` (in memory a code
may have any length; a run directory needs a multiple of 8), and SGH draws ``anchors`` from the
training items, hence 5 of them. No check is declared an expected failure.

LAGNH learns from a side input (``aux``) that scikit-learn's checks never pass, so it is
checked twice, on tiny settings (2 epochs of a 16-unit model): as ``variant="no-aux"``, which
needs no aux, and through ``LAGNHAuxOfX``, whose aux is a fixed function of each row of X (a
sigmoid: in [0, 1], one row per item), so that the attention, the aux kNN graph and the fused
weights run under every check. Skipped by scikit-learn itself: ``check_array_api_input``
(SCIPY_ARRAY_API unset; the estimators take numpy input, not the array API). scikit-learn warns
that they do not inherit its ``BaseEstimator``: by design, scikit-learn is not a dependency of
the library (``__sklearn_tags__`` imports it only when scikit-learn itself asks).
"""

import numpy as np
import scipy.sparse as sp
from sklearn.utils.estimator_checks import parametrize_with_checks

from lagnh_pyg import ITQ, LAGNH, LSH, PCAH, SGH, SH, SKLSH

TINY = dict(bits=8, graph__k=3, model__hidden=16, model__att_dim=8, model__anchors=8, train__epochs=2,
            train__g_steps=1, train__checkpoint_every=0, device="cpu")


class LAGNHAuxOfX(LAGNH):
    """LAGNH whose aux, when not given, is the sigmoid of each row of X."""

    def fit(self, X, y=None, *, aux=None):
        return super().fit(X, aux=_aux_of(X) if aux is None else aux)

    def transform(self, X, *, aux=None):
        return super().transform(X, aux=_aux_of(X) if aux is None else aux)


def _aux_of(X):
    if sp.issparse(X) or isinstance(X, str):
        return None  # refused by fit/transform for what it is
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind == "c":
        return None
    return 1 / (1 + np.exp(-X.astype(np.float64)))


@parametrize_with_checks([LSH(), SKLSH(), SH(), PCAH(bits=2), ITQ(bits=2), SGH(anchors=5)])
def test_shallow_hashers_pass_check_estimator(estimator, check):
    check(estimator)


@parametrize_with_checks([LAGNH(variant="no-aux", **TINY), LAGNHAuxOfX(**TINY)])
def test_lagnh_passes_check_estimator(estimator, check):
    check(estimator)
