"""lagnh-pyg: unsupervised hashing for scalable image retrieval (LAGNH on PyTorch Geometric).

Importing the library changes no process-wide state (environment, warnings filters, thread
counts); the ``lagnh`` command line sets what it needs (cli/main.py).
"""

__version__ = "0.1.0"
