"""Bringing a mask or label raster into its image's shown frame (EXIF orientation applied), or refusing.

A raster (H×W array as its file stores it) belongs to an image whose file may carry an EXIF orientation.
``--exif`` (:attr:`ReadOptions.exif`) says where it was drawn:

* ``stored``: on the stored pixels → oriented like the image (:meth:`ImageFrame.orient`);
* ``shown``: on the image as a viewer shows it → kept as is;
* ``auto`` (default): decided by its size. The stored size where that differs from the shown size (a
  rotation by 90° of a non-square image) → stored; the shown size where that differs from the stored one →
  shown; where both sizes are equal (orientations 2, 3 and 4, or a square image) the two readings give
  different masks of the same size, so the image is refused with the fix ``--exif stored`` or ``--exif shown``.

Without an orientation the raster must simply have the image's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apis.data.importing.files import FileProblem
from apis.data.sources import ImageFrame

EXIF_CHOICES = ("auto", "stored", "shown")


def to_shown(raster: np.ndarray, frame: ImageFrame, exif: str, path: Path) -> np.ndarray:
    """``raster`` (H×W…, as stored in ``path``) in the shown frame of ``frame``'s image: a view where numpy
    can. Raises :class:`FileProblem` for a raster of another size, or an ambiguous orientation under ``auto``."""
    size = (raster.shape[1], raster.shape[0])
    stored, shown = frame.stored, frame.shown
    if not frame.oriented:
        if size != shown:
            raise FileProblem(f"{path}: is {size[0]}x{size[1]}, its image {frame.path.name} is {shown[0]}x{shown[1]}. "
                              "Fix: pair the right files, or save it at the image's size (nearest neighbour)")
        return raster
    where = exif
    if exif == "auto":
        if stored == shown:
            if size == shown:
                raise FileProblem(
                    f"{path}: its image {frame.path.name} has EXIF orientation {frame.orientation} and the same size "
                    "stored and shown, so whether this was drawn on the stored pixels or on the image as shown cannot "
                    "be told. Fix: pass --exif stored or --exif shown (open the image in the tool that drew it)")
        elif size == stored:
            where = "stored"
        elif size == shown:
            where = "shown"
    expected = stored if where in ("stored", "auto") else shown
    if size != expected:
        raise FileProblem(f"{path}: is {size[0]}x{size[1]}, its image {frame.path.name} is {stored[0]}x{stored[1]} "
                          f"stored, {shown[0]}x{shown[1]} shown (EXIF orientation {frame.orientation}, --exif {exif}). "
                          "Fix: pair the right files, or pass the --exif that matches how it was drawn")
    return frame.orient(raster) if where == "stored" else raster
