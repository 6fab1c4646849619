"""One label image (every object its own value) → its objects, each value read as what the source means.

A value is an **object**, **background** or **void**:

* background: 0 (black for colour-coded labels);
* void: ``--ignore-values`` (:attr:`ReadOptions.ignore_values`); by default 255 in 8-bit and palette label
  images (the border VOC's SegmentationObject and CVAT's "Segmentation mask" export draw around every
  object), and in colour-coded labels VOC's void colour (224, 224, 192) and white (255, 255, 255); none in
  16- and 32-bit labels. A void pixel is neither object nor background: it is left out of every mask and
  counted in the summary (``void pixels``). ``--ignore-values none`` makes every non-zero value an object;
* every other value is one object.

Colour-coded labels (RGB, RGBA; alpha ignored): each colour is one object, black the background (as CVAT
or VOC SegmentationObject saved as RGB). ``--ignore-values`` gives colours as ``#RRGGBB`` or ``R:G:B``.

``--class-from-value`` (Cityscapes ``*_instanceIds.png``): a value ``v`` ≥ 1000 is object ``v % 1000`` of
class ``v // 1000``; a value 0 < ``v`` < 1000 is a region of class ``v`` whose objects are not told apart
(Cityscapes' plain ids: crowds of a class with instances, and stuff such as road or sky). Such a region is
read as a crowd region (``iscrowd``: kept in the COCO, never a pool object); the importer then leaves out
the crowd regions of every class that has no object in the whole import (stuff), and counts them. A class
is named by ``--categories`` (a YAML mapping class ids to names) or ``class_<id>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apis.data.importing.encode import column_major, object_from_columns
from apis.data.importing.files import MAX_PIXELS, FileProblem, read_pixels
from apis.data.importing.frames import to_shown
from apis.data.importing.options import category_of
from apis.data.sources import ImageFrame, ReadOptions, SourceImage, SourceObject

#: Default void values by kind of label image (module doc).
VOID_8BIT = (255,)
VOID_COLOURS = (0xE0E0C0, 0xFFFFFF)
#: --class-from-value: an object's value is class × CLASS_STEP + k.
CLASS_STEP = 1000


def label_values(pixels: np.ndarray, mode: str, path: Path) -> tuple[np.ndarray, str]:
    """(H×W integer values, kind) of a label file's stored pixels; kind is ``8-bit`` (L, P, 1), ``16-bit`` or
    more, or ``colour`` (each RGB colour packed as R·65536 + G·256 + B)."""
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        packed = pixels[..., 0].astype(np.int32)  # in place from here: one int32 image, no wider temporaries
        packed <<= 8
        packed |= pixels[..., 1]
        packed <<= 8
        packed |= pixels[..., 2]
        return packed, "colour"
    if pixels.ndim == 3:  # LA: a grey label with an alpha layer that carries no label
        pixels = pixels[..., 0]
    if pixels.dtype == np.bool_:
        return pixels.view(np.uint8), "8-bit"
    if pixels.dtype.kind == "f":
        if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0:
            raise FileProblem(f"{path}: a float label image with fractional or negative values; labels are integers "
                              "(0 background). Fix: save it as a 16-bit integer (I;16) label image")
        return pixels.astype(np.int64), "32-bit"
    if pixels.dtype.kind == "i" and pixels.size and pixels.min() < 0:
        raise FileProblem(f"{path}: negative label values; 0 is background and objects are positive. "
                          "Fix: save the labels as unsigned integers")
    kind = "8-bit" if pixels.dtype.itemsize == 1 or mode == "P" else f"{8 * pixels.dtype.itemsize}-bit"
    return pixels, kind


def value_counts(values: np.ndarray, block: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``values`` (sorted) and their pixel counts, a block of rows at a time: a whole
    ``np.unique`` sorts a copy of the image and flags it, 2.5 times its size again on an 8000×8000 label."""
    rows = max(1, block // max(1, values.shape[1] if values.ndim > 1 else 1))
    parts = [np.unique(values[i:i + rows], return_counts=True) for i in range(0, values.shape[0], rows)]
    found = np.concatenate([f for f, _ in parts]) if parts else np.zeros(0, values.dtype)
    counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, np.int64)
    merged, where = np.unique(found, return_inverse=True)
    return merged, np.bincount(where, weights=counts, minlength=len(merged)).astype(np.int64)


def void_values(kind: str, options: ReadOptions) -> tuple[int, ...]:
    if options.ignore_values is not None:
        return tuple(options.ignore_values)
    return VOID_8BIT if kind == "8-bit" else VOID_COLOURS if kind == "colour" else ()


