"""Read, validate, summarise and write COCO instance-segmentation files.

:func:`load_coco` turns a COCO json file into a :class:`~apis.data.records.CocoDataset` or refuses it
with a :class:`DatasetError` that lists *every* problem found, each naming the file, the record and
the fix, so a team can repair its export in one pass instead of one error at a time.

Frames and units: COCO files store boxes as ``[x, y, w, h]`` floats in pixels of the image as a viewer
shows it (EXIF orientation applied); the records hold ``xyxy`` boxes in the same frame
(:func:`apis.data.records.xywh_to_xyxy`). Masks stay in the file's encoding (polygons or RLE) and are
decoded on demand (:func:`apis.data.records.decode_segmentation`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from apis.atomic import write_json_atomic
from apis.data.images import ImageReadError, image_size
from apis.data.records import Category, CocoDataset, ImageRecord, Instance, xywh_to_xyxy, xyxy_to_xywh

#: How far (pixels) a box may overshoot the image before it is refused. Exporters that round or
#: convert between pixel conventions overshoot by up to one pixel; such boxes are clipped.
BOX_TOLERANCE = 1.0

#: COCO's object-size rule (on the annotation ``area``, pixels²): small < 32², medium < 96², else large.
SMALL_AREA = 32.0**2
MEDIUM_AREA = 96.0**2

#: At most this many problems are spelled out in a DatasetError message (all are in ``problems``);
#: beyond that a terminal message stops being readable and the first ones show the pattern.
MAX_LISTED_PROBLEMS = 200


class DatasetError(ValueError):
    """A COCO dataset that apis refuses to load.

    ``problems`` holds one line per problem, each naming the file, the record (for example
    ``annotation id 17 (image id 3)``) and the fix. The message lists them all (up to
    :data:`MAX_LISTED_PROBLEMS`).
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(_format_problems(self.problems))

    def __reduce__(self):  # keep ``problems`` intact when pickled (e.g. from a DataLoader worker)
        return (type(self), (self.problems,))


