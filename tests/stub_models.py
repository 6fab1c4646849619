"""Stand-ins for a trained model where a test needs only the export's model interface
(``prediction_sets(images, targets)`` and the eval forward ``model(images)``)."""

from __future__ import annotations

import torch


class ConstantModel:
    """The export's model interface: every pixel of every Ω at probability ``p``, nothing detected."""

    def __init__(self, p: float):
        self.p = p

    def prediction_sets(self, images, targets):
        return [[torch.full((1, w.height, w.width), self.p) for w in t["windows"]] for t in targets]

    def __call__(self, images):
        raise AssertionError("every instance has a prediction set")
