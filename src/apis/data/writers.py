"""Write a COCO instance-segmentation dict in the layouts people read: the importer's inverses.

:func:`write_masks` takes the COCO dict (e.g. ``apis export masks``' file), the folder its ``file_name``
entries are relative to and a format (:data:`FORMATS`), and writes the folder ``out``:

* ``coco``: ``annotations.json`` (``file_name`` → ``images/<stem><ext>``) + ``images/``.
* ``label-images``: ``images/<stem><ext>`` + ``labels/<stem>.png`` (or ``.tif``) for every image: 0 background,
  objects 1..n in annotation order; 8-bit where n ≤ 254 (255 is void to importers), else 16-bit (``I;16``).
* ``mask-folders`` (DSB 2018's): ``<stem>/images/<stem><ext>`` + ``<stem>/masks/<stem>_<k>.png``, one 0/255
  8-bit PNG per object (k zero-padded: names sort in annotation order).
* ``yolo`` (YOLO-seg): ``data.yaml`` + ``images/train/`` + ``labels/train/<stem>.txt``, a line per object,
  ``class x1 y1 ...`` normalised to [0, 1] (6 decimals); class: the category's position in the dict.

Beside each, ``objects.csv``, a row per pool (non-crowd) object: image, where it is (:data:`LOCATORS`; empty
without pixels), annotation id, category, ``bbox`` [x, y, w, h], ``area`` (pixels of its mask; 0 without),
the trust fields, ``points_answered``, ``missing`` (yes: no mask, no pixels) and ``reassigned_pixels``.
In ``label-images`` and ``mask-folders`` a pixel has one owner (a label image cannot give it to two objects, the
importer refuses two mask files sharing it): the smallest mask covering it (:func:`.mask_shapes.own_pixels`);
what an object loses is its ``reassigned_pixels``. ``coco`` and ``yolo`` keep every mask whole; YOLO's polygons
are :func:`.mask_shapes.mask_polygon`'s (pycocotools fills them back to the mask exactly).

Frames: masks are drawn on the image as shown (after its EXIF orientation, the frame of the COCO dict);
images are copied byte for byte. ``out`` appears whole or not at all: built in a temporary folder beside it and
renamed into place. An existing non-empty ``out`` is refused, except with ``force`` where it holds an earlier
export (its ``objects.csv``): then it is replaced. A folder that is not an export is never deleted.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from apis.atomic import write_json_atomic
from apis.data.mask_shapes import MaskCut, mask_polygon, own_pixels
from apis.data.partial import PID_FILE, clear_stale_partials, partial_folder
from apis.data.records import decode_segmentation

FORMATS = ("coco", "label-images", "mask-folders", "yolo")
LABEL_EXTS = ("png", "tif")
#: The CSV column that says where an object is in each format.
LOCATORS = {"coco": "json_index", "label-images": "label_value", "mask-folders": "mask_file", "yolo": "yolo_line"}
CSV_NAME = "objects.csv"
#: Most objects an 8-bit label image holds: 255 means void to importers.
MAX_8BIT_OBJECTS = 254


class WriteError(ValueError):
    """The dict cannot be written as asked; the message names the file or record and the fix."""


@dataclass(frozen=True)
class WriteOptions:
    """``label_ext``: ``png`` or ``tif`` (label-images); ``force``: replace an earlier export at ``out``;
    ``extra``: file name → json object written into the folder too (e.g. the export's review list)."""

    label_ext: str = "png"
    force: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class WriteResult:
    """What :func:`write_masks` wrote. ``objects``: pool objects of the dict; ``written``: those with pixels in
    the output; ``missing``: ids without a mask; ``reassigned``: id → pixels given to another object (non-zero
    only); ``emptied``: ids whose every pixel went to others; ``crowd``: crowd regions left out (raster and YOLO
    formats); ``oriented``: images with an EXIF orientation; ``wide``: label images written 16-bit."""

    out: Path
    fmt: str
    images: int
    objects: int
    written: int
    files: int
    missing: list[int] = field(default_factory=list)
    reassigned: dict[int, int] = field(default_factory=dict)
    emptied: list[int] = field(default_factory=list)
    crowd: int = 0
    oriented: int = 0
    wide: int = 0

    def lines(self) -> list[str]:
        lines = [f"{self.out} ({self.fmt}): {self.images} images, {self.written} of {self.objects} objects written, "
                 f"{self.files} files; one row per object in {self.out / CSV_NAME}"]
        if self.missing:
            lines.append(f"{len(self.missing)} objects have no mask (missing=yes in {CSV_NAME})"
                         + ("" if self.fmt == "coco" else ": they have no pixels here"))
        if self.fmt in ("label-images", "mask-folders"):
            lines.append(f"overlaps: {sum(self.reassigned.values())} pixels of {len(self.reassigned)} object(s) given "
                         f"to the smaller object sharing them (reassigned_pixels in {CSV_NAME}); {len(self.emptied)} "
                         "object(s) lost every pixel")
        if self.wide:
            lines.append(f"{self.wide} label images hold over {MAX_8BIT_OBJECTS} objects: written 16-bit")
        if self.crowd:
            lines.append(f"{self.crowd} crowd regions left out (not objects; kept by --format coco)")
        if self.oriented:
            lines.append(f"{self.oriented} images carry an EXIF orientation: masks are drawn on the image as shown "
                         "(apis data import --exif shown reads them so)")
        if self.fmt == "coco":
            lines.append(f"check with: apis data check {self.out / 'annotations.json'}")
        return lines


@dataclass(frozen=True)
class _Image:
    """One image to write: its COCO entry, unique ``stem``, source file, pool annotations (file order) and their
    masks (:class:`MaskCut`, shown frame; None: no segmentation); ``crowd``: its crowd regions."""

    record: Mapping[str, Any]
    stem: str
    src: Path
    anns: list[Mapping[str, Any]]
    masks: list[MaskCut | None]
    crowd: int = 0
    ext: str = ""  # the image file's suffix, kept on the copy


# --------------------------------------------------------------------------------------------- the folder
def check_target(out: Path | str, force: bool = False) -> None:
    """Raise :class:`WriteError` unless ``out`` is new, empty, or (with ``force``) an earlier export."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise WriteError(f"{out}: exists and is a file. Fix: pass a new folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / CSV_NAME).is_file():
        raise WriteError(f"{out}: exists, is not empty and holds no earlier export ({CSV_NAME}); it is never "
                         "replaced. Fix: pass a new or empty folder")
    if not force:
        raise WriteError(f"{out}: holds an earlier export. Fix: pass a new folder, or --force to replace it")


def _publish(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_masks(coco: Mapping[str, Any], image_root: Path | str, out: Path | str, fmt: str,
                options: WriteOptions | None = None) -> WriteResult:
    """Write ``coco`` (images relative to ``image_root``) as ``fmt`` to the folder ``out`` (module doc).
    Raises :class:`WriteError` naming the file and the fix; nothing is left at ``out`` then."""
    opts, out = options or WriteOptions(), Path(out)
    if fmt not in FORMATS or opts.label_ext not in LABEL_EXTS:
        raise WriteError(f"--format {fmt} --label-ext {opts.label_ext}: choose a format of {', '.join(FORMATS)} and "
                         f"a label extension of {', '.join(LABEL_EXTS)}")
    check_target(out, opts.force)
    clear_stale_partials(out)
    tmp = partial_folder(out)
    try:
        result = _write_all(coco, Path(image_root), tmp, out, fmt, opts)
        for name, doc in opts.extra.items():
            write_json_atomic(doc, tmp / name)
        (tmp / PID_FILE).unlink()
        result.files = sum(1 for p in tmp.rglob("*") if p.is_file())
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_all(coco: Mapping[str, Any], root: Path, tmp: Path, out: Path, fmt: str, opts: WriteOptions) -> WriteResult:
    index = {a["id"]: i for i, a in enumerate(coco["annotations"])}
    classes = {c["id"]: k for k, c in enumerate(coco["categories"])}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    result = WriteResult(out, fmt, len(coco["images"]), 0, 0, 0)
    rows = []
    for image in _images(coco, root):
        result.oriented += _check_image(image)
        result.crowd += image.crowd if fmt != "coco" else 0
        if fmt == "coco":
            rel = _copy(image, tmp, f"images/{image.stem}{image.ext}")
            places = [(str(index[a["id"]]), 0) for a in image.anns]
        elif fmt == "yolo":
            rel = _copy(image, tmp, f"images/train/{image.stem}{image.ext}")
            places = _write_yolo(image, tmp / "labels" / "train" / f"{image.stem}.txt", classes)
        else:
            rel, places, wide = _write_raster(image, tmp, fmt, opts.label_ext)
            result.wide += wide
        for a, m, (where, lost) in zip(image.anns, image.masks, places, strict=True):
            area = 0 if m is None else m.area
            rows.append(_row(rel, where, a, names, area, lost))
            result.objects += 1
            result.written += bool(where) and area > lost
            if m is None:
                result.missing.append(a["id"])
            elif lost:
                result.reassigned[a["id"]] = lost
                if lost == area:
                    result.emptied.append(a["id"])
    if fmt == "coco":
        _write_coco_json(coco, tmp / "annotations.json", out)
    if fmt == "yolo":
        _write_data_yaml(tmp / "data.yaml", out, [c["name"] for c in coco["categories"]])
    with open(tmp / CSV_NAME, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", LOCATORS[fmt], "annotation_id", "category", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
                         "area", "apis_score", "apis_source", "apis_refinement", "points_answered", "points_agree",
                         "missing", "reassigned_pixels"])
        writer.writerows(rows)
    return result


def _row(image: str, where: str, ann: Mapping[str, Any], names: Mapping[int, str], area: int, lost: int) -> list:
    def num(v: Any) -> str:
        return "" if v is None else str(int(v)) if float(v).is_integer() else f"{float(v):.6f}".rstrip("0")

    box = [num(v) for v in ann.get("bbox", [None] * 4)]
    return [image, where, ann["id"], names.get(ann["category_id"], ann["category_id"]), *box, area,
            num(ann.get("apis_score")), ann.get("apis_source", ""), ann.get("apis_refinement") or "",
            num(ann.get("apis_points")), num(ann.get("apis_points_agree")),
            "yes" if ann.get("segmentation") is None else "no", lost]


# --------------------------------------------------------------------------------------------- reading
def _stems(images: Sequence[Mapping[str, Any]]) -> list[str]:
    """A file stem per image entry, unique in the export: the file's own, or ``<stem>-<id>`` where two files
    share one (``a/img.png``, ``b/img.png``)."""
    plain = [Path(im["file_name"]).stem for im in images]
    counts = Counter(plain)
    stems = [s if counts[s] == 1 else f"{s}-{im['id']}" for im, s in zip(images, plain, strict=True)]
    if len(set(stems)) != len(stems):
        raise WriteError("image file names collide even with their ids appended. Fix: give the images distinct "
                         "file names in the COCO file")
    return stems


def _images(coco: Mapping[str, Any], root: Path) -> Iterator[_Image]:
    """The :class:`_Image` of each image entry, in file order, its masks decoded one image at a time."""
    by_image: dict[Any, list] = {}
    crowd: dict[Any, int] = {}
    for a in coco["annotations"]:
        if a.get("iscrowd"):
            crowd[a["image_id"]] = crowd.get(a["image_id"], 0) + 1
        else:
            by_image.setdefault(a["image_id"], []).append(a)
    for im, stem in zip(coco["images"], _stems(coco["images"]), strict=True):
        anns = by_image.get(im["id"], [])
        masks = []
        for a in anns:
            try:
                seg = a.get("segmentation")
                masks.append(None if seg is None else MaskCut.of(decode_segmentation(seg, im["height"], im["width"])))
            except (ValueError, TypeError, KeyError) as e:
                raise WriteError(f"annotation {a['id']} ({im['file_name']}): segmentation cannot be decoded ({e}). "
                                 "Fix: check the file with apis data check") from None
        yield _Image(im, stem, root / im["file_name"], anns, masks, crowd.get(im["id"], 0),
                     Path(im["file_name"]).suffix)


def _check_image(image: _Image) -> int:
    """1 if the image carries an EXIF orientation, else 0; raises where it is unreadable or not the dict's size."""
    try:
        with Image.open(image.src) as pil:
            (w, h), orientation = pil.size, int(pil.getexif().get(0x0112, 1) or 1)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise WriteError(f"{image.src}: image cannot be read ({e}). Fix: pass the folder the file_name entries are "
                         "relative to, or restore the file") from None
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if (w, h) != (image.record["width"], image.record["height"]):
        raise WriteError(f"{image.src}: is {w}x{h} as shown, the COCO image {image.record['id']} says "
                         f"{image.record['width']}x{image.record['height']}. Fix: point the image root at the right "
                         "files")
    return int(orientation not in (0, 1))


def _copy(image: _Image, folder: Path, rel: str) -> str:
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image.src, folder / rel)
    return rel


