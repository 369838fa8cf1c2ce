"""``lagnh serve``: a JSON API and a search page over a run's index (FastAPI).

A layer on top of :mod:`lagnh_pyg.collection` (index + encoding + the added-items store);
nothing in the library imports it. Install with ``pip install 'lagnh-pyg[serve]'``.
"""

from .app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
