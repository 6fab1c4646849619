"""``yolo-seg``: YOLO segmentation labels, one polygon a line (layout: :mod:`apis.data.formats.yolo`).

A line ``class x1 y1 x2 y2 ...`` is ONE object: its coordinates, fractions of the shown image's width W and
height H, become pixels (x·W, y·H) rasterised with COCO's polygon convention
(:mod:`apis.data.formats.polygons`), so a line that joins several parts with connecting segments (Ultralytics'
merge of a multi-part object) fills every part whole.
"""

from __future__ import annotations

from pathlib import Path

from apis.data.formats import yolo
from apis.data.formats.polygons import object_from_rle, polygons_rle
from apis.data.sources import Format, ImageFrame, Problems, ReadOptions, SourceImage, SourceObject


def detect(src: Path) -> bool:
    return yolo.kind(src) == "seg"


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], Problems]:
    """The objects of one image's label file (none for a background image), in line order."""
    return yolo.read_labels(item, frame, options, _polygon)


def _polygon(values: list[str], classes: yolo.YoloClasses, where: str,
             shown: tuple[int, int]) -> tuple[SourceObject | None, str | None]:
    """One ``class x1 y1 x2 y2 ...`` line → its rasterised object, or the problem (``where`` is ``file:line``)."""
    if len(values) == 5:
        return None, (f"{where}: 4 coordinates, a box (class cx cy w h) in a segmentation dataset. Fix: draw its "
                      "polygon, or import the dataset as yolo-det (boxes only)")
    name, coords, problem = yolo.parse_line(values, classes, where)
    if problem is None and (len(coords) % 2 or len(coords) < 6):
        problem = (f"{where}: {len(coords)} coordinates; a polygon needs x y pairs, at least 3 of them. Fix: "
                   "correct the line or remove it")
    if problem is not None:
        return None, problem
    width, height = shown
    xs, ys = coords[0::2], coords[1::2]
    pixels = [v for x, y in zip(xs, ys, strict=True) for v in (x * width, y * height)]
    obj = object_from_rle(polygons_rle([pixels], height, width), name, where)
    if obj is None:
        return None, (f"{where}: the polygon covers no pixel of the {width}x{height} image. Fix: redraw it larger, or "
                      "remove the line")
    return obj, None


FORMAT = Format(
    name="yolo-seg", detect=detect, scan=yolo.scan, read=read,
    help="YOLO segmentation (Ultralytics, CVAT, Roboflow, Label Studio): data.yaml + images/ + labels/*.txt, "
         "'class x1 y1 x2 y2 ...' a line, normalised",
)
