"""Label rasters of the raster formats (VOC/CVAT masks, Cellpose label images): read as stored with the
importer's pixel limit, seen as object values or as colours, and cut into objects.

Frames: a raster is H×W (rows × columns); pixel (col i, row j) covers [i, i+1) × [j, j+1). Bringing it to its
image's shown frame is :func:`apis.data.importing.frames.to_shown`'s job (``ReadOptions.exif``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apis.data.importing.encode import column_major, object_from_columns
from apis.data.importing.files import MAX_PIXELS, read_pixels
from apis.data.importing.label_values import label_values, value_counts
from apis.data.sources import ReadOptions, SourceObject


@dataclass(frozen=True)
class Raster:
    """A raster file's pixels as stored (H×W or H×W×C), PIL's mode, and a palette image's colours (256×3
    uint8, else None)."""

    path: Path
    pixels: np.ndarray
    mode: str
    palette: np.ndarray | None = None

    def values(self) -> tuple[np.ndarray, str]:
        """(H×W integer values, kind) as label images are read: palette indices, grey or integer values, or
        each RGB colour packed as R·65536 + G·256 + B (kind ``colour``); see
        :func:`apis.data.importing.label_values.label_values`. Raises FileProblem."""
        return label_values(self.pixels, self.mode, self.path)

    def colours(self) -> np.ndarray:
        """H×W int64 packed colours ``r << 16 | g << 8 | b``, a palette image through its palette."""
        p = self.pixels
        if self.palette is not None:
            p = self.palette[p]
        elif p.ndim == 2:
            p = np.repeat(p[..., None], 3, axis=2)
        p = p[..., :3].astype(np.int64)
        return (p[..., 0] << 16) | (p[..., 1] << 8) | p[..., 2]


def read_raster(path: Path, options: ReadOptions) -> Raster:
    """Read a mask or label file without colour conversion, under the importer's pixel limit
    (``options.max_pixels``). Raises FileProblem naming the file and the fix."""
    pixels, mode, palette = read_pixels(path, getattr(options, "max_pixels", MAX_PIXELS), labels=True)
    table = None
    if palette is not None:
        table = np.zeros((256, 3), np.uint8)
        table[: len(palette)] = np.asarray(palette[:256], np.uint8).reshape(-1, 3)
    return Raster(Path(path), pixels, mode, table)


def pack(rgb: tuple[int, int, int]) -> int:
    r, g, b = rgb
    return (int(r) << 16) | (int(g) << 8) | int(b)


def unpack(colour: int) -> tuple[int, int, int]:
    return ((colour >> 16) & 255, (colour >> 8) & 255, colour & 255)


def label_objects(values: np.ndarray, category: Callable[[int], str], source: str,
                  skip: Collection[int] = ()) -> list[SourceObject]:
    """One object per value of the H×W integer array ``values`` (shown frame) other than 0 (background) and
    ``skip`` (void), in increasing value order, each with ``category(value)`` and source ``source#value``.
    Transposed once into pycocotools' layout, so each object costs one comparison and one encode."""
    columns = column_major(values)
    found, _ = value_counts(columns)
    out = []
    for value in (int(v) for v in found):
        if value == 0 or value in skip:
            continue
        out.append(object_from_columns(columns == value, category(value), f"{source}#{value}"))
    return out
