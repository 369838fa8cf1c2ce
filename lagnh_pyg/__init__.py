"""lagnh-pyg: unsupervised hashing for scalable image retrieval (LAGNH on PyTorch Geometric)."""

__version__ = "0.1.0"
