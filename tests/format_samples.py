"""Samples of the labelling tools' formats, written at test time from the 20 DSB 2018 images (CC0) in
tests/data/dsb2018, and the readers' results to compare with them. Shared by tests/test_formats_*.py."""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from apis.data.coco import rle_string_counts
from apis.data.formats.voc_seg import VOC_NAMES, voc_colour
from apis.data.records import encode_mask
from apis.data.sources import Format, ReadOptions, SourceImage, SourceObject, read_frame

DSB = Path(__file__).parent / "data" / "dsb2018" / "stage1_train"
N_IMAGES, N_NUCLEI = 20, 522
NAMES = ("nucleus", "cell")


@dataclass(frozen=True)
class Dsb:
    """One DSB image: its key, image file, its masks (H×W bool, in file order) and their categories: the two
    names of :data:`NAMES` alternate, so a reader's categories are checked object by object."""

    key: str
    image: Path
    masks: tuple[np.ndarray, ...]

    @property
    def height(self) -> int:
        return self.masks[0].shape[0]

    @property
    def width(self) -> int:
        return self.masks[0].shape[1]

    @property
    def categories(self) -> list[str]:
        return [NAMES[k % 2] for k in range(len(self.masks))]

    def labels(self) -> np.ndarray:
        """H×W uint16: object k is k + 1, 0 background (DSB masks do not overlap)."""
        out = np.zeros((self.height, self.width), np.uint16)
        for k, m in enumerate(self.masks):
            out[m] = k + 1
        return out


@lru_cache(maxsize=1)
def dsb() -> tuple[Dsb, ...]:
    out = []
    for folder in sorted(DSB.iterdir()):
        masks = tuple(np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").iterdir()))
        out.append(Dsb(folder.name, folder / "images" / f"{folder.name}.png", masks))
    return tuple(out)


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] over pixel edges."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())


# ------------------------------------------------------------------------------------------ polygons
def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """The outlines of ``mask`` as polygons in pixel units over pixel edges: contours traced on a 4× finer grid,
    whose sub-pixel centres lie inside the true edges, so COCO's rasteriser fills exactly the mask's pixels."""
    h, w = mask.shape
    fine = cv2.resize(mask.astype(np.uint8), (4 * w, 4 * h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(fine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1, 2) / 4.0).ravel().tolist() for c in contours if len(c) >= 3]


def merged_polygon(polygons: list[list[float]]) -> list[float]:
    """Several polygons as one, each further part reached from the first part's first vertex and left the same
    way (a zero-width corridor crossed twice), as Ultralytics joins the parts of one object into one line."""
    first = polygons[0]
    anchor = first[:2]
    out = list(first) + anchor
    for part in polygons[1:]:
        out += list(part) + part[:2] + anchor
    return out


# ------------------------------------------------------------------------------------------ writers
def write_yolo(root: Path, images=None, *, boxes: bool = False, names_as_dict: bool = False,
               merge_first: bool = False) -> Path:
    """A YOLO dataset of ``images`` (default all): data.yaml, images/{train,val}/, labels/{train,val}/ (the last
    quarter of the images in val), one line an object: its polygon (``boxes``: its box). ``merge_first``: the
    first image's first two nuclei are ONE object, a line joining both outlines (:func:`merged_polygon`)."""
    images = list(images or dsb())
    names = {i: n for i, n in enumerate(NAMES)} if names_as_dict else list(NAMES)
    n_val = len(images) // 4
    root.mkdir(parents=True, exist_ok=True)
    # 'path' as written on the exporting machine: not found here, so the entries resolve beside data.yaml.
    data = {"path": "/somewhere/else/ds", "train": "images/train", **({"val": "images/val"} if n_val else {}),
            "names": names}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    for i, d in enumerate(images):
        split = "val" if i >= len(images) - n_val else "train"
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d.image, root / "images" / split / d.image.name)
        lines = []
        objects = list(zip(d.masks, d.categories, strict=True))
        if merge_first and i == 0:
            objects[:2] = [(objects[0][0] | objects[1][0], objects[0][1])]
        for mask, cat in objects:
            cid = NAMES.index(cat)
            if boxes:
                x, y, w, h = tight_box(mask)
                values = [(x + w / 2) / d.width, (y + h / 2) / d.height, w / d.width, h / d.height]
            else:
                polys = mask_polygons(mask)
                poly = merged_polygon(polys) if len(polys) > 1 else polys[0]
                values = [v / (d.width if k % 2 == 0 else d.height) for k, v in enumerate(poly)]
            lines.append(" ".join([str(cid)] + [f"{v:.6f}" for v in values]))
        (root / "labels" / split / f"{d.key}.txt").write_text("\n".join(lines) + "\n")
    return root


LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nnucleus:128,0,0::\ncell:0,128,0::\n"
CLASS_COLOURS = {"nucleus": (128, 0, 0), "cell": (0, 128, 0)}


def _palette_png(indices: np.ndarray, colours: dict[int, tuple[int, int, int]], path: Path) -> None:
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    palette = [0] * 768
    for i, rgb in colours.items():
        palette[3 * i:3 * i + 3] = rgb
    im.putpalette(palette)
    im.save(path)


def write_voc(root: Path, images=None, *, rgb_objects: bool = True, void: bool = True,
              voc_names: tuple[str, str] | None = None) -> Path:
    """A CVAT "Segmentation mask" export: labelmap.txt, SegmentationObject/ (RGB colours, or a palette image),
    SegmentationClass/ (palette, labelmap colours), JPEGImages/, ImageSets/Segmentation/default.txt. ``void``:
    a one-pixel band around every object is VOC's void colour in both maps (it belongs to no object).
    ``voc_names``: Pascal VOC itself: no labelmap.txt, the two categories painted as these VOC classes."""
    images = list(images or dsb())
    for sub in ("SegmentationObject", "SegmentationClass", "JPEGImages", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if voc_names is None:
        (root / "labelmap.txt").write_text(LABELMAP)
        class_index = {name: 1 + k for k, name in enumerate(NAMES)}
        class_colours = {1 + k: CLASS_COLOURS[name] for k, name in enumerate(NAMES)}
    else:
        class_index = {name: VOC_NAMES.index(voc) for name, voc in zip(NAMES, voc_names, strict=True)}
        class_colours = {i: voc_colour(i) for i in class_index.values()}
    (root / "ImageSets/Segmentation/default.txt").write_text("".join(f"{d.key}\n" for d in images))
    for d in images:
        shutil.copyfile(d.image, root / "JPEGImages" / d.image.name)
        labels = d.labels()
        cls = np.zeros_like(labels, dtype=np.uint8)
        for k, cat in enumerate(d.categories):
            cls[labels == k + 1] = class_index[cat]
        band = np.zeros(labels.shape, bool)
        if void:
            grown = cv2.dilate((labels > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            band = grown & (labels == 0)
        if rgb_objects:
            # Object k's colour: increasing with k, so the reader's colour order is the mask order.
            k = labels.astype(np.int64)
            rgb = np.where(labels[..., None] > 0, np.stack([np.full_like(k, 16), k // 256, k % 256], axis=2), 0)
            rgb[band] = (224, 224, 192)
            Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(root / "SegmentationObject" / f"{d.key}.png")
        else:
            idx = labels.astype(np.uint8)
            idx[band] = 255
            _palette_png(idx, {i: (i, 255 - i, 7) for i in range(1, 255)} | {255: (224, 224, 192)},
                         root / "SegmentationObject" / f"{d.key}.png")
        cls[band] = 255
        _palette_png(cls, class_colours | {255: (224, 224, 192)}, root / "SegmentationClass" / f"{d.key}.png")
    return root


def write_cellpose(root: Path, images=None, *, png_for: tuple[int, ...] = ()) -> Path:
    """A Cellpose folder: X.png beside X_seg.npy (a dict saved by np.save, as Cellpose's GUI does); the images of
    index ``png_for`` get X_masks.png (16-bit) instead."""
    images = list(images or dsb())
    root.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(images):
        shutil.copyfile(d.image, root / d.image.name)
        labels = d.labels()
        if i in png_for:
            Image.fromarray(labels).save(root / f"{d.key}_masks.png")
            continue
        outlines = labels * (cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0)
        np.save(root / f"{d.key}_seg.npy", {"masks": labels, "outlines": outlines, "filename": str(d.image),
                                            "chan_choose": [0, 0], "ismanual": np.ones(len(d.masks), bool),
                                            "diameter": np.float64(17.0), "flows": [np.zeros((2, 2), np.float32)]},
                allow_pickle=True)
    return root


def _b64_png(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def labelme_shapes(d: Dsb) -> list[dict]:
    """Shapes of ``d``'s objects: every third a LabelMe ≥ 5.3 ``mask`` over its box, the others polygons (an
    object of several outlines: several polygons sharing a group_id), and a ``point`` that marks no region."""
    shapes = []
    for k, (mask, cat) in enumerate(zip(d.masks, d.categories, strict=True)):
        if k % 3 == 2:
            x, y, w, h = (int(v) for v in tight_box(mask))
            shapes.append({"label": cat, "points": [[x, y], [x + w - 1, y + h - 1]], "group_id": None,
                           "shape_type": "mask", "flags": {}, "mask": _b64_png(mask[y:y + h, x:x + w])})
            continue
        polys = mask_polygons(mask)
        for poly in polys:
            shapes.append({"label": cat, "points": np.reshape(poly, (-1, 2)).tolist(),
                           "group_id": 100 + k if len(polys) > 1 else None, "shape_type": "polygon", "flags": {}})
    shapes.append({"label": "centre", "points": [[3.0, 4.0]], "group_id": None, "shape_type": "point", "flags": {}})
    return shapes


def write_labelme(root: Path, images=None) -> Path:
    images = list(images or dsb())
    root.mkdir(parents=True, exist_ok=True)
    for d in images:
        shutil.copyfile(d.image, root / d.image.name)
        doc = {"version": "5.4.1", "flags": {}, "shapes": labelme_shapes(d), "imagePath": d.image.name,
               "imageData": None, "imageHeight": d.height, "imageWidth": d.width}
        (root / f"{d.key}.json").write_text(json.dumps(doc))
    return root


def write_coco(root: Path, images=None, *, boxes_only: bool = False) -> Path:
    """annotations.json + images/: polygons, compressed and uncompressed RLE in turn (``boxes_only``: no
    segmentation at all, a detector's dataset); categories with ids 3 and 7 to keep ids and names apart."""
    images = list(images or dsb())
    (root / "images").mkdir(parents=True, exist_ok=True)
    cat_ids = {"nucleus": 3, "cell": 7}
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]}
    for image_id, d in enumerate(images, 1):
        shutil.copyfile(d.image, root / "images" / d.image.name)
        coco["images"].append({"id": image_id, "file_name": d.image.name, "width": d.width, "height": d.height})
        for k, (mask, cat) in enumerate(zip(d.masks, d.categories, strict=True)):
            ann = {"id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": cat_ids[cat],
                   "bbox": list(tight_box(mask)), "area": int(mask.sum()), "iscrowd": 0}
            if not boxes_only:
                if k % 3 == 0:
                    ann["segmentation"] = mask_polygons(mask)
                elif k % 3 == 1:
                    ann["segmentation"] = encode_mask(mask)
                else:
                    runs = _uncompressed_counts(mask)
                    ann["segmentation"] = {"size": [d.height, d.width], "counts": runs}
            coco["annotations"].append(ann)
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths in column-major order, starting with a background run."""
    return rle_string_counts(encode_mask(mask)["counts"])


# ------------------------------------------------------------------------------------------ reading back
@dataclass
class Read:
    items: list[SourceImage]
    scan_problems: list[str]
    objects: dict[str, list[SourceObject]]
    read_problems: list[str]


def read_all(fmt: Format, src: Path, options: ReadOptions | None = None) -> Read:
    """Scan ``src`` and read every image, as the importer does (frames from read_frame)."""
    options = options or ReadOptions()
    items, problems = fmt.scan(src, options)
    objects, bad = {}, []
    for it in items:
        objs, p = fmt.read(it, read_frame(it.image), options)
        objects[it.key] = objs
        bad += p
    return Read(items, problems, objects, bad)


def decode(obj: SourceObject) -> np.ndarray:
    rle = {"size": obj.rle["size"], "counts": obj.rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def one_line_naming(problems: list[str], path: Path | str) -> bool:
    """Every problem is one line that names ``path`` and says the fix."""
    return bool(problems) and all("\n" not in p and str(path) in p and "Fix:" in p for p in problems)
