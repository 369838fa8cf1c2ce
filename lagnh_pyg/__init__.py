"""lagnh-pyg: unsupervised hashing for scalable image retrieval (LAGNH on PyTorch Geometric)."""

import os as _os

# OpenMP threads that spin while waiting waste the CPU whenever the machine is shared:
# measured here, EfficientNet feature extraction ran 6x slower without this. Must be set
# before torch loads its OpenMP runtime; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
