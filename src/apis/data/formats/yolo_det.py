"""``yolo-det``: YOLO detection labels, one box a line, boxes only (layout: :mod:`apis.data.formats.yolo`).

A line ``class cx cy w h`` (fractions of the shown image's width W and height H) is the box
[(cx - w/2)·W, (cy - h/2)·H, w·W, h·H] over pixel edges, clipped to the image.
"""

from __future__ import annotations

from pathlib import Path

from apis.data.formats import yolo
from apis.data.sources import Format, ImageFrame, Problems, ReadOptions, SourceImage, SourceObject


def detect(src: Path) -> bool:
    return yolo.kind(src) == "det"


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], Problems]:
    """The box-only objects of one image's label file (none for a background image), in line order."""
    return yolo.read_labels(item, frame, options, _box)


def _box(values: list[str], classes: yolo.YoloClasses, where: str,
         shown: tuple[int, int]) -> tuple[SourceObject | None, str | None]:
    """One ``class cx cy w h`` line → its box object, or the problem (``where`` is ``file:line``)."""
    if len(values) != 5:
        return None, (f"{where}: {len(values)} values; a detection line is 'class cx cy w h'. Fix: correct the line, "
                      "or import a dataset of polygons as yolo-seg")
    name, coords, problem = yolo.parse_line(values, classes, where)
    if problem is not None:
        return None, problem
    width, height = shown
    cx, cy, w, h = coords
    edges = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    tol = yolo.COORD_TOLERANCE
    if min(edges) < -tol or max(edges) > 1 + tol:
        return None, (f"{where}: the box runs outside the image (edges {', '.join(f'{e:.4g}' for e in edges)} "
                      "as fractions of it). Fix: clip the box to the image, or check cx cy w h")
    x0, y0 = max(edges[0], 0.0) * width, max(edges[1], 0.0) * height
    x1, y1 = min(edges[2], 1.0) * width, min(edges[3], 1.0) * height
    if not (x1 > x0 and y1 > y0):
        return None, f"{where}: the box has no area (w {w:g}, h {h:g}). Fix: correct the line or remove it"
    return SourceObject.from_box((x0, y0, x1 - x0, y1 - y0), name, where), None


FORMAT = Format(
    name="yolo-det", detect=detect, scan=yolo.scan, read=read, boxes_only=True,
    help="YOLO detection, boxes only: data.yaml + images/ + labels/*.txt, 'class cx cy w h' a line, normalised",
)
