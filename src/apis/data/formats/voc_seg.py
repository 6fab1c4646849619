"""``voc-seg``: Pascal VOC's segmentation layout, as VOC publishes it and as CVAT exports "Segmentation mask".

* ``SegmentationObject/NAME.png``: one colour per object (palette or RGB): black is background; VOC's void
  (palette index 255, colour (224, 224, 192); ``--ignore-values`` to change) is no object and no background,
  left out of every mask and counted.
* ``SegmentationClass/NAME.png``: the class colour of every pixel. An object's class is the class colour
  under its pixels, which must all agree; the colour's name comes from ``labelmap.txt`` (CVAT: ``name:r,g,b::``
  lines), else from VOC's 21 classes and colours. A grey (single-channel) class image holds class indices, in
  labelmap (or VOC) order.
* ``JPEGImages/NAME.*``: the images (a CVAT export saved without images has none: the import says so).
* ``ImageSets/Segmentation/*.txt``: the names segmented; where present they are the images imported (VOC's
  JPEGImages also holds thousands of detection-only images, never imported as "images without objects").

Rasters are drawn on the image's pixels; an image with an EXIF orientation follows ``ReadOptions.exif``
(:func:`apis.data.importing.frames.to_shown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apis.data.formats.files import by_stem, image_files, image_keys, stem_of
from apis.data.formats.rasters import Raster, label_objects, pack, read_raster, unpack
from apis.data.importing.files import FileProblem
from apis.data.importing.frames import to_shown
from apis.data.importing.label_values import void_values
from apis.data.sources import Format, ImageFrame, Problems, ReadOptions, SourceImage, SourceObject

OBJECTS, CLASSES, IMAGES, LISTS = "SegmentationObject", "SegmentationClass", "JPEGImages", "ImageSets/Segmentation"
LABELMAP = "labelmap.txt"
VOID_COLOUR = (224, 224, 192)
VOID_INDEX = 255
VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def voc_colour(index: int) -> tuple[int, int, int]:
    """VOC's colour of class ``index``: its bits dealt to r, g, b in turn, from the top bit of each down."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= (index & 1) << shift
        g |= ((index >> 1) & 1) << shift
        b |= ((index >> 2) & 1) << shift
        index >>= 3
    return r, g, b


@dataclass(frozen=True)
class Labelmap:
    """Class names in order, their colours, and the file they came from (None: VOC's own 21)."""

    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    source: Path | None = None

    def name_of_colour(self) -> dict[int, str]:
        return {pack(c): n for n, c in zip(self.names, self.colours, strict=True)}

    @property
    def where(self) -> str:
        return str(self.source) if self.source else "VOC's 21 class colours (no labelmap.txt)"


VOC_LABELMAP = Labelmap(VOC_NAMES, tuple(voc_colour(i) for i in range(len(VOC_NAMES))))


def read_labelmap(path: Path) -> tuple[Labelmap | None, Problems]:
    """CVAT's labelmap.txt (``# label:color_rgb:parts:actions``, then ``name:r,g,b:parts:actions`` lines)."""
    names, colours, problems = [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        rgb = fields[1].split(",") if len(fields) > 1 else []
        try:
            colour = tuple(int(v) for v in rgb)
        except ValueError:
            colour = ()
        if not fields[0].strip() or len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            problems.append(f"{path}:{n}: {line.strip()!r} is not 'name:r,g,b::'. Fix: correct the line")
            continue
        if colour in colours:
            problems.append(f"{path}:{n}: colour {colour} is also {names[colours.index(colour)]!r}'s. Fix: give each "
                            "label its own colour (and repaint the class masks)")
            continue
        names.append(fields[0].strip())
        colours.append(colour)
    if problems:
        return None, problems
    return Labelmap(tuple(names), tuple(colours), path), []


def detect(src: Path) -> bool:
    """A folder with ``SegmentationObject/`` (holding PNGs) beside ``SegmentationClass/``."""
    src = Path(src)
    objects = src / OBJECTS
    return (src / CLASSES).is_dir() and objects.is_dir() and any(objects.rglob("*.png"))


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], Problems]:
    """The segmented images (module doc) with their object PNG (``masks``), class PNG (``label``) and the
    :class:`Labelmap` (``record``). Problems: a listed name without its PNGs or image, an object PNG that no list
    names, two images of one name, a broken labelmap."""
    src = Path(src)
    labelmap, problems = (read_labelmap(src / LABELMAP) if (src / LABELMAP).is_file() else (VOC_LABELMAP, []))
    if labelmap is None:
        return [], problems
    objects = {stem_of(p, src / OBJECTS): p for p in sorted((src / OBJECTS).rglob("*.png"))}
    classes = {stem_of(p, src / CLASSES): p for p in sorted((src / CLASSES).rglob("*.png"))}
    images, bad = by_stem(image_files(src / IMAGES, recursive=True), src / IMAGES, "image", "keep one of them")
    problems += bad
    lists = sorted((src / LISTS).glob("*.txt")) if (src / LISTS).is_dir() else []
    roster: dict[str, str] = {}
    for path in lists:
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if line.split():
                roster.setdefault(line.split()[0], f"{path}:{n}")
    if not lists:
        roster = {stem: str(path) for stem, path in objects.items()}
    for stem, path in objects.items():
        if stem not in roster:
            problems.append(f"{path}: not named in any {LISTS}/*.txt. Fix: add {stem} to a list there, or remove the "
                            "file")
    no_images = not (src / IMAGES).is_dir()
    if no_images:
        problems.append(f"{src}: no {IMAGES}/ folder: the export holds no images (CVAT: 'Save images' was off). Fix: "
                        f"export again with images, or put them in {src / IMAGES}, named as the masks")
    items = []
    keys = image_keys(list(roster))
    for stem, where in roster.items():
        missing = [what for what, found in ((f"{OBJECTS}/{stem}.png", objects), (f"{CLASSES}/{stem}.png", classes))
                   if stem not in found]
        if not no_images and stem not in images:
            missing.append(f"{IMAGES}/{stem}.*")
        if missing:
            problems.append(f"{where}: {stem} has no {' and no '.join(missing)} in {src}. Fix: add "
                            f"{'them' if len(missing) > 1 else 'it'}, or remove {stem} from the list")
            continue
        if not no_images:
            items.append(SourceImage(keys[stem], images[stem], masks=(objects[stem],), label=classes[stem],
                                     record=labelmap))
    return items, problems


