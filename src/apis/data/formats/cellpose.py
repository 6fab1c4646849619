"""``cellpose``: a folder of images, each beside what Cellpose saved for it.

* ``X_seg.npy``: the GUI's save (and ``cellpose --save``): a pickled dict whose ``masks`` is an H×W integer
  label array (0 background, 1..N the cells); read without running pickled code (:mod:`.npy`).
* ``X_masks.png|tif`` / ``X_cp_masks.png|tif``: the same labels as an image (training folders, ``--save_png``,
  ``--save_tif``).

Where both exist they must agree: the GUI rewrites only ``_seg.npy`` after a correction, so a label image that
differs is stale and the import refuses rather than guess. Cellpose names no classes: every cell gets
``ReadOptions.category`` (default ``object``), or the first ``ReadOptions.categories`` glob matching the
annotation file's path relative to the source. Labels are drawn on the pixels Cellpose read, which for an
image with an EXIF orientation depends on its reader: ``ReadOptions.exif`` decides
(:func:`apis.data.importing.frames.to_shown`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apis.data.formats.files import IMAGE_SUFFIXES, by_stem, image_keys, is_image
from apis.data.formats.npy import ForbiddenPickle, NpyError, load_npy
from apis.data.formats.rasters import label_objects, read_raster
from apis.data.importing.files import FileProblem
from apis.data.importing.frames import to_shown
from apis.data.importing.options import category_of
from apis.data.sources import Format, ImageFrame, Problems, ReadOptions, SourceImage, SourceObject

SEG_SUFFIX = "_seg.npy"
#: Label image name endings, longest first (``a_cp_masks`` must not read as image ``a_cp``).
LABEL_ENDINGS = ("_cp_masks", "_masks")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
#: Other files Cellpose writes beside an image that are images themselves, never inputs.
DERIVED_ENDINGS = (*LABEL_ENDINGS, "_flows", "_cp_outlines", "_outlines")


def _label_base(path: Path) -> str | None:
    if path.suffix.lower() not in LABEL_SUFFIXES:
        return None
    for ending in LABEL_ENDINGS:
        if path.stem.endswith(ending) and len(path.stem) > len(ending):
            return path.stem[: -len(ending)]
    return None


def _files(src: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(images, _seg.npy files, label images) of the folder ``src``, sorted."""
    files = sorted(p for p in Path(src).iterdir() if p.is_file() and not p.name.startswith("."))
    segs = [p for p in files if p.name.endswith(SEG_SUFFIX) and len(p.name) > len(SEG_SUFFIX)]
    labels = [p for p in files if _label_base(p) is not None]
    images = [p for p in files if is_image(p) and not p.stem.endswith(DERIVED_ENDINGS)]
    return images, segs, labels


def detect(src: Path) -> bool:
    """A folder holding an image beside its ``_seg.npy`` or ``_masks`` / ``_cp_masks`` label image."""
    src = Path(src)
    if not src.is_dir():
        return False
    images, segs, labels = _files(src)
    stems = {p.stem for p in images}
    return any(p.name[: -len(SEG_SUFFIX)] in stems for p in segs) or any(_label_base(p) in stems for p in labels)


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], Problems]:
    """Images of the folder ``src`` with their ``_seg.npy`` (``annotation``) and label image (``label``).
    Problems: two files of one stem, an image with neither, an annotation without its image."""
    src = Path(src)
    images, segs, labels = _files(src)
    by_image, problems = by_stem(images, src, "image", "keep one of them")
    seg_of = {p.name[: -len(SEG_SUFFIX)]: p for p in segs}
    label_of: dict[str, Path] = {}
    for p in labels:
        base = _label_base(p)
        if base in label_of:
            problems.append(f"{label_of[base]} and {p}: two label images of one image. Fix: keep the one that matches "
                            f"{base}{SEG_SUFFIX} or your last correction, remove the other")
            continue
        label_of[base] = p
    items = []
    keys = image_keys(list(by_image))
    for stem, image in by_image.items():
        seg, label = seg_of.get(stem), label_of.get(stem)
        if seg is None and label is None:
            problems.append(f"{image}: no {stem}{SEG_SUFFIX} or {stem}_masks.png beside it. Fix: annotate it in "
                            "Cellpose (saving writes the _seg.npy), or remove the image")
            continue
        items.append(SourceImage(keys[stem], image, label=label, annotation=seg))
    stems = {p.stem for p in images}  # with the stems of two images, reported above
    for base, path in sorted({**label_of, **seg_of}.items()):
        if base not in stems:
            problems.append(f"{path}: no image {base}.* ({', '.join(IMAGE_SUFFIXES)}) beside it. Fix: add the image, "
                            "or remove the file")
    return items, problems


def _seg_masks(path: Path, png: Path | None) -> tuple[np.ndarray | None, str | None]:
    base = path.name[: -len(SEG_SUFFIX)]
    fix = (f"move {path.name} out of the folder to import {png.name} instead" if png is not None else
           f"save the masks as {base}_masks.png with cellpose --save_png (or File > Save masks as PNG in the GUI)")
    try:
        content = load_npy(path)
    except ForbiddenPickle as e:
        return None, f"{e}; apis reads only arrays from it. Fix: {fix}"
    except NpyError as e:
        return None, f"{e}. Fix: save it again from Cellpose, or {fix}"
    masks = content.get("masks") if isinstance(content, dict) else content
    if not isinstance(masks, np.ndarray):
        what = "no 'masks' entry" if isinstance(content, dict) else f"a {type(content).__name__}"
        return None, f"{path}: holds {what}, not Cellpose's label array. Fix: {fix}"
    return masks, None


def _check_labels(labels: np.ndarray, path: Path) -> str | None:
    if labels.ndim != 2:
        return (f"{path}: labels of shape {labels.shape}, not H×W (one integer per pixel). Fix: save a 2-D label "
                "image (one per plane of a stack)")
    if labels.dtype.kind not in "iub":
        return f"{path}: labels are {labels.dtype}, not integers. Fix: save integer labels (0 background, 1..N)"
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        return f"{path}: negative labels (minimum {labels.min()}). Fix: save labels 0 (background) and 1..N"
    return None


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], Problems]:
    """One object per label value of the image's ``_seg.npy`` (or its label image), in the shown frame."""
    source = item.annotation or item.label
    labels = None
    if item.annotation is not None:
        labels, problem = _seg_masks(item.annotation, item.label)
        if problem is not None:
            return [], [problem]
    try:
        if item.label is not None:
            png = read_raster(item.label, options).pixels
            if labels is not None and (png.shape != labels.shape or not np.array_equal(png, labels)):
                diff = ("is of another size" if png.shape != labels.shape
                        else f"differs on {int((png != labels).sum())} pixels")
                return [], [f"{item.label}: {diff} from {item.annotation} (Cellpose's GUI saves corrections to the "
                            ".npy only). Fix: remove whichever is stale"]
            labels = png if labels is None else labels
        problem = _check_labels(labels, source)
        if problem is not None:
            return [], [problem]
        labels = to_shown(labels, frame, options.exif, source)
    except FileProblem as e:
        return [], [str(e)]
    name = category_of(source, options)
    if name is None:
        return [], [f"{source}: matches no glob of --categories. Fix: add a glob for it there"]
    return label_objects(labels, lambda _: name, str(source)), []


FORMAT = Format(
    name="cellpose", detect=detect, scan=scan, read=read,
    help="Cellpose: images beside X_seg.npy (GUI saves, read without running pickled code) and/or X_masks.png "
         "label images",
)
