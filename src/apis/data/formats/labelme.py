"""``labelme``: one LabelMe json per image (``X.json`` with ``imagePath``, ``imageHeight``, ``imageWidth`` and
``shapes``).

Coordinates are pixels of the image as LabelMe shows it (EXIF orientation applied), over pixel edges;
``imageHeight`` / ``imageWidth`` must match that size. Shapes with the same ``label`` and ``group_id`` are ONE
object (a shape without ``group_id`` is an object alone):

* ``polygon`` (and ``oriented_rectangle``): rasterised with COCO's convention (:mod:`.polygons`);
* ``circle`` (centre, a rim point): its disc, as a polygon about a pixel a vertex;
* ``mask`` (LabelMe ≥ 5.3): a base64 PNG whose pixels start at the integer pixel of its first point and run
  to its second, both included, as LabelMe pastes it;
* ``rectangle``: an object of rectangles only is box-only (their enclosing box); beside other shapes it is
  filled as a polygon;
* ``line``, ``linestrip``, ``point``, ``points`` mark no region: they are left out and counted in the
  import's summary, so a file that also holds keypoints or measuring lines imports its regions.

A shape labelled ``__ignore__`` marks a region to ignore, not an object (LabelMe's own converters, labelme2coco
and labelme2voc, leave it out of the objects and paint it void): it is left out and counted, never a category.

The image is ``imagePath`` relative to the json; an image only embedded as ``imageData`` is refused with the
fix, as is an image in the json's folders that no json annotates (LabelMe writes a json only when saved: an
image without one was never annotated, not an image with no objects).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections import Counter
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from apis.data.formats.files import image_files, image_keys, stem_of
from apis.data.formats.polygons import circle_polygon, mask_rle, object_from_rle, polygons_rle, rle_union
from apis.data.sources import Format, ImageFrame, Problems, ReadOptions, SourceImage, SourceObject

POLYGONS = ("polygon", "oriented_rectangle")
REGIONS = (*POLYGONS, "rectangle", "circle", "mask")
NOT_REGIONS = ("line", "linestrip", "point", "points")
#: LabelMe's label for regions to ignore (the first line of its examples' labels.txt, class id -1).
IGNORE_LABEL = "__ignore__"
#: Files :func:`detect` opens to see whether a folder's jsons are LabelMe's.
DETECT_SAMPLE = 5


def _load(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path}: not a readable json ({e}). Fix: save it again from LabelMe, or remove it"
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return None, f"{path}: not a LabelMe file (no 'shapes' list). Fix: move it out of the folder"
    return data, None


def detect(src: Path) -> bool:
    """A folder whose first json files (:data:`DETECT_SAMPLE`, in order) are LabelMe's (``shapes`` and
    ``imagePath``)."""
    src = Path(src)
    if not src.is_dir():
        return False
    jsons = sorted(src.rglob("*.json"))[:DETECT_SAMPLE]
    for path in jsons:
        data, problem = _load(path)
        if problem is not None or "imagePath" not in data:
            return False
    return bool(jsons)


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], Problems]:
    """One image per LabelMe json (``annotation``). Problems: a json that
    is not LabelMe's, an image not found or only embedded, two jsons of one image, an image no json annotates."""
    src = Path(src)
    problems: Problems = []
    found: dict[Path, tuple[Path, Path]] = {}  # resolved image → (json, image)
    for path in sorted(src.rglob("*.json")):
        data, problem = _load(path)
        if problem is not None:
            problems.append(problem)
            continue
        name = data.get("imagePath")
        image = path.parent / name.replace("\\", "/") if isinstance(name, str) and name.strip() else None
        if image is not None and not image.is_file():
            # A folder moved after labelling (or an absolute path from another machine): the image of the json's
            # own name beside it is the one it was saved for.
            beside = path.parent / PureWindowsPath(name).name
            if beside.stem == path.stem and beside.is_file():
                image = beside
        if image is None or not image.is_file():
            embedded = "the image exists only embedded in it as imageData" if data.get("imageData") else (
                f"imagePath {name!r} is not found" if image is not None else "it names no imagePath")
            problems.append(f"{path}: {embedded}. Fix: save the image as a file beside the json and set imagePath to "
                            "its name (LabelMe: File > Save with 'Save image data' off, keeping the image file)")
            continue
        key = image.resolve()
        if key in found:
            problems.append(f"{found[key][0]} and {path}: two LabelMe files of one image {image}. Fix: merge their "
                            "shapes into one, remove the other")
            continue
        found[key] = (path, image)
    for folder in sorted({image.parent for _, image in found.values()}):
        for image in image_files(folder):
            if image.resolve() not in found:
                problems.append(f"{image}: no LabelMe json names it: it was never annotated. Fix: open it in "
                                "LabelMe and save (with no shapes it imports with no objects), or remove it")
    stems = [stem_of(path, src) for path, _ in found.values()]
    keys = image_keys(stems)
    items = [SourceImage(keys[stem], image, annotation=path)
             for stem, (path, image) in zip(stems, found.values(), strict=True)]
    return sorted(items, key=lambda it: it.key), problems


