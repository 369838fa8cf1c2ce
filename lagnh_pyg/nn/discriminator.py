"""The discriminator of the adversarial regulariser (Eq. 10, ARGA-style)."""

from __future__ import annotations

from torch import Tensor, nn


class Discriminator(nn.Module):
    r"""MLP :math:`k \to 64 \to 32 \to 1` with ReLU; returns logits (real = drawn from the
    prior :math:`N(0, I)`, fake = the generator's :math:`Z`).

    Shapes: (n, k) -> (n,).
    """

    def __init__(self, bits: int, hidden: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(bits, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Linear(hidden[1], 1)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)
