"""The demo's "object detector" (the ``detector`` aux variant, the MS COCO analogue): a small
MLP tile classifier trained on a pool of Fashion-MNIST items that appear in no mosaic, applied
to every non-empty quadrant of a mosaic; a class is present when its score reaches the
threshold in some quadrant.
"""

from __future__ import annotations

import numpy as np

from .fashion_mnist import CLASSES, TILE


# -- the "detector" ----------------------------------------------------------------------------
class TileDetector:
    """A small MLP (784 -> 256 -> 10) over a tile's pixels: the demo's independent object detector.

    Trained on the detector pool only (items that appear in no mosaic), like a Faster R-CNN
    trained on other data; applied to each non-empty quadrant of a mosaic.
    """

    def __init__(self, seed: int = 0, hidden: int = 256) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.net = torch.nn.Sequential(torch.nn.Linear(TILE * TILE, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, len(CLASSES)))
        for mod in self.net:
            if isinstance(mod, torch.nn.Linear):
                torch.nn.init.kaiming_uniform_(mod.weight, a=5 ** 0.5, generator=g)
                torch.nn.init.zeros_(mod.bias)

    @staticmethod
    def _x(tiles: np.ndarray):
        import torch

        return torch.from_numpy(tiles.reshape(len(tiles), -1).astype(np.float32) / 255.0)

    def fit(self, tiles: np.ndarray, labels: np.ndarray, epochs: int = 10, batch: int = 128) -> TileDetector:
        import torch

        x, y = self._x(tiles), torch.from_numpy(labels.astype(np.int64))
        opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(self.net(x[idx]), y[idx]).backward()
                opt.step()
        self.net.eval()
        return self

    def scores(self, tiles: np.ndarray) -> np.ndarray:
        """Softmax class scores ``(n, 10)`` of ``(n, 28, 28)`` tiles."""
        import torch

        with torch.inference_mode():
            return torch.softmax(self.net(self._x(tiles)), 1).numpy()

    def detect(self, mosaics: np.ndarray) -> np.ndarray:
        """Per class, the highest score over a mosaic's non-empty quadrants: ``(n, 10)``."""
        best = np.zeros((len(mosaics), len(CLASSES)), dtype=np.float32)
        for q in range(4):
            r, c = divmod(q, 2)
            quad = mosaics[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]
            present = quad.reshape(len(quad), -1).max(1) > 0  # the "region proposal": something is there
            if present.any():
                best[present] = np.maximum(best[present], self.scores(quad[present]))
        return best