# --------------------------------------------------------------------------------------------- rasters
def _write_raster(image: _Image, tmp: Path, fmt: str, label_ext: str) -> tuple[str, list[tuple[str, int]], int]:
    """label-images or mask-folders for one image: (its path in the export, per object (locator, pixels lost),
    1 if its label image is 16-bit)."""
    h, w = image.record["height"], image.record["width"]
    scores = [float(a.get("apis_score") or 0.0) for a in image.anns]
    owner, lost = own_pixels(image.masks, scores, (h, w))
    kept = np.array([m is not None and m.area > lost[i] for i, m in enumerate(image.masks)], dtype=np.int64)
    values = np.cumsum(kept) * kept  # 1..n in annotation order; 0 for an object left without pixels
    n = int(values.max(initial=0))
    if fmt == "label-images":
        if n > 65535:
            raise WriteError(f"{image.src}: {n} objects do not fit a 16-bit label image. Fix: use --format "
                             "mask-folders or coco for this set")
        rel = _copy(image, tmp, f"images/{image.stem}{image.ext}")
        lut = np.concatenate([[0], values]).astype(np.uint8 if n <= MAX_8BIT_OBJECTS else np.uint16)
        path = tmp / "labels" / f"{image.stem}.{label_ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lut[owner]).save(path)  # uint8 → mode L, uint16 → I;16
        return rel, [(str(v) if v else "", d) for v, d in zip(values, lost, strict=True)], int(n > MAX_8BIT_OBJECTS)
    rel = _copy(image, tmp, f"{image.stem}/images/{image.stem}{image.ext}")
    (tmp / image.stem / "masks").mkdir(parents=True, exist_ok=True)
    places = []
    for i, v in enumerate(values):
        name = f"{image.stem}/masks/{image.stem}_{int(v):0{len(str(n))}d}.png" if v else ""
        if name:
            Image.fromarray(np.where(owner == i + 1, 255, 0).astype(np.uint8)).save(tmp / name)
        places.append((name, lost[i]))
    return rel, places, 0


