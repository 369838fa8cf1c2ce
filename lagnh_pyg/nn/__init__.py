"""LAGNH's modules: cross-modal attention, GCN generator, discriminator, the model."""

from .attention import CrossModalAttention
from .discriminator import Discriminator
from .generator import GCNGenerator
from .lagnh import LAGNH

__all__ = ["LAGNH", "CrossModalAttention", "Discriminator", "GCNGenerator"]
