"""The version of lagnh-pyg: written here only (pyproject.toml reads it, ``lagnh_pyg.__version__``
re-exports it, reports record it)."""

__version__ = "0.1.0"