def _write_yolo(image: _Image, path: Path, classes: Mapping[int, int]) -> list[tuple[str, int]]:
    """The image's label file (one line per object with pixels; empty without): per object (line number, 0)."""
    h, w = image.record["height"], image.record["width"]
    lines, places = [], []
    for a, m in zip(image.anns, image.masks, strict=True):
        if m is None or not m.area:
            places.append(("", 0))
            continue
        xy = (mask_polygon(m.pixels) + (m.x0, m.y0)) / (w, h)
        lines.append(f"{classes[a['category_id']]} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
        places.append((str(len(lines)), 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return places


def _write_data_yaml(path: Path, out: Path, names: Sequence[str]) -> None:
    body = yaml.safe_dump({"path": str(out.resolve()), "train": "images/train", "names": list(names)},
                          sort_keys=False, allow_unicode=True)
    path.write_text("# Written by apis export masks: YOLO segmentation of the train split, one polygon per object.\n"
                    + body + "# val: not exported; point it at a folder of validation images before training\n",
                    encoding="utf-8")


def _write_coco_json(coco: Mapping[str, Any], path: Path, out: Path) -> None:
    """``coco`` with each ``file_name`` in the export's ``images/`` and ``info.apis_image_root`` the export."""
    doc = dict(coco)
    doc["images"] = [dict(im, file_name=f"images/{stem}{Path(im['file_name']).suffix}")
                     for im, stem in zip(coco["images"], _stems(coco["images"]), strict=True)]
    doc["info"] = {**(coco.get("info") or {}), "apis_image_root": str(out.resolve())}
    write_json_atomic(doc, path)
