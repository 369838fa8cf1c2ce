"""From images to dataset columns: deep features (:mod:`.features`, backbones in
:mod:`.backbones`) and auxiliary semantics (:mod:`.objects`: detections or tags)."""
