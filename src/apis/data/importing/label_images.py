"""The ``label-images`` layout: a folder of images beside a folder of label images, one label file per
image in which every object has its own value (Penn-Fudan's ``PNGImages/`` + ``PedMasks/``, the Cell
Tracking Challenge's ``man_seg*.tif``, VOC's ``JPEGImages/`` + ``SegmentationObject/``, Cityscapes'
``*_instanceIds.png`` with ``--class-from-value``). Values are read as :mod:`.label_values` says.

A label file is found from its image's stem with a name template (:data:`LABEL_NAMES`, or
``--label-name``): ``{stem}`` is the image's stem, ``{digits}`` its trailing digits (``t013.tif`` →
``man_seg{digits}`` → ``man_seg013.tif``); by default the template that pairs the most files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from apis.data.formats.files import by_stem, image_files
from apis.data.importing.errors import refused
from apis.data.importing.label_values import read_label_objects
from apis.data.sources import Format, ImageFrame, ReadOptions, SourceImage, SourceObject

#: The fix for two files of one stem (``a.png`` beside ``a.jpg``), which would otherwise pair one silently.
DOUBLED_FIX = "rename or remove all but one"
#: Folder names tried, in order, for the two folders.
IMAGE_DIRS = ("images", "imgs", "img", "PNGImages", "JPEGImages", "raw", "input")
LABEL_DIRS = ("labels", "label", "masks", "PedMasks", "instances", "SegmentationObject", "gt", "ground_truth")
#: Label file names tried for an image of stem ``{stem}``; the one matching most images is used.
LABEL_NAMES = ("{stem}", "{stem}_mask", "{stem}_masks", "{stem}_label", "{stem}_labels", "{stem}_instances",
               "{stem}_gt", "man_seg{digits}")


def find_dir(src: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (Path(src) / name).is_dir():
            return Path(src) / name
    return None


def detect(src: Path) -> bool:
    return find_dir(src, IMAGE_DIRS) is not None and find_dir(src, LABEL_DIRS) is not None


def label_stem(template: str, stem: str) -> str:
    """The label file's stem for an image of ``stem`` by ``template`` (module doc)."""
    digits = stem[len(stem.rstrip("0123456789")):]
    return template.format(stem=stem, digits=digits)


def check_template(template: str) -> None:
    """Refuse a ``--label-name`` that is not a template over ``{stem}`` / ``{digits}`` (before any file is read)."""
    try:
        probe = label_stem(template, "x1")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise refused(f"--label-name {template!r}: not a name template ({type(e).__name__}: {e}). Fix: use {{stem}} "
                      "and {digits} only, e.g. '{stem}_mask' or 'man_seg{digits}'; write braces as {{ }}") from None
    if "/" in probe or probe in ("", ".", ".."):
        raise refused(f"--label-name {template!r}: gives a path, not a file stem. Fix: name the file only, and pass "
                      "its folder with --labels")
    if "{" not in template:
        raise refused(f"--label-name {template!r}: uses neither {{stem}} nor {{digits}}, so every image would get one "
                      "label file. Fix: e.g. '{stem}_mask'")


def label_template(images: Sequence[Path], labels: dict[str, Path]) -> str:
    """The :data:`LABEL_NAMES` template that finds a label file for the most ``images`` (ties: the first)."""
    best, hits = LABEL_NAMES[0], -1
    for template in LABEL_NAMES:
        n = sum(label_stem(template, im.stem) in labels for im in images)
        if n > hits:
            best, hits = template, n
    return best


def folders(src: Path, options: ReadOptions) -> tuple[Path, Path]:
    """The image and label folders: ``--images`` / ``--labels`` or the first of :data:`IMAGE_DIRS` /
    :data:`LABEL_DIRS` in ``src``."""
    idir = getattr(options, "images_dir", None) or find_dir(src, IMAGE_DIRS)
    ldir = getattr(options, "labels_dir", None) or find_dir(src, LABEL_DIRS)
    if idir is None or ldir is None:
        raise refused(f"{src}: no image folder ({', '.join(IMAGE_DIRS)}) or no label folder ({', '.join(LABEL_DIRS)}) "
                      "found. Fix: pass --images and --labels")
    for d, flag in ((idir, "--images"), (ldir, "--labels")):
        if not Path(d).is_dir():
            raise refused(f"{d}: not a folder. Fix: pass {flag} the folder holding them")
    if Path(idir).resolve() == Path(ldir).resolve():
        raise refused(f"{idir}: is both the image and the label folder. Fix: for images and labels side by side "
                      "in one folder, pass --image-pattern and --label-pattern (e.g. '*_img.png', '*_mask.png')")
    return Path(idir), Path(ldir)


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], list[str]]:
    """Images paired with their label files (module doc), and the problems: two files of one stem, an
    image without a label file, a label file without an image."""
    idir, ldir = folders(src, options)
    if options.label_name:
        check_template(options.label_name)
    image_paths, label_paths = image_files(idir), image_files(ldir)
    files, problems = by_stem(image_paths, idir, "image", DOUBLED_FIX)
    labels, label_problems = by_stem(label_paths, ldir, "label", DOUBLED_FIX)
    problems += label_problems
    # Stems held by two files are left out of both dicts (reported once): no "without a label" line for them.
    image_clashes = {p.stem for p in image_paths} - set(files)
    label_clashes = {p.stem for p in label_paths} - set(labels)
    template = options.label_name or label_template(list(files.values()), labels)
    images, used = [], set()
    for stem, f in sorted(files.items()):
        name = label_stem(template, stem)
        if name in label_clashes:
            continue  # reported: two label files of that stem
        if name not in labels:
            problems.append(f"{f}: no label image {ldir / name}.* (name template {template!r}). Fix: add it, remove "
                            "the image, or pass --label-name")
            continue
        used.add(name)
        images.append(SourceImage(stem, f, label=labels[name]))
    for stem, path in sorted(labels.items()):
        if stem not in used and not any(label_stem(template, s) == stem for s in image_clashes):
            problems.append(f"{path}: label image without an image in {idir} (name template {template!r}). Fix: add "
                            "the image, remove the label file, or pass --label-name")
    return images, problems


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], list[str]]:
    return read_label_objects(item, frame, options)


FORMAT = Format("label-images", detect, scan, read,
                help="SRC/images/ + SRC/labels/ (or --images/--labels): a label image per image, a value per object")