def looks_like_class_ids(found: np.ndarray) -> bool:
    """Whether the distinct values ``found`` of a 16-bit (or wider) label look like Cityscapes ids (class × 1000
    + k) rather than one number per object: values on both sides of 1000, and those above it so sparse (under a
    tenth of the integers from 1000 to the largest) that they sit in runs just above multiples of 1000. A label of
    N objects numbered 1..N, even with many numbers unused, fills far more of its range."""
    values = found[found > 0].astype(np.int64)
    high = values[values >= CLASS_STEP]
    if high.size == 0 or not (values < CLASS_STEP).any():
        return False
    return high.size < 0.1 * (int(high.max()) - CLASS_STEP + 1)


def ambiguous_values(found: np.ndarray, kind: str, void: set[int], options: ReadOptions, path: Path) -> str | None:
    """A refusal where the label's values could mean two different datasets and the user has not said which,
    else None: Cityscapes-like ids without ``--class-from-value`` / ``--no-class-from-value`` (read as one object
    per value, road and sky would become objects), and an 8-bit label whose values 1..254 are all objects while
    255, the default void, is there too (the 255th object or a void border: no rule tells)."""
    if options.class_from_value is None and kind not in ("8-bit", "colour") and looks_like_class_ids(found):
        return (f"{path}: values look like class × 1000 + k ids (Cityscapes instanceIds: {int(found[found > 0].min())}"
                f"..{int(found.max())}, {int((found >= CLASS_STEP).sum())} of them over 1000); read as one object per "
                "value, each region under 1000 (road, sky, a crowd) would become an object. Fix: pass "
                "--class-from-value, or --no-class-from-value if every value is one object")
    if kind == "8-bit" and options.ignore_values is None and 255 in void:
        objects = np.setdiff1d(found, [0, 255])
        if 255 in found and objects.size >= 254:
            return (f"{path}: uses every value 1..254 and 255, the default void value of 8-bit labels: the 255th "
                    "object or a void border? Fix: pass --ignore-values none if 255 is an object, --ignore-values 255 "
                    "if it is void")
    return None


def class_name(class_id: int, options: ReadOptions) -> str:
    """--class-from-value: the name of class ``class_id`` from ``--categories`` (keys as text), else class_<id>."""
    return options.categories.get(str(class_id)) or f"class_{class_id}"


def read_label_objects(item: SourceImage, frame: ImageFrame, options: ReadOptions
                       ) -> tuple[list[SourceObject], list[str]]:
    """The objects of ``item.label`` in the shown frame of its image (module doc), encoded one by one."""
    path = item.label
    try:
        pixels, mode, _ = read_pixels(path, getattr(options, "max_pixels", MAX_PIXELS), labels=True)
        values, kind = label_values(pixels, mode, path)
        del pixels
        if options.class_from_value and kind == "colour":
            raise FileProblem(f"{path}: --class-from-value reads integer ids (class × 1000 + k), this label image is "
                              "in colour. Fix: import it without --class-from-value, or pass the instanceIds files")
        shown = to_shown(values, frame, options.exif, path)
    except FileProblem as e:
        return [], [str(e)]
    columns = column_major(shown)  # once: every object's comparison is then in pycocotools' layout
    del values, shown
    found, counts = value_counts(columns)
    void = set(void_values(kind, options))
    doubt = ambiguous_values(found, kind, void, options, path)
    if doubt is not None:
        return [], [doubt]
    void_pixels = int(sum(int(n) for v, n in zip(found, counts, strict=True) if int(v) in void))
    if void_pixels and hasattr(options, "tally"):
        options.tally[(item.key, "void pixels")] += void_pixels
    objects: list[SourceObject] = []
    file_category = None
    if not options.class_from_value:
        file_category = category_of(path, options)
        if file_category is None:
            return [], [f"{path}: matches no glob of --categories. Fix: add a glob for it there"]
    source = str(path)
    for value in (int(v) for v in found):
        if value == 0 or value in void:
            continue
        mask_t = columns == value
        if options.class_from_value:
            crowd = value < CLASS_STEP
            category = class_name(value if crowd else value // CLASS_STEP, options)
            objects.append(object_from_columns(mask_t, category, f"{source}#{value}", iscrowd=crowd))
        else:
            objects.append(object_from_columns(mask_t, file_category, f"{source}#{value}"))
        del mask_t
    return objects, []