def _format_problems(problems: list[str]) -> str:
    n = len(problems)
    head = f"COCO dataset refused: {n} problem{'s' if n != 1 else ''} found; fix them and load again:"
    lines = [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if n > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {n - MAX_LISTED_PROBLEMS} more (DatasetError.problems lists all)")
    return "\n".join([head, *lines])


class _Problems:
    """Collects problems for one json file so that all of them are reported together."""

    def __init__(self, json_path: Path):
        self.json_path = json_path
        self.items: list[str] = []

    def add(self, record: str, what: str, fix: str) -> None:
        self.items.append(f"{self.json_path}: {record}: {what}. Fix: {fix}")

    def raise_if_any(self) -> None:
        if self.items:
            raise DatasetError(self.items)


class _Invalid(Exception):
    """One field of one record is wrong; carries what is wrong and how to fix it."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what = what
        self.fix = fix


# ---------------------------------------------------------------------------------------------------
# Loading


def load_coco(
    json_path: str | os.PathLike, image_root: str | os.PathLike | None = None, check_images: bool = True
) -> CocoDataset:
    """Read and validate a COCO instances file.

    ``image_root`` is the folder that ``file_name`` entries are relative to. By default it is the json's
    folder, except when the first image is not found there but a sibling ``images/`` folder exists: then
    that folder is used. With ``check_images`` every image file must exist, be readable, and have the
    width and height the json states (after EXIF orientation, i.e. as a viewer shows it).

    Kept as the file has them: image order, and annotation order within each image. ``iscrowd: 1``
    annotations become ``Instance(iscrowd=True)`` (``ImageRecord.pool`` leaves them out). A missing
    ``segmentation`` (box-only data), ``null`` or ``[]`` gives ``segmentation=None``. A missing ``area``
    falls back to the box area. Boxes overshooting the image by at most :data:`BOX_TOLERANCE` pixels
    are clipped to it.

    Raises :class:`DatasetError` listing every problem found; nothing is returned partially.
    """
    json_path = Path(json_path)
    data = _read_json(json_path)
    _check_top_level(json_path, data)

    problems = _Problems(json_path)
    categories = _parse_categories(data["categories"], problems)
    images = _parse_images(data["images"], problems)
    root = Path(image_root) if image_root is not None else _default_image_root(json_path, images)
    if check_images:
        _check_image_files(images, root, problems)
    instances = _parse_annotations(
        data["annotations"], {im.id: im for im in images}, {c.id for c in categories}, problems
    )
    problems.raise_if_any()

    records = [
        ImageRecord(im.id, im.file_name, im.width, im.height, tuple(instances.get(im.id, ())))
        for im in images
    ]
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return CocoDataset(json_path=json_path, image_root=root, images=records, categories=categories,
                       info=info)


def _read_json(json_path: Path) -> Any:
    def refuse(what: str, fix: str) -> DatasetError:
        return DatasetError([f"{json_path}: {what}. Fix: {fix}"])

    try:
        raw = json_path.read_bytes()
    except FileNotFoundError:
        raise refuse("file not found", "check the path to the COCO json file") from None
    except OSError as e:
        raise refuse(f"cannot read the file ({e.strerror or e})",
                     "check the path and its permissions") from None
    if not raw.strip():
        raise refuse("the file is empty", "export the COCO json again")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise refuse("not a JSON file (not UTF-8 text)", "pass the COCO annotation json, not an image "
                     "or archive") from None
    except json.JSONDecodeError as e:
        # A parse error at the very end of the text means the writer stopped early.
        if e.pos >= len(e.doc.rstrip()):
            raise refuse(f"the JSON ends early at line {e.lineno}, column {e.colno} (truncated file?)",
                         "export or copy the file again; the writer probably stopped early") from None
        raise refuse(f"not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}",
                     "repair the JSON syntax there or export the file again") from None


def _check_top_level(json_path: Path, data: Any) -> None:
    problems = _Problems(json_path)
    if not isinstance(data, dict):
        problems.add("top level", f"is a JSON {_json_type(data)}, not an object",
                     'a COCO file is an object with "images", "annotations" and "categories" lists')
        problems.raise_if_any()
    for key in ("images", "annotations", "categories"):
        if key not in data:
            problems.add("top level", f'has no "{key}" list',
                         f'add "{key}": [...] (an empty list is allowed for "annotations")')
        elif not isinstance(data[key], list):
            problems.add("top level", f'"{key}" is a JSON {_json_type(data[key])}, not a list',
                         f'make "{key}" a list of objects')
    problems.raise_if_any()


def _parse_categories(entries: list, problems: _Problems) -> list[Category]:
    categories: list[Category] = []
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        record = f"categories[{i}]"
        if not isinstance(entry, dict):
            problems.add(record, f"is a JSON {_json_type(entry)}, not an object",
                         'write {"id": ..., "name": ...}')
            continue
        cat_id = _as_int(entry.get("id"))
        if cat_id is None:
            problems.add(record, f"has no integer id (got {entry.get('id')!r})",
                         "give every category an integer id")
            continue
        record = f"category id {cat_id}"
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.add(record, f"has no name (got {name!r})", "give every category a non-empty string name")
            continue
        record = f"category id {cat_id} '{name}'"
        if cat_id in seen:
            problems.add(record, "duplicates an earlier category id", "give every category its own id")
            continue
        seen.add(cat_id)
        categories.append(Category(cat_id, name))
    return categories


@dataclass(frozen=True)
class _ImageEntry:
    id: int
    file_name: str
    width: int
    height: int

    @property
    def record(self) -> str:
        return f"image id {self.id} '{self.file_name}'"


def _parse_images(entries: list, problems: _Problems) -> list[_ImageEntry]:
    images: list[_ImageEntry] = []
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        record = f"images[{i}]"
        if not isinstance(entry, dict):
            problems.add(record, f"is a JSON {_json_type(entry)}, not an object",
                         'write {"id": ..., "file_name": ..., "width": ..., "height": ...}')
            continue
        image_id = _as_int(entry.get("id"))
        file_name = entry.get("file_name")
        if image_id is None:
            problems.add(f"{record} '{file_name}'", f"has no integer id (got {entry.get('id')!r})",
                         "give every image an integer id")
            continue
        record = f"image id {image_id}"
        if not isinstance(file_name, str) or not file_name:
            problems.add(record, f"has no file_name (got {file_name!r})",
                         "give the image file's path relative to the image folder")
            continue
        record = f"image id {image_id} '{file_name}'"
        if image_id in seen:
            problems.add(record, "duplicates an earlier image id", "give every image its own id")
            continue
        seen.add(image_id)
        width, height = _as_int(entry.get("width")), _as_int(entry.get("height"))
        if width is None or height is None or width <= 0 or height <= 0:
            problems.add(record, f"width/height must be positive integers (got {entry.get('width')!r}, "
                         f"{entry.get('height')!r})", "write the image's size in pixels as a viewer shows it")
            continue
        images.append(_ImageEntry(image_id, file_name, width, height))
    return images


def _default_image_root(json_path: Path, images: list[_ImageEntry]) -> Path:
    """The json's folder, or its ``images/`` subfolder when the first image is only found there."""
    folder = json_path.parent
    nested = folder / "images"
    if images and not (folder / images[0].file_name).exists() and nested.is_dir():
        return nested
    return folder


def _check_image_files(images: list[_ImageEntry], root: Path, problems: _Problems) -> None:
    if not root.is_dir():
        problems.add("image folder", f"{root} does not exist or is not a folder",
                     "pass image_root= the folder that the file_name entries are relative to")
        return
    for im in images:
        path = root / im.file_name
        try:
            width, height = image_size(path)
        except ImageReadError as e:
            missing = not path.exists()
            problems.add(im.record, f"image file {path} {'not found' if missing else 'is unreadable'}"
                         + ("" if missing else f" ({e})"),
                         "put the image there, or pass image_root= the folder holding it" if missing
                         else "replace the file with a readable PNG or JPEG")
            continue
        if (width, height) != (im.width, im.height):
            # A json size that is the file's size transposed usually means the exporter ignored EXIF.
            hint = (" (the json seems to hold the size before EXIF rotation)"
                    if (im.width, im.height) == (height, width) else "")
            problems.add(im.record, f"json size {im.width}x{im.height} differs from the file's "
                         f"{width}x{height} (width x height, EXIF orientation applied){hint}",
                         f"write width={width}, height={height}, or point file_name at the right image")


def _parse_annotations(
    entries: list, images: dict[int, _ImageEntry], category_ids: set[int], problems: _Problems
) -> dict[int, list[Instance]]:
    """Instances per image id, in file order; records every problem of every annotation."""
    by_image: dict[int, list[Instance]] = {}
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.add(f"annotations[{i}]", f"is a JSON {_json_type(entry)}, not an object",
                         "write each annotation as an object")
            continue
        instance = _parse_annotation(i, entry, images, category_ids, seen, problems)
        if instance is not None:
            by_image.setdefault(instance.image_id, []).append(instance)
    return by_image


def _parse_annotation(
    index: int, entry: dict, images: dict[int, _ImageEntry], category_ids: set[int], seen: set[int],
    problems: _Problems,
) -> Instance | None:
    ann_id = _as_int(entry.get("id"))
    image_id = _as_int(entry.get("image_id"))
    name = f"annotation id {ann_id}" if ann_id is not None else f"annotations[{index}]"
    record = f"{name} (image id {image_id if image_id is not None else entry.get('image_id')!r})"
    ok = True

    def bad(what: str, fix: str) -> None:
        nonlocal ok
        ok = False
        problems.add(record, what, fix)

    if ann_id is None:
        bad(f"has no integer id (got {entry.get('id')!r})", "give every annotation an integer id")
    elif ann_id in seen:
        bad("duplicates an earlier annotation id", "give every annotation its own id")
    else:
        seen.add(ann_id)
    image = images.get(image_id) if image_id is not None else None
    if image is None:
        bad("refers to an image id that is not in \"images\"",
            "fix image_id, add the image, or drop the annotation")
    category_id = _as_int(entry.get("category_id"))
    if category_id is None or category_id not in category_ids:
        bad(f"category_id {entry.get('category_id')!r} is not in \"categories\"",
            "fix category_id or add the category")

    parsed: dict[str, Any] = {}
    for key, parse in (("box", lambda: _parse_box(entry.get("bbox"), image)),
                       ("iscrowd", lambda: _parse_iscrowd(entry.get("iscrowd", 0))),
                       ("segmentation", lambda: _parse_segmentation(entry.get("segmentation"), image)),
                       ("area", lambda: _parse_area(entry.get("area")))):
        try:
            parsed[key] = parse()
        except _Invalid as e:
            bad(e.what, e.fix)
    if not ok:
        return None
    box = parsed["box"]
    area = parsed["area"] if parsed["area"] is not None else (box[2] - box[0]) * (box[3] - box[1])
    return Instance(id=ann_id, image_id=image_id, category_id=category_id, box=box, area=area,
                    iscrowd=parsed["iscrowd"], segmentation=parsed["segmentation"])


def _parse_box(raw: Any, image: _ImageEntry | None) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` → xyxy in image pixels, clipped to the image when within tolerance."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 4 or not all(_is_number(v) for v in raw):
        raise _Invalid(f"bbox must be [x, y, w, h] (4 numbers), got {raw!r}", "write the box as [x, y, w, h]")
    x, y, w, h = (float(v) for v in raw)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise _Invalid(f"bbox {raw!r} has non-finite numbers", "write finite numbers or drop the annotation")
    if w <= 0 or h <= 0:
        raise _Invalid(f"bbox {raw!r} has zero or negative width/height",
                       "fix the box or drop the annotation")
    x0, y0, x1, y1 = xywh_to_xyxy((x, y, w, h))
    if image is None:  # bounds unknown; the unknown image is reported on its own
        return (x0, y0, x1, y1)
    W, H = image.width, image.height
    tol = BOX_TOLERANCE
    outside = x0 < -tol or y0 < -tol or x1 > W + tol or y1 > H + tol
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(W)), min(y1, float(H)))
    if outside or clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise _Invalid(f"bbox {raw!r} (x, y, w, h) lies outside the {W}x{H} image "
                       f"(more than {tol:g} px beyond its edge)",
                       "clip the box to the image, or check the image's width/height")
    return clipped


def _parse_iscrowd(raw: Any) -> bool:
    if raw is None:
        return False
    if raw in (0, 1) and (isinstance(raw, (bool, int)) or (isinstance(raw, float) and raw.is_integer())):
        return bool(raw)
    raise _Invalid(f"iscrowd must be 0 or 1, got {raw!r}", "write iscrowd: 0 (object) or 1 (crowd region)")


def _parse_area(raw: Any) -> float | None:
    if raw is None:
        return None
    if not _is_number(raw) or not math.isfinite(float(raw)) or float(raw) < 0:
        raise _Invalid(f"area must be a finite number >= 0, got {raw!r}",
                       "write the mask area in pixels², or leave it out to use the box area")
    return float(raw)


def _parse_segmentation(raw: Any, image: _ImageEntry | None) -> Any:
    """Check a polygon list or RLE dict and return it unchanged (``None`` / ``[]`` → no mask)."""
    if raw is None or (isinstance(raw, list) and not raw):
        return None
    if isinstance(raw, list):
        _check_polygons(raw)
        return raw
    if isinstance(raw, dict):
        _check_rle(raw, image)
        return raw
    raise _Invalid(f"segmentation is a JSON {_json_type(raw)}; expected a list of polygons or an RLE object",
                   'write [[x1, y1, x2, y2, ...], ...] or {"size": [h, w], "counts": ...}')


def _check_polygons(polygons: list) -> None:
    for k, poly in enumerate(polygons):
        if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
            raise _Invalid(f"segmentation polygon {k} is not a list of numbers (got {_short(poly)})",
                           "write polygons as [[x1, y1, x2, y2, ...], ...]")
        if len(poly) < 6 or len(poly) % 2:
            raise _Invalid(f"segmentation polygon {k} has {len(poly)} coordinates; a polygon needs an even "
                           "number, at least 6 (3 x, y points)", "fix or drop that polygon")
        if not all(math.isfinite(float(v)) for v in poly):
            raise _Invalid(f"segmentation polygon {k} has non-finite coordinates", "fix or drop that polygon")


def _check_rle(rle: dict, image: _ImageEntry | None) -> None:
    if "size" not in rle or "counts" not in rle:
        missing = " and ".join(k for k in ("size", "counts") if k not in rle)
        raise _Invalid(f"segmentation RLE has no {missing}", 'write {"size": [h, w], "counts": ...}')
    size = rle["size"]
    if not isinstance(size, list) or len(size) != 2 or any(_as_int(v) is None for v in size):
        raise _Invalid(f"segmentation RLE size must be [height, width], got {size!r}", "write size: [h, w]")
    h, w = (_as_int(v) for v in size)
    if image is not None and (h, w) != (image.height, image.width):
        raise _Invalid(f"segmentation RLE size [{h}, {w}] differs from the image's [height, width] "
                       f"[{image.height}, {image.width}]",
                       "encode the mask at the image's size (RLE size is [height, width])")
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(_as_int(c) is not None and _as_int(c) >= 0 for c in counts):
            raise _Invalid("segmentation RLE counts must be non-negative integers", "re-encode the mask")
        total = sum(_as_int(c) for c in counts)
    elif isinstance(counts, str):
        try:
            total = sum(rle_string_counts(counts))
        except ValueError as e:
            raise _Invalid(f"segmentation RLE counts string is corrupt ({e})", "re-encode the mask") from None
    else:
        raise _Invalid(f"segmentation RLE counts is a JSON {_json_type(counts)}; expected a list or a string",
                       "re-encode the mask with pycocotools")
    # Runs that do not cover the image exactly decode to a shifted or garbage mask, silently.
    if total != h * w:
        raise _Invalid(f"segmentation RLE runs cover {total} pixels, not {h}x{w} = {h * w}",
                       "re-encode the mask at the image's size")


def rle_string_counts(counts: str) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools' ``rleFrString``) into its run lengths.

    Runs alternate background/object starting with background, in column-major pixel order.
    Raises ValueError for characters outside the alphabet, a cut-off value or a negative run.
    """
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("the string ends inside a run length")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} at {p} is not in the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend: values after the third are deltas
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError(f"run {len(runs)} is negative")
        runs.append(x)
    return runs


def _as_int(v: Any) -> int | None:
    """An integer, or a float holding one (some exporters write 3.0); bools and the rest are None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json_type(v: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if v is None else names.get(type(v), type(v).__name__)


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------
# Summary


@dataclass(frozen=True)
class DatasetSummary:
    """Counts describing a dataset. Crowd regions are counted apart and left out of everything else.

    ``sizes`` uses COCO's rule on the annotation ``area`` (pixels²): small < 32², medium < 96², else
    large. ``has_masks`` is True when every non-crowd instance has a segmentation (so a mask oracle can
    answer for all of them); ``instances_with_mask`` says how many do.
    """

    images: int
    instances: int
    crowd: int
    per_category: dict[str, int]
    sizes: dict[str, int]
    instances_per_image_min: int
    instances_per_image_mean: float
    instances_per_image_max: int
    instances_with_mask: int

    @property
    def has_masks(self) -> bool:
        return self.instances > 0 and self.instances_with_mask == self.instances


def size_class(area: float) -> str:
    """COCO's size class of an area in pixels²: ``small``, ``medium`` or ``large``."""
    if area < SMALL_AREA:
        return "small"
    return "medium" if area < MEDIUM_AREA else "large"


def summarize(dataset: CocoDataset) -> DatasetSummary:
    """Count images, instances, crowd regions, categories, sizes and masks of ``dataset``."""
    names = _category_labels(dataset.categories)
    per_category = {names[c.id]: 0 for c in dataset.categories}
    sizes = {"small": 0, "medium": 0, "large": 0}
    with_mask = 0
    for inst in dataset.instances():
        per_category[names[inst.category_id]] += 1
        sizes[size_class(inst.area)] += 1
        with_mask += inst.segmentation is not None
    per_image = [len(im.pool) for im in dataset.images]
    n = sum(per_image)
    return DatasetSummary(
        images=len(dataset.images),
        instances=n,
        crowd=sum(len(im.instances) - len(im.pool) for im in dataset.images),
        per_category=per_category,
        sizes=sizes,
        instances_per_image_min=min(per_image, default=0),
        instances_per_image_mean=n / len(per_image) if per_image else 0.0,
        instances_per_image_max=max(per_image, default=0),
        instances_with_mask=with_mask,
    )


def _category_labels(categories: list[Category]) -> dict[int, str]:
    """Category id → display name; names shared by several ids get the id appended to stay distinct."""
    counts: dict[str, int] = {}
    for c in categories:
        counts[c.name] = counts.get(c.name, 0) + 1
    return {c.id: c.name if counts[c.name] == 1 else f"{c.name} (id {c.id})" for c in categories}


def format_summary(summary: DatasetSummary) -> list[Table]:
    """Two rich tables: an overview, and instances per category (with share of all instances)."""
    overview = Table(title="Dataset", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    overview.add_row("images", str(summary.images))
    overview.add_row("instances", str(summary.instances))
    overview.add_row("crowd regions (not used)", str(summary.crowd))
    overview.add_row("instances per image (min / mean / max)",
                     f"{summary.instances_per_image_min} / {summary.instances_per_image_mean:.2f} / "
                     f"{summary.instances_per_image_max}")
    for name, count in summary.sizes.items():
        overview.add_row(f"{name} objects", str(count))
    overview.add_row("instances with masks", f"{summary.instances_with_mask} / {summary.instances}")

    per_category = Table(title="Instances per category")
    per_category.add_column("category")
    per_category.add_column("instances", justify="right")
    per_category.add_column("share", justify="right")
    for name, count in summary.per_category.items():
        share = count / summary.instances if summary.instances else 0.0
        per_category.add_row(name, str(count), f"{share:.1%}")
    return [overview, per_category]


# ---------------------------------------------------------------------------------------------------
# Writing


def dataset_to_dict(dataset: CocoDataset) -> dict:
    """The COCO json object of ``dataset`` (boxes back to ``[x, y, w, h]``; crowd regions kept).

    Instances without a mask are written without a ``segmentation`` key, as box-only data is.
    """

    annotations = []
    for im in dataset.images:
        for a in im.instances:
            ann = {"id": a.id, "image_id": a.image_id, "category_id": a.category_id,
                   "bbox": xyxy_to_xywh(a.box), "area": a.area, "iscrowd": int(a.iscrowd)}
            if a.segmentation is not None:
                ann["segmentation"] = a.segmentation
            annotations.append(ann)
    out: dict[str, Any] = {
        "images": [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
                   for im in dataset.images],
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name} for c in dataset.categories],
    }
    if dataset.info:
        out["info"] = dataset.info
    return out
def write_coco(dataset_dict: Mapping[str, Any], path: str | os.PathLike, indent: int | None = None) -> Path:
    """Write ``dataset_dict`` as json to ``path`` atomically and return the path (:mod:`apis.atomic`):
    a reader (or a crash) sees the old file or the new one, never half of one. NaN and infinities are
    refused (ValueError) because they are not JSON and other tools cannot read them."""
    return write_json_atomic(dict(dataset_dict), path, indent=indent)


