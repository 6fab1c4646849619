"""Readers of the formats labelling tools export, one module per format, each exposing ``FORMAT`` (a
:class:`apis.data.sources.Format`): ``coco`` (:mod:`.coco_json`), ``labelme``, ``voc-seg``, ``cellpose``,
``yolo-seg`` and ``yolo-det`` (layout shared in :mod:`.yolo`). Shared pieces: :mod:`.files` (finding and
pairing files), :mod:`.polygons` (COCO's polygon convention), :mod:`.rasters` (label rasters and their
frames), :mod:`.npy` (Cellpose's pickled arrays without running pickled code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from apis.data.formats import cellpose, coco_json, labelme, voc_seg, yolo_det, yolo_seg
from apis.data.sources import Format, SourceImage

#: In the order an importer tries their ``detect``: each looks for files the others do not have (a COCO
#: json's "images" and "annotations", LabelMe's "shapes", SegmentationObject/, X_seg.npy or X_masks.png beside
#: X, a YOLO class file with label lines of more or of exactly 5 values), so the order only matters against
#: looser layouts tried after them (``label-images`` takes any image folder beside a "labels" folder).
FORMATS: tuple[Format, ...] = (coco_json.FORMAT, labelme.FORMAT, voc_seg.FORMAT, cellpose.FORMAT, yolo_seg.FORMAT,
                               yolo_det.FORMAT)

#: Lines worth saying about a scanned source that are not problems (YOLO's background images, LabelMe shapes
#: that mark no region), by format name.
NOTES: dict[str, Callable[[Sequence[SourceImage]], list[str]]] = {
    yolo_seg.FORMAT.name: yolo_seg.notes, yolo_det.FORMAT.name: yolo_det.notes, labelme.FORMAT.name: labelme.notes}