def _points(shape: dict) -> list[tuple[float, float]] | None:
    raw = shape.get("points")
    if not isinstance(raw, list):
        return None
    out = []
    for p in raw:
        if (not isinstance(p, (list, tuple)) or len(p) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p)):
            return None
        out.append((float(p[0]), float(p[1])))
    return out


def _pasted_mask(shape: dict, points: list[tuple[float, float]], width: int, height: int) -> tuple[np.ndarray | None,
                                                                                                   str | None]:
    """The full-image mask of a ``mask`` shape, or a problem (without the file: the caller adds it)."""
    try:
        raw = base64.b64decode(shape.get("mask") or "", validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            patch = np.asarray(im)
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        return None, f"its 'mask' is not a base64 PNG ({e})"
    patch = (patch[..., :3].max(axis=2) if patch.ndim == 3 else patch) > 0
    (x1, y1), (x2, y2) = ((int(x), int(y)) for x, y in points)
    if patch.shape != (y2 - y1 + 1, x2 - x1 + 1):
        return None, (f"its mask is {patch.shape[1]}x{patch.shape[0]}, its points span {x2 - x1 + 1}x{y2 - y1 + 1} "
                      "pixels")
    if x1 < 0 or y1 < 0 or x2 >= width or y2 >= height:
        return None, f"its mask runs outside the {width}x{height} image (pixels {x1},{y1} to {x2},{y2})"
    mask = np.zeros((height, width), bool)
    mask[y1:y2 + 1, x1:x2 + 1] = patch
    return mask, None


def _check_size(data: dict, path: Path, frame: ImageFrame) -> str | None:
    w, h = data.get("imageWidth"), data.get("imageHeight")
    W, H = frame.shown
    if not (isinstance(w, int) and isinstance(h, int)):
        return (f"{path}: imageWidth / imageHeight missing or not integers ({w!r}, {h!r}). Fix: open and save it in "
                "LabelMe")
    if (w, h) != (W, H):
        turned = (" (the json holds the size before EXIF rotation)" if frame.oriented and (w, h) == frame.stored
                  else "")
        return (f"{path}: imageWidth x imageHeight {w}x{h} differ from {frame.path}'s {W}x{H} as shown (EXIF "
                f"orientation applied, as LabelMe does){turned}. Fix: point imagePath at the image it was drawn on")
    return None


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], Problems]:
    """The objects of one LabelMe json, in the order of their first shape (module doc)."""
    path = item.annotation
    data, problem = _load(path)
    if problem is None:
        problem = _check_size(data, path, frame)
    if problem is not None:
        return [], [problem]
    width, height = frame.shown
    groups: dict[Any, list[tuple[int, str, list[tuple[float, float]], dict]]] = {}
    left_out: Counter = Counter()
    problems: Problems = []
    for i, shape in enumerate(data["shapes"]):
        where = f"{path}: shapes[{i}]"
        if not isinstance(shape, dict):
            problems.append(f"{where} is not an object. Fix: remove it")
            continue
        kind = shape.get("shape_type") or "polygon"  # LabelMe before 4 wrote no shape_type: polygons only
        if kind in NOT_REGIONS:
            left_out[f"LabelMe {kind} shapes left out (they mark no region)"] += 1
            continue
        if isinstance(shape.get("label"), str) and shape["label"].strip() == IGNORE_LABEL:
            left_out[f"LabelMe {IGNORE_LABEL} regions left out (regions to ignore, not objects)"] += 1
            continue
        label, points, group = shape.get("label"), _points(shape), shape.get("group_id")
        need = {"rectangle": 2, "circle": 2, "mask": 2, "oriented_rectangle": 4}.get(kind, 3)
        if kind not in REGIONS:
            problems.append(f"{where}: shape_type {kind!r} is not one apis reads ({', '.join(REGIONS)}; "
                            f"{', '.join(NOT_REGIONS)} are left out). Fix: redraw it as a polygon, or remove it")
        elif not isinstance(label, str) or not label.strip():
            problems.append(f"{where}: has no label. Fix: name its class in LabelMe")
        elif points is None or len(points) < need or (kind != "polygon" and len(points) != need):
            problems.append(f"{where}: a {kind} needs {need}{' or more' if kind == 'polygon' else ''} [x, y] points, "
                            f"it has {shape.get('points')!r:.80}. Fix: redraw it")
        elif group is not None and (isinstance(group, bool) or not isinstance(group, int)):
            problems.append(f"{where}: group_id {group!r} is not an integer. Fix: set it in LabelMe, or clear it")
        else:
            key = (label.strip(), group) if group is not None else ("", i)
            groups.setdefault(key, []).append((i, kind, points, shape))
    objects: list[SourceObject] = []
    for shapes in groups.values():
        obj, problem = _group_object(shapes, path, width, height)
        if problem is not None:
            problems.append(problem)
        else:
            objects.append(obj)
    if problems:
        return [], problems
    if hasattr(options, "tally"):
        for what, n in left_out.items():
            options.tally[(item.key, what)] += n
    return objects, []