def _object_name(raster: Raster, kind: str, value: int) -> str:
    if raster.palette is not None:
        return f"index {value} (colour {tuple(int(v) for v in raster.palette[value])})"
    return f"colour {unpack(value)}" if kind == "colour" else f"value {value}"


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], Problems]:
    """The objects of one SegmentationObject PNG, each named by its class colour (module doc). Object values
    are read as label images are (:mod:`apis.data.importing.label_values`: palette and grey by index, RGB by
    colour; void 255 or VOC's void colour unless ``--ignore-values`` says otherwise), void pixels counted."""
    labelmap: Labelmap = item.record
    obj_path, cls_path = item.masks[0], item.label
    try:
        obj, cls = read_raster(obj_path, options), read_raster(cls_path, options)
        if obj.pixels.shape[:2] != cls.pixels.shape[:2]:
            return [], [f"{cls_path}: is {cls.pixels.shape[1]}x{cls.pixels.shape[0]}, {obj_path} is "
                        f"{obj.pixels.shape[1]}x{obj.pixels.shape[0]}. Fix: export the masks again"]
        ids, kind = obj.values()
        grey = cls.palette is None and cls.pixels.ndim == 2
        classes = cls.pixels.astype(np.int64) if grey else cls.colours()
        ids = to_shown(ids, frame, options.exif, obj_path)
        classes = to_shown(classes, frame, options.exif, cls_path)
    except FileProblem as e:
        return [], [str(e)]
    void = set(void_values(kind, options))
    is_object = (ids != 0) & ~np.isin(ids, list(void))
    if hasattr(options, "tally"):
        options.tally[(item.key, "void pixels")] += int(((ids != 0) & ~is_object).sum())

    # Each (object, class) pair once: an object whose pixels carry two classes shows up twice.
    pairs = np.unique(np.stack([ids[is_object].astype(np.int64), classes[is_object]], axis=1), axis=0)
    names = labelmap.names if grey else labelmap.name_of_colour()
    category: dict[int, str] = {}
    problems: Problems = []
    for value in np.unique(pairs[:, 0]).tolist():
        found = pairs[pairs[:, 0] == value, 1].tolist()
        what = f"{obj_path}: object {_object_name(obj, kind, value)}"
        shown = [str(c) if grey else str(unpack(c)) for c in found]
        if len(found) > 1:
            problems.append(f"{what} has pixels of {len(found)} classes in {cls_path} ({', '.join(shown)}); all its "
                            "pixels must have one. Fix: repaint the object in one class, or split it in two objects")
            continue
        c = found[0]
        name = (names[c] if 0 <= c < len(names) else None) if grey else names.get(c)
        unpainted = c == 0 or c == (VOID_INDEX if grey else pack(VOID_COLOUR))
        if unpainted or name is None:
            why = ("background" if c == 0 else "void") if unpainted else f"not in {labelmap.where}"
            problems.append(f"{what}: its class {'index' if grey else 'colour'} {shown[0]} in {cls_path} is {why}. "
                            f"Fix: {'paint its class there' if unpainted else 'add the class to labelmap.txt'}")
            continue
        category[value] = name
    if problems:
        return [], problems
    return label_objects(ids, category.__getitem__, str(obj_path), skip=void), []


FORMAT = Format(
    name="voc-seg", detect=detect, scan=scan, read=read,
    help="Pascal VOC / CVAT 'Segmentation mask': SegmentationObject/ + SegmentationClass/ PNGs, labelmap.txt, "
         "JPEGImages/ (a .zip as CVAT exports it is unpacked first)",
)
