"""apis: active pointly-supervised instance segmentation."""

__version__ = "0.1.0"
