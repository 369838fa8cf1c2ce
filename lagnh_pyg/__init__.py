"""lagnh-pyg: unsupervised hashing for scalable image retrieval (LAGNH on PyTorch Geometric).

The public Python API, in scikit-learn's conventions (:mod:`lagnh_pyg.estimators`)::

    from lagnh_pyg import LAGNH, ITQ, HammingIndex

    model = ITQ(bits=32).fit(X_train)          # X: (n, d) features; LAGNH also takes aux=
    codes = model.encode(X_database)           # packed uint8, (n, bits / 8)
    index = HammingIndex(32)
    index.add(codes, ids)
    result = index.search(model.encode(X_query), k=10)

The estimators (``LAGNH`` and every baseline: ``LSH``, ``SKLSH``, ``SH``, ``PCAH``, ``ITQ``,
``SGH``, ``UHBDNN``, ``DeepBit``, ``SSDH``, ``SADH``, ``TBH``, ``CIBHash``, ``BiHalf``) and
``HammingIndex`` are imported on first use, so that ``import lagnh_pyg`` (and every ``lagnh``
command) stays cheap. Importing the library changes no process-wide state (environment,
warnings filters, thread counts); the ``lagnh`` command line sets what it needs
(lagnh_pyg/cli/main.py).
"""

from pathlib import Path as _Path

from .version import __version__

# A source checkout keeps the command line's sources in cli/ beside this package (the layout the
# project was specified with); the wheel installs them as lagnh_pyg/cli (pyproject.toml,
# package-dir). In a checkout, lagnh_pyg.cli is that folder: the package also looks for
# subpackages in the checkout's root, so that the checkout's own cli/ is the one imported, with
# the checkout on PYTHONPATH as with `pip install -e`.
_here = _Path(__file__).resolve().parent
if not (_here / "cli").is_dir() and (_here.parent / "cli" / "main.py").is_file() \
        and (_here.parent / "pyproject.toml").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (a package's __path__)

_ESTIMATORS = ("LAGNH", "LSH", "SKLSH", "SH", "PCAH", "ITQ", "SGH", "UHBDNN", "DeepBit", "SSDH", "SADH", "TBH",
               "CIBHash", "BiHalf")
__all__ = [*_ESTIMATORS, "HammingIndex", "SearchResult", "__version__"]


def __getattr__(name: str):
    """The public API, imported on first use (PEP 562)."""
    if name in _ESTIMATORS:
        from . import estimators

        return getattr(estimators, name)
    if name in ("HammingIndex", "SearchResult"):
        from . import index

        return getattr(index, name)
    raise AttributeError(f"module 'lagnh_pyg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
