"""Every dataset format ``apis data import`` reads, in the order detection tries them.

A format is a module exposing ``FORMAT`` (:class:`apis.data.sources.Format`). To add one, import its
module here and put its ``FORMAT`` in :data:`FORMATS`' list, before any format whose ``detect`` would also
claim its folders. ``--layout NAME`` picks one by name and skips detection.
"""

from __future__ import annotations

from pathlib import Path

from apis.data.formats import cellpose, coco_json, labelme, voc_seg, yolo_det, yolo_seg
from apis.data.formats.files import image_files
from apis.data.importing import label_images, mask_folders, side_by_side
from apis.data.importing.errors import refused
from apis.data.sources import Format

FORMATS: dict[str, Format] = {f.name: f for f in (
    mask_folders.FORMAT,
    # The labelling tools' exports (apis.data.formats): before label-images, which would also claim YOLO's
    # images/ + labels/ and VOC's JPEGImages/ + SegmentationObject/ (as objects without classes).
    coco_json.FORMAT,
    labelme.FORMAT,
    voc_seg.FORMAT,
    cellpose.FORMAT,
    yolo_seg.FORMAT,
    yolo_det.FORMAT,
    label_images.FORMAT,
    side_by_side.FORMAT,
)}


def _claims(fmt: Format, src: Path) -> bool:
    try:
        return bool(fmt.detect(src))
    except (OSError, ValueError):
        return False  # an unreadable corner of the folder is not this format's; the chosen one reports it


def pick_format(src: Path, name: str | None) -> Format:
    """``--layout NAME``'s format, or the first of :data:`FORMATS` whose ``detect`` claims ``src``. Refuses
    an unknown name, and a folder no format claims (pointing a folder of bare images to ``apis init``)."""
    if name is not None:
        if name not in FORMATS:
            raise refused(f"--layout {name!r}: unknown. Fix: choose one of {', '.join(FORMATS)}")
        return FORMATS[name]
    for fmt in FORMATS.values():
        if _claims(fmt, src):
            return fmt
    listed = "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values())
    if image_files(src) or any(image_files(d) for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")):
        raise refused(f"{src}: holds images but no annotations that a known layout reads ({listed}). Fix: to draw "
                      f"the boxes yourself, start a project on the images with `apis init PROJECT --images {src}` "
                      "and open it in `apis serve`; or pass --layout and the options of your annotations' format")
    raise refused(f"{src}: no known layout ({listed}). Fix: pass --layout and its options (--images/--labels, "
                  "--image-pattern/--label-pattern)")
