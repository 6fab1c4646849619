"""Label and mask rasters of the raster formats (VOC/CVAT masks, Cellpose label images): reading them as
stored, bringing them to the shown frame of their image, and cutting a label array into objects.

Frames: a raster is H×W (rows × columns); pixel (col i, row j) covers [i, i+1) × [j, j+1). An image with an
EXIF orientation is shown turned (:mod:`apis.data.sources`); its masks may have been drawn on the pixels as
stored or on the image as shown, and :func:`shown_raster` decides which (``ReadOptions.exif``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from apis.data.sources import ImageFrame, ReadOptions, SourceObject


class RasterError(ValueError):
    """A raster file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Raster:
    """A raster file's pixels as stored. ``pixels``: H×W (palette indices, grey or integer labels) or H×W×C
    (colours; alpha dropped); ``palette``: 256×3 uint8 RGB for a palette image (``P`` mode), else None."""

    path: Path
    pixels: np.ndarray
    palette: np.ndarray | None = None

    def colours(self) -> np.ndarray:
        """H×W int64 packed colours ``r << 16 | g << 8 | b`` (a palette image through its palette; a grey one
        as grey r = g = b)."""
        p = self.pixels
        if self.palette is not None:
            p = self.palette[p]
        elif p.ndim == 2:
            p = np.repeat(p[..., None], 3, axis=2)
        p = p[..., :3].astype(np.int64)
        return (p[..., 0] << 16) | (p[..., 1] << 8) | p[..., 2]


def read_raster(path: Path) -> Raster:
    """Read a mask or label file without colour conversion. Raises :class:`RasterError` naming the file."""
    try:
        with Image.open(path) as im:
            palette = None
            if im.mode in ("P", "PA"):
                raw = im.getpalette() or []
                palette = np.zeros((256, 3), np.uint8)
                table = np.asarray(raw[: 256 * 3], np.uint8).reshape(-1, 3)
                palette[: len(table)] = table
                im = im.convert("P") if im.mode == "PA" else im
            elif im.mode in ("RGBA", "LA"):
                im = im.convert(im.mode[:-1])
            pixels = np.asarray(im).copy()
    except FileNotFoundError:
        raise RasterError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise RasterError(f"{path}: cannot read it as an image ({e})") from None
    return Raster(Path(path), pixels, palette)


def pack(rgb: tuple[int, int, int]) -> int:
    r, g, b = rgb
    return (int(r) << 16) | (int(g) << 8) | int(b)


def unpack(colour: int) -> tuple[int, int, int]:
    return ((colour >> 16) & 255, (colour >> 8) & 255, colour & 255)


def shown_raster(array: np.ndarray, frame: ImageFrame, options: ReadOptions, path: Path) -> tuple[np.ndarray | None,
                                                                                                   str | None]:
    """``array`` (H×W[×C], drawn for the image of ``frame``) in the shown frame, or a problem naming ``path``.

    Without an EXIF orientation the raster must have the image's size. With one, ``options.exif`` says where
    it was drawn: ``stored`` (turned like the image), ``shown`` (kept), or ``auto``: by its size, refused when
    both frames have that size (a square image, or a flip that keeps the size) because then only the user
    knows."""
    h, w = array.shape[:2]
    size = (w, h)
    sw, sh = frame.stored
    if not frame.oriented:
        if size != frame.stored:
            return None, (f"{path}: is {w}x{h}, its image {frame.path} is {sw}x{sh}. Fix: pair the right files, or "
                          "save the mask at the image's size")
        return array, None
    shown = frame.shown
    mode = options.exif
    if mode == "auto":
        fits_stored, fits_shown = size == frame.stored, size == shown
        if fits_stored and fits_shown:
            return None, (f"{path}: its image {frame.path} has EXIF orientation {frame.orientation} and the mask fits "
                          "both the stored and the shown frame. Fix: pass --exif stored (drawn on the pixels as "
                          "stored) or --exif shown (drawn on the image as viewers show it)")
        mode = "stored" if fits_stored else "shown" if fits_shown else "none"
    if mode == "stored" and size == frame.stored:
        return frame.orient(array), None
    if mode == "shown" and size == shown:
        return array, None
    return None, (f"{path}: is {w}x{h}, its image {frame.path} is {sw}x{sh} as stored and {shown[0]}x{shown[1]} as "
                  f"shown (EXIF orientation {frame.orientation}){'' if mode == 'none' else f', --exif {mode}'}. "
                  "Fix: pair the right files, or pass the --exif that matches where the mask was drawn")


def label_objects(labels: np.ndarray, category: Callable[[int], str], source: str,
                  names: Mapping[int, str] | None = None) -> list[SourceObject]:
    """One object per nonzero value of the H×W integer array ``labels`` (0: background), in increasing value
    order, each with ``category(value)``. Pixels are grouped by one sort rather than one full comparison per
    value, so an image of many objects costs one pass plus one encode per object."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    values, starts = np.unique(flat[order], return_index=True)
    ends = np.append(starts[1:], flat.size)
    out = []
    for value, start, end in zip(values.tolist(), starts.tolist(), ends.tolist(), strict=True):
        if value == 0:
            continue
        mask = np.zeros(flat.size, bool)
        mask[order[start:end]] = True
        where = source if names is None else f"{source} {names[value]}"
        out.append(SourceObject.from_mask(mask.reshape(labels.shape), category(value), where))
    return out
