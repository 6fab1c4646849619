"""The neutral records every dataset reader yields, and the pixel frames of an image file.

A *format* (``mask-folders``, ``label-images``, YOLO, CVAT/VOC, Cellpose, LabelMe, COCO, ...) is three plain
functions bundled in a :class:`Format`: ``detect`` (does this folder look like me), ``scan`` (which images,
and which annotation files belong to each) and ``read`` (the objects of one image). The importer
(:mod:`apis.data.importers`) owns everything around them: options, checks shared by all formats, the split,
the atomic write. A reader never writes and never reaches above ``data/``.

Frames: an image file stores its pixels in one orientation and may carry an EXIF orientation tag (1-8) that
viewers, PIL's ``exif_transpose`` and the training loader (:func:`apis.data.images.load_rgb`) apply. Every
mask and box a reader returns is in the **shown** frame (after the tag), the frame the loader sees; a raster
in the *stored* frame is brought there with :meth:`ImageFrame.orient`. Boxes are COCO ``[x, y, w, h]`` over
pixel edges in the shown frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from apis.data.images import ImageReadError

#: EXIF tag 0x0112: orientations whose shown image swaps width and height.
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


def orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
    """An H×W(×C) array in the stored frame → the shown frame of EXIF ``orientation`` (1-8), the same
    transform as ``PIL.ImageOps.exif_transpose``. Returns a view where numpy can; 1 (or unknown) → as is."""
    a = array
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1, :]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, k=-1)
    if orientation == 7:
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(a, k=1)
    return a


@dataclass(frozen=True)
class ImageFrame:
    """An image file's size as stored (``stored``: (width, height) of its pixel array) and its EXIF
    ``orientation`` (1 = none). ``shown``: (width, height) after the orientation, the frame of every
    imported mask and box."""

    path: Path
    stored: tuple[int, int]
    orientation: int = 1

    @property
    def shown(self) -> tuple[int, int]:
        w, h = self.stored
        return (h, w) if self.orientation in SWAPPING_ORIENTATIONS else (w, h)

    @property
    def oriented(self) -> bool:
        return self.orientation not in (0, 1)

    def orient(self, array: np.ndarray) -> np.ndarray:
        """A raster in the stored frame (H×W as stored) → the shown frame."""
        return orient_array(array, self.orientation)


def read_frame(path: Path) -> ImageFrame:
    """The :class:`ImageFrame` of an image file, decoding all of it (a truncated file fails here, not in
    training). Raises :class:`ImageReadError` naming the file."""
    try:
        with Image.open(path) as im:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            size = im.size
            frames = getattr(im, "n_frames", 1)
            im.load()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from None
    if frames > 1:  # the loader would train on the first page alone, its masks perhaps drawn on another
        raise ImageReadError(f"{path}: holds {frames} pages or frames; apis reads one 2-D image a file. Fix: save "
                             "one page per file")
    return ImageFrame(Path(path), (int(size[0]), int(size[1])), orientation if 1 <= orientation <= 8 else 1)


@dataclass(frozen=True)
class SourceObject:
    """One object of one image, as a reader found it. ``rle``: compressed COCO RLE (``counts`` a str) in the
    shown frame, or None for a format that gives a box only; ``box``: COCO [x, y, w, h] over pixel edges in
    the shown frame (for a mask: its tight box); ``area``: mask pixels (box area without a mask);
    ``iscrowd``: a region of several objects (Cityscapes' plain class ids), kept but never a pool object;
    ``source``: the file (and record) it came from, for messages and ``apis_source_file``."""

    category: str
    rle: dict | None
    box: tuple[float, float, float, float]
    area: float
    source: str
    iscrowd: bool = False

    @staticmethod
    def from_rle(rle: dict, category: str, source: str, iscrowd: bool = False) -> SourceObject:
        """From a compressed RLE in the shown frame (``counts`` bytes or str): its tight box over pixel edges and
        its area in pixels; ``counts`` kept as str (json-serialisable)."""
        counts = rle["counts"]
        coded = {"size": [int(v) for v in rle["size"]],
                 "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        box = tuple(float(v) for v in mask_utils.toBbox(coded))
        text = {"size": coded["size"], "counts": coded["counts"].decode("ascii")}
        return SourceObject(category, text, box, float(mask_utils.area(coded)), source, iscrowd)

    @staticmethod
    def from_box(box: tuple[float, float, float, float], category: str, source: str) -> SourceObject:
        """A box-only object: COCO [x, y, w, h] in the shown frame."""
        x, y, w, h = (float(v) for v in box)
        return SourceObject(category, None, (x, y, w, h), w * h, source)


@dataclass(frozen=True)
class SourceImage:
    """One image of the source and the files that annotate it. ``key`` is unique in the source and becomes
    the imported file's stem. ``masks``: one binary image per object; ``label``: one label image;
    ``annotation``: one per-image annotation file (YOLO txt, LabelMe json, Cellpose npy); ``record``: what a
    format parsed up front for this image (e.g. a COCO file's annotations), opaque to the importer."""

    key: str
    image: Path
    masks: tuple[Path, ...] = ()
    label: Path | None = None
    annotation: Path | None = None
    record: Any = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class ReadOptions:
    """What the user told the importer about the source's meaning (``apis data import`` options).

    ``category``: the one category for objects whose format names none (None: ``object``);
    ``categories``: globs over annotation-file paths relative to the source folder → category (first match);
    ``ignore_values``: label values that are void, neither object nor background (None: the format's
    default, 255 for 8-bit and palette label images); ``class_from_value``: label values are
    ``class × 1000 + k`` (Cityscapes): the class from ``value // 1000``, a value under 1000 a crowd region (None:
    unsaid, and 16-bit labels that look like such ids are refused rather than read as one object per value);
    ``mask_threshold``: a binary mask's grey value at or above which a pixel is the object (antialiased
    edges); ``exif``: where masks of an image with an EXIF orientation are drawn: ``auto`` (decided by their
    size, refused where ambiguous), ``stored`` (on the stored pixels) or ``shown`` (on the image as shown);
    ``label_name`` / ``image_pattern`` / ``label_pattern``: how label files pair with images."""

    category: str | None = None
    categories: Mapping[str, str] = field(default_factory=dict)
    ignore_values: tuple[int, ...] | None = None
    class_from_value: bool | None = None
    mask_threshold: int = 128
    exif: str = "auto"
    label_name: str | None = None
    image_pattern: str | None = None
    label_pattern: str | None = None


Problems = list[str]


@dataclass(frozen=True)
class Format:
    """A dataset layout a reader understands. ``detect(src)`` → True when ``src`` looks like it;
    ``scan(src, options)`` → the images and the problems of the layout (an image without labels, a label
    without an image, two files of one stem); ``read(item, frame, options)`` → the objects of one image and
    its problems, each problem one line naming the file and the fix. ``boxes_only``: the format has no
    masks (objects come with ``rle`` None)."""

    name: str
    detect: Callable[[Path], bool]
    scan: Callable[[Path, ReadOptions], tuple[list[SourceImage], Problems]]
    read: Callable[[SourceImage, ImageFrame, ReadOptions], tuple[list[SourceObject], Problems]]
    boxes_only: bool = False
    help: str = ""
