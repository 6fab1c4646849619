"""The output folder of ``apis data import``: checked before anything is read, built in a partial folder
beside it (:mod:`apis.data.partial`: a killed import's is removed by the next) and renamed into place, so it
appears whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from apis.data.importing.errors import refused
from apis.data.partial import PID_FILE
from apis.data.sources import ImageFrame, SourceImage, SourceObject


@dataclass(frozen=True)
class KeptImage:
    """One image that passed every check, with its objects in the shown frame."""

    item: SourceImage
    frame: ImageFrame
    objects: tuple[SourceObject, ...]


def check_out(src: Path, out: Path) -> None:
    """Refuse an OUT that is SRC, lies inside SRC, is a file, or is a non-empty folder: checked before any
    image is read."""
    s, o = Path(src).resolve(), Path(out).resolve()
    if o == s:
        raise refused(f"{out}: OUT is the source folder; choose another (a new or empty folder outside it)")
    if s in o.parents:
        raise refused(f"{out}: OUT is inside the source folder {src}, where the import would read its own output. "
                      "Fix: choose a folder outside it")
    if o.exists() and not o.is_dir():
        raise refused(f"{out}: exists and is not a folder. Fix: choose a new folder")
    if o.is_dir() and any(o.iterdir()):
        raise refused(f"{out}: exists and is not empty. Fix: choose a new folder, or empty this one")


def finish(tmp: Path, out: Path) -> None:
    """Move the finished partial folder into place (``out`` is absent or empty, checked up front)."""
    (tmp / PID_FILE).unlink()
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def write_split(folder: Path, keys: Sequence[str], kept: Mapping[str, KeptImage], names: Sequence[str],
                info: dict) -> tuple[int, int]:
    """``folder/annotations.json`` and ``folder/images/`` (files copied byte for byte, EXIF tag and all) for
    ``keys``; returns (images, annotations). Width and height are the shown size (what the loader reads);
    a box-only object is written with ``bbox`` and ``area`` and no ``segmentation``."""
    (folder / "images").mkdir(parents=True)
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for image_id, key in enumerate(keys, 1):
        k = kept[key]
        file_name = f"images/{key}{k.item.image.suffix.lower()}"
        shutil.copyfile(k.item.image, folder / file_name)
        width, height = k.frame.shown
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in k.objects:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_ids[obj.category],
                   "bbox": [_number(v) for v in obj.box], "area": _number(obj.area), "iscrowd": int(obj.iscrowd),
                   "apis_source_file": Path(obj.source).name}
            if obj.rle is not None:
                ann["segmentation"] = obj.rle
            annotations.append(ann)
    coco = {"info": info, "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]}
    with open(folder / "annotations.json", "w", encoding="utf-8") as f:
        json.dump(coco, f, allow_nan=False)
    return len(images), len(annotations)
