"""``coco``: a COCO instances json and its images, validated by :func:`apis.data.coco.load_coco`.

The json is SRC itself, or in the folder SRC: ``annotations/*.json`` (COCO's own layout, its images in a
sibling folder such as ``train2017/``), ``annotations.json``, any top-level ``*.json`` holding ``"images"``
and ``"annotations"`` lists, or Roboflow's ``SPLIT/_annotations.coco.json`` beside each split's images;
where ``instances_*.json`` files are among them only those are read (COCO's ``person_keypoints_*`` would repeat
the people, ``captions_*`` hold no objects). The image folder is found from the first image's ``file_name``.

Each annotation becomes one object in the frame COCO uses (the image as shown): a polygon or RLE mask
re-encoded as compressed RLE with its tight box, an annotation without ``segmentation`` a box-only object
(a COCO with no segmentation at all is a boxes-only dataset), ``iscrowd: 1`` kept as a crowd region.
Categories go by name; two categories of one name are refused, since their objects would merge.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pycocotools import mask as mask_utils

from apis.data.coco import DatasetError, load_coco
from apis.data.formats.files import image_keys
from apis.data.formats.polygons import object_from_rle, polygons_rle
from apis.data.records import ImageRecord
from apis.data.sources import Format, ImageFrame, Problems, ReadOptions, SourceImage, SourceObject

_IMAGES = re.compile(rb'"images"\s*:\s*\[')
_ANNOTATIONS = re.compile(rb'"annotations"\s*:\s*\[')
_FILE_NAME = re.compile(rb'"file_name"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class CocoRecord:
    """One image of a COCO file, the file's category names by id, and the file."""

    image: ImageRecord
    names: dict[int, str]
    json: Path


def looks_coco(path: Path) -> bool:
    """Whether the json file ``path`` has ``"images"`` and ``"annotations"`` lists, found in its text without
    parsing it (a COCO file may be hundreds of MB; the scan parses it once)."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return False
    return bool(_IMAGES.search(raw) and _ANNOTATIONS.search(raw))


def coco_files(src: Path) -> list[Path]:
    """The COCO json files of ``src`` (module doc): ``[src]`` for a json file."""
    src = Path(src)
    if src.is_file():
        return [src] if src.suffix.lower() == ".json" and looks_coco(src) else []
    if not src.is_dir():
        return []
    candidates = sorted((src / "annotations").glob("*.json")) if (src / "annotations").is_dir() else []
    candidates += sorted(src.glob("*.json"))
    # Roboflow's COCO export: one folder per split, its _annotations.coco.json beside the images.
    candidates += sorted(src.glob("*/_annotations.coco.json"))
    found = [p for p in dict.fromkeys(candidates) if looks_coco(p)]
    instances = [p for p in found if p.name.startswith("instances_")]
    return instances or found


def detect(src: Path) -> bool:
    return bool(coco_files(src))


def _image_root(json_path: Path, src: Path) -> Path | None:
    """The folder the json's ``file_name`` entries are relative to: the first place its first image is found."""
    match = _FILE_NAME.search(json_path.read_bytes())
    if match is None:
        return json_path.parent
    try:
        first = PurePosixPath(str(json.loads(b'"' + match.group(1) + b'"')).replace("\\", "/"))
    except ValueError:
        return json_path.parent  # load_coco names the broken file
    split = json_path.stem.removeprefix("instances_")
    # The json's folder, and above COCO's annotations/ folder (instances_val2017.json → ../val2017/).
    bases = [src] if src.is_dir() else []
    bases += [json_path.parent] + ([json_path.parent.parent] if json_path.parent.name == "annotations" else [])
    tries = [t for b in dict.fromkeys(bases) for t in (b, b / "images", b / split, b / "images" / split)]
    tries += [p for b in dict.fromkeys(bases) for p in sorted(b.iterdir()) if p.is_dir()]
    return next((root for root in tries if (root / first).is_file()), None)


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], Problems]:
    """One :class:`SourceImage` per image of every COCO file (``annotation`` the json, ``record`` a
    :class:`CocoRecord`); problems: load_coco's (every one, each naming the file and record), images not found,
    two categories of one name, one image in two files."""
    src = Path(src)
    files = coco_files(src)
    if not files:
        return [], [f"{src}: no COCO json (with \"images\" and \"annotations\") here or in annotations/. Fix: pass the "
                    "json file itself"]
    problems: Problems = []
    found: list[tuple[str, Path, CocoRecord]] = []
    seen: dict[Path, Path] = {}
    stems = [f.stem for f in files]
    for json_path in files:
        # Several files: keys start with the file's stem (its folder's name too where stems repeat: Roboflow).
        prefix = json_path.stem if stems.count(json_path.stem) == 1 else f"{json_path.parent.name}/{json_path.stem}"
        root = _image_root(json_path, src)
        if root is None:
            problems.append(f"{json_path}: its first image is not found beside it, in images/, or in a folder of "
                            f"{src}. Fix: put the images in {json_path.parent / 'images'}")
            continue
        try:
            dataset = load_coco(json_path, image_root=root)
        except DatasetError as e:
            problems += e.problems
            continue
        names = dataset.category_names
        by_name: dict[str, int] = {}
        for cid, name in names.items():
            if name in by_name:
                problems.append(f"{json_path}: categories {by_name[name]} and {cid} are both named {name!r}; their "
                                "objects would merge. Fix: rename one, or give both one id")
            by_name.setdefault(name, cid)
        for image in dataset.images:
            path = dataset.image_path(image)
            if path.resolve() in seen:
                problems.append(f"{seen[path.resolve()]} and {json_path}: both hold image {path}. Fix: import one "
                                "of the files, or remove the image from one")
                continue
            seen[path.resolve()] = json_path
            stem = str(PurePosixPath(image.file_name).with_suffix(""))
            found.append((f"{prefix}/{stem}" if len(files) > 1 else stem, path,
                          CocoRecord(image, names, json_path)))
    keys = image_keys([stem for stem, _, _ in found])
    return [SourceImage(keys[stem], path, annotation=rec.json, record=rec) for stem, path, rec in found], problems


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], Problems]:
    """The image's annotations in file order (module doc)."""
    rec: CocoRecord = item.record
    h, w = rec.image.height, rec.image.width
    objects: list[SourceObject] = []
    problems: Problems = []
    for a in rec.image.instances:
        name, where = rec.names[a.category_id], f"{rec.json} annotation id {a.id}"
        seg = a.segmentation
        if seg is None:
            x0, y0, x1, y1 = a.box
            obj = SourceObject.from_box((x0, y0, x1 - x0, y1 - y0), name, where)
            objects.append(dataclasses.replace(obj, iscrowd=a.iscrowd))
            continue
        if isinstance(seg, list):
            rle = polygons_rle(seg, h, w)
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = seg
        obj = object_from_rle(rle, name, where, iscrowd=a.iscrowd)
        if obj is None:
            problems.append(f"{rec.json}: annotation id {a.id} (image id {rec.image.id}): its segmentation covers no "
                            "pixel. Fix: drop the annotation, or its segmentation to keep the box")
            continue
        objects.append(obj)
    return objects, problems


FORMAT = Format(
    name="coco", detect=detect, scan=scan, read=read,
    help="COCO instances json (+ images): polygons, RLE, or boxes only; SRC the json or its folder",
)
