"""The ``mask-folders`` layout: one folder per image holding ``images/NAME.png`` and ``masks/*.png``, one
binary image per object (the 2018 Data Science Bowl's ``stage1_train/ID/images/ID.png`` + ``masks/``).

Each mask is read as :mod:`~apis.data.importing.mask_values` says (grey value at or above the threshold;
alpha only where the grey is constant), brought to the image's shown frame (:mod:`.frames`) and encoded at
once. Two masks of one image sharing a pixel are a problem (an object cannot be two); the image's category
comes from ``--category`` or the ``--categories`` glob matching each mask's path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apis.data.formats.files import image_files
from apis.data.importing.encode import object_from_mask
from apis.data.importing.files import MAX_PIXELS, FileProblem, read_pixels
from apis.data.importing.frames import to_shown
from apis.data.importing.mask_values import binary_mask
from apis.data.importing.options import category_of
from apis.data.sources import Format, ImageFrame, ReadOptions, SourceImage, SourceObject


def detect(src: Path) -> bool:
    return any((sub / "images").is_dir() and (sub / "masks").is_dir() for sub in Path(src).iterdir() if sub.is_dir())


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], list[str]]:
    """One :class:`SourceImage` per subfolder of ``src`` (sorted) that holds ``images/``, and the problems: a
    folder with no image or several, or with images and no ``masks/``."""
    images, problems = [], []
    for sub in sorted(p for p in Path(src).iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (sub / "images").is_dir() and not (sub / "masks").is_dir():
            continue  # not an image's folder (notes, a README's figures)
        found = image_files(sub / "images") if (sub / "images").is_dir() else []
        masks = tuple(image_files(sub / "masks")) if (sub / "masks").is_dir() else ()
        if len(found) != 1:
            what = "no image file" if not found else f"{len(found)} image files ({', '.join(f.name for f in found)})"
            problems.append(f"{sub / 'images'}: {what} (one expected). Fix: put the image of this folder's masks "
                            "there, alone, or remove the folder")
            continue
        if not masks:
            problems.append(f"{sub}: no mask files in {sub / 'masks'}. Fix: add its masks (one binary image per "
                            "object), or remove the folder")
            continue
        images.append(SourceImage(sub.name, found[0], masks=masks))
    return images, problems


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], list[str]]:
    """The objects of one image folder, one per mask file, in the shown frame (module doc)."""
    width, height = frame.shown
    # Which object holds each pixel (0: none yet), to find two masks on one pixel: one image's worth.
    owner = np.zeros((height, width), dtype=np.uint16 if len(item.masks) < 65535 else np.uint32)
    objects: list[SourceObject] = []
    problems: list[str] = []
    limit = getattr(options, "max_pixels", MAX_PIXELS)
    for path in item.masks:
        try:
            pixels, mode, palette = read_pixels(path, limit)
            shown = to_shown(pixels, frame, options.exif, path)  # the size is checked before the values
            mask = binary_mask(shown, mode, palette, options.mask_threshold, path)
        except FileProblem as e:
            problems.append(str(e))
            continue
        shared = owner[mask]
        shared = shared[shared > 0]
        if shared.size:
            other = Path(objects[int(np.bincount(shared).argmax()) - 1].source).name
            problems.append(f"{path}: shares {shared.size} pixels with {other} (two objects on one pixel). "
                            "Fix: remove the pixels from one of the masks")
            continue
        category = category_of(path, options)
        if category is None:
            problems.append(f"{path}: matches no glob of --categories. Fix: add a glob for it there")
            continue
        owner[mask] = len(objects) + 1
        objects.append(object_from_mask(mask, category, str(path)))
    return objects, problems


FORMAT = Format("mask-folders", detect, scan, read,
                help="SRC/ID/images/ID.png + SRC/ID/masks/*.png, one binary image per object (DSB 2018)")
