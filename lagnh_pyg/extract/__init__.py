"""From images to dataset columns: deep features (:mod:`.features`, backbones in
:mod:`.backbones`) and auxiliary semantics (:mod:`.objects`: detections or tags)."""

from .recipe import featurize_like

__all__ = ["featurize_like"]