def _group_object(shapes: list, path: Path, width: int, height: int) -> tuple[SourceObject | None, str | None]:
    """The one object of the shapes of one (label, group_id)."""
    first = shapes[0][0]
    label = str(shapes[0][3]["label"]).strip()
    where = f"{path}: shapes[{first}]" + (f" (group {shapes[0][3]['group_id']}, {len(shapes)} shapes)"
                                          if len(shapes) > 1 else "")
    if all(kind == "rectangle" for _, kind, _, _ in shapes):
        xs = [x for _, _, pts, _ in shapes for x, _ in pts]
        ys = [y for _, _, pts, _ in shapes for _, y in pts]
        x0, y0, x1, y1 = max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), float(width)), min(max(ys), float(height))
        if x1 <= x0 or y1 <= y0:
            return None, f"{where}: the rectangle has no area inside the {width}x{height} image. Fix: redraw it"
        return SourceObject.from_box((x0, y0, x1 - x0, y1 - y0), label, f"{path} shapes[{first}]"), None
    rles = []
    for i, kind, pts, shape in shapes:
        if kind == "mask":
            mask, problem = _pasted_mask(shape, pts, width, height)
            if problem is not None:
                return None, f"{path}: shapes[{i}]: {problem}. Fix: redraw the mask, or remove the shape"
            rles.append(mask_rle(mask))
            continue
        if kind == "circle":
            (cx, cy), (px, py) = pts
            poly = circle_polygon(cx, cy, math.hypot(px - cx, py - cy))
        elif kind == "rectangle":
            (ax, ay), (bx, by) = pts
            poly = [ax, ay, bx, ay, bx, by, ax, by]
        else:
            poly = [v for p in pts for v in p]
        rles.append(polygons_rle([poly], height, width))
    obj = object_from_rle(rle_union(rles), label, f"{path} shapes[{first}]")
    if obj is None:
        return None, f"{where}: covers no pixel of the {width}x{height} image. Fix: redraw it larger, or remove it"
    return obj, None


FORMAT = Format(
    name="labelme", detect=detect, scan=scan, read=read,
    help="LabelMe: X.json beside each image (polygons, rectangles as boxes, circles, masks; group_id joins shapes)",
)
