"""One binary mask file (one object) → the pixels that are the object.

A mask is read from its **grey value**: a single-channel file as stored; RGB(A) as the max of its colour
channels (a pure red stroke is as much the object as a white one); a palette file as the max of each
index's colour. The alpha channel (LA, RGBA) counts only where the grey is one constant over the whole file:
a mask drawn in alpha alone. Otherwise alpha is ignored (a fully opaque or a fully transparent layer says
nothing about the object).

The object is every pixel whose value is **at or above the threshold** (``--mask-threshold``, default 128
on the 8-bit scale), so antialiased grey edges split at half way instead of all joining the object. The
threshold is scaled to the file's range, read from its largest value: ≤ 1 (a 0/1 mask, also 1-bit files)
→ the object is every pixel ≥ 1; ≤ 255 → the threshold as given; ≤ 65535 (16-bit) → ×257 (128 → 32896);
above → relative to the largest value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apis.data.importing.files import FileProblem


def grey_and_alpha(pixels: np.ndarray, mode: str, palette: list[tuple[int, int, int]] | None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """(grey H×W, alpha H×W or None) of a mask file's stored pixels (:func:`~apis.data.importing.files.read_pixels`)."""
    if mode == "P":
        lut = np.zeros(256, np.uint8)
        colours = palette or []
        lut[: len(colours)] = [max(c) for c in colours[:256]]
        return lut[pixels], None
    if pixels.ndim == 2:
        return pixels, None
    channels = pixels.shape[2]
    if channels == 2:
        return pixels[..., 0], pixels[..., 1]
    grey = pixels[..., :3].max(axis=2)
    return grey, (pixels[..., 3] if channels == 4 else None)


def mask_level(peak: float, threshold: int) -> float:
    """The value at or above which a pixel is the object, for a file whose largest value is ``peak``
    (module doc: the 8-bit ``threshold`` scaled to the file's range)."""
    if peak <= 1:
        scale = 1.0
    elif peak <= 255:
        scale = 255.0
    elif peak <= 65535:
        scale = 65535.0
    else:
        scale = float(peak)
    return threshold * scale / 255.0


def binary_mask(pixels: np.ndarray, mode: str, palette: list[tuple[int, int, int]] | None, threshold: int,
                path: Path) -> np.ndarray:
    """The H×W bool object of one mask file's stored pixels (same frame as stored). Raises
    :class:`FileProblem` when no pixel reaches the threshold (an empty mask)."""
    grey, alpha = grey_and_alpha(pixels, mode, palette)
    values = grey
    if alpha is not None and grey.min() == grey.max() and alpha.min() != alpha.max():
        values = alpha  # drawn in alpha alone: the grey says nothing
    peak = float(values.max())
    level = mask_level(peak, threshold)
    mask = values >= level
    if not mask.any():
        raise FileProblem(f"{path}: mask is empty (no pixel at or above {level:g}, the threshold {threshold} on this "
                          f"file's scale; its largest value is {peak:g}). Fix: delete the file, or pass a lower "
                          "--mask-threshold if its object is drawn faintly")
    return mask
