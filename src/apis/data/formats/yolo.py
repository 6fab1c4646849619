"""The YOLO dataset layout that ``yolo-seg`` and ``yolo-det`` share (Ultralytics, and what CVAT, Roboflow and
Label Studio export for it).

* Class names: ``data.yaml`` (``names`` a list or an ``{id: name}`` mapping), else a ``classes.txt`` /
  ``obj.names`` with one name a line (Label Studio, Darknet).
* Images: the folders or image-list files that ``data.yaml``'s ``train`` / ``val`` / ``test`` name (relative to
  its ``path``, to the yaml, or, for paths written on another machine or Roboflow's ``../train/images``, the
  longest tail of the path found under the source), else every image under the source.
* Labels: Ultralytics' rule: the image's path with its last ``images`` folder replaced by ``labels`` and the
  suffix by ``.txt`` (``images/train/a.jpg`` → ``labels/train/a.txt``, ``train/images/a.jpg`` →
  ``train/labels/a.txt``); an image outside any ``images`` folder has its ``.txt`` beside it (Darknet).
* One object a line, coordinates fractions of the shown image's width and height: ``class x1 y1 x2 y2 ...``
  (segmentation) or ``class cx cy w h`` (detection). An image with no label file, or an empty one, is an image
  with no objects (YOLO's background images); a whole image folder without its labels folder is a problem
  (unlabelled images taught as background would teach the model to miss every object in them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from apis.data.formats.files import image_keys, inside, is_image, stem_of
from apis.data.sources import ImageFrame, Problems, ReadOptions, SourceImage, SourceObject

DATA_YAMLS = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")
CLASS_LISTS = ("classes.txt", "obj.names")
SPLIT_KEYS = ("train", "val", "test")
#: How far (a fraction of the image side) a coordinate may lie outside [0, 1] before the line is refused: the
#: rounding of exporters that write 6 decimals, or a vertex a pixel past the edge of an image of 1000 px.
#: Within it, coordinates are clipped to the image.
COORD_TOLERANCE = 1e-3
#: Label files :func:`kind` reads to tell segmentation from detection.
KIND_SAMPLE_FILES = 20


@dataclass(frozen=True)
class YoloClasses:
    """Class id → name, and the file that gave them (for messages)."""

    names: dict[int, str]
    source: Path

    def describe(self) -> str:
        ids = sorted(self.names)
        return f"ids {ids[0]}..{ids[-1]}" if ids else "no ids"


def classes_file(src: Path) -> Path | None:
    """The file naming the classes: a data.yaml (:data:`DATA_YAMLS`) or a class list (:data:`CLASS_LISTS`)."""
    for name in (*DATA_YAMLS, *CLASS_LISTS):
        if (Path(src) / name).is_file():
            return Path(src) / name
    return None


def read_classes(path: Path) -> tuple[YoloClasses | None, dict, Problems]:
    """The classes of ``path`` (a data.yaml or a class list), the yaml's content ({} for a list), and problems."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig", errors="replace").splitlines()]
        names = [ln for ln in lines if ln]
        if not names:
            return None, {}, [f"{path}: names no class. Fix: write one class name a line, in class id order"]
        return YoloClasses(dict(enumerate(names)), path), {}, []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        return None, {}, [f"{path}: not valid YAML ({' '.join(str(e).split())}). Fix: repair it or export again"]
    if not isinstance(data, dict) or "names" not in data:
        return None, {}, [f"{path}: has no 'names'. Fix: add names: [class0, class1, ...] (or {{0: class0, ...}})"]
    raw = data["names"]
    items = list(enumerate(raw)) if isinstance(raw, list) else list(raw.items()) if isinstance(raw, dict) else None
    names: dict[int, str] = {}
    for key, name in items or []:
        cid = _class_id(str(key))
        if cid is None or cid < 0 or not isinstance(name, (str, int, float)) or not str(name).strip():
            return None, data, [f"{path}: names entry {key!r}: {name!r} is not 'id: name' with an integer id >= 0 and "
                                "a non-empty name. Fix: correct it"]
        names[cid] = str(name).strip()
    if not names:
        return None, data, [f"{path}: 'names' holds no class ({raw!r}). Fix: list the class names, in class id order"]
    return YoloClasses(names, path), data, []


def _class_id(token: str) -> int | None:
    """A class id token (``3``, or ``3.0`` as some writers put it); None when it is not a whole number."""
    try:
        value = float(token)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def label_path(image: Path, src: Path) -> Path:
    """Ultralytics' rule (module doc): the label file of ``image`` (a file under ``src``)."""
    parts = image.relative_to(src).parts
    folders = parts[:-1]
    if "images" not in folders:
        return image.with_suffix(".txt")
    i = len(folders) - 1 - folders[::-1].index("images")
    return src.joinpath(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")


def _find(entry: str, bases: Sequence[Path], src: Path) -> Path | None:
    """A data.yaml path entry as a file or folder inside ``src``: relative to each base in turn, then the
    longest tail of it under ``src`` (the entry was written elsewhere, or climbs out as Roboflow's does)."""
    path = Path(entry)
    tries = [path] if path.is_absolute() else [b / path for b in bases]
    parts = [p for p in path.parts if p not in ("/", "..", ".") and not p.endswith(":\\")]
    tries += [src.joinpath(*parts[i:]) for i in range(len(parts))]
    for p in tries:
        if p.exists() and inside(p, src):
            return p
    return None


def _listed_images(src: Path, data: dict, where: Path) -> tuple[list[Path] | None, Problems]:
    """The images data.yaml's split keys name, or None when it names none."""
    problems: Problems = []
    bases = [where.parent, src]
    if isinstance(data.get("path"), str):
        root = _find(data["path"], [where.parent], src)
        if root is not None and root.is_dir():
            bases.insert(0, root)
    images: list[Path] = []
    named = False
    for key in SPLIT_KEYS:
        value = data.get(key)
        if value is None:
            continue
        entries = [value] if isinstance(value, str) else value if isinstance(value, list) else None
        if entries is None or not all(isinstance(e, str) for e in entries):
            problems.append(f"{where}: {key}: {value!r} is not a path or a list of paths. Fix: correct it")
            continue
        named = True
        for entry in entries:
            found = _find(entry, bases, src)
            if found is None:
                problems.append(f"{where}: {key}: {entry!r} is not found under {src}. Fix: correct the path (relative "
                                f"to {where.name} or to its 'path'), or remove the entry")
            elif found.is_dir():
                images += [p for p in sorted(found.rglob("*")) if p.is_file() and is_image(p)]
            else:
                listed, bad = _image_list(found, bases, src)
                images += listed
                problems += bad
    return (images if named else None), problems


def _image_list(path: Path, bases: Sequence[Path], src: Path) -> tuple[list[Path], Problems]:
    images, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        found = _find(entry, [path.parent, *bases], src)
        if found is None or not found.is_file():
            problems.append(f"{path}:{n}: image {entry!r} is not found under {src}. Fix: correct the line or remove it")
        else:
            images.append(found)
    return images, problems


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], Problems]:
    """Every image of the layout with its label file (``annotation``; None when it has none: a background
    image), ``record`` the :class:`YoloClasses`; and the problems: a missing or broken class file, a split
    entry not found, two images of one label file, a labels folder missing for a whole image folder, a label
    file without an image."""
    src = Path(src)
    where = classes_file(src)
    if where is None:
        return [], [f"{src}: no {' / '.join(DATA_YAMLS[:1] + CLASS_LISTS)} naming the classes. Fix: add data.yaml with "
                    "names: [...] (or a classes.txt, one name a line)"]
    classes, data, problems = read_classes(where)
    if classes is None:
        return [], problems
    listed, bad = _listed_images(src, data, where)
    problems += bad
    if listed is None:
        listed = [p for p in sorted(src.rglob("*")) if p.is_file() and is_image(p)
                  and "labels" not in p.relative_to(src).parts[:-1]]
    images = sorted({p.resolve(): p for p in listed}.values())  # one split may list an image twice

    by_label: dict[Path, Path] = {}
    clashes: set[Path] = set()
    missing_dirs: dict[Path, Path] = {}
    for image in images:
        label = label_path(image, src)
        if label in by_label or label in clashes:
            # Both are left out, whichever came first: either could be the one the labels were drawn on.
            other = by_label.pop(label, None)
            clashes.add(label)
            problems.append(f"{other or 'another image'} and {image}: two images of one label file {label}. Fix: "
                            "rename or remove one of them")
            continue
        if not label.parent.is_dir() and label.parent != image.parent:
            missing_dirs.setdefault(label.parent, image.parent)
            continue
        by_label[label] = image
    for labels, folder in missing_dirs.items():
        problems.append(f"{folder}: no labels folder {labels}: its images would be imported with no objects. Fix: "
                        "add the labels, or remove the images (or their data.yaml entry)")
    claimed = {label.resolve() for label in (*by_label, *clashes)}
    skip = {where.resolve()} | {(src / n).resolve() for n in ("train.txt", "val.txt", "test.txt", "valid.txt")}
    for folder in sorted({label.parent for label in by_label}):
        for txt in sorted(folder.glob("*.txt")):
            if txt.resolve() not in claimed and txt.resolve() not in skip:
                problems.append(f"{txt}: label file without an image (Ultralytics' rule looks for its image in the "
                                "matching images folder). Fix: add the image, or remove the label file")

    stems = [stem_of(image, src) for image in by_label.values()]
    keys = image_keys(stems)
    items = [SourceImage(keys[stem], image, annotation=label if label.is_file() else None, record=classes)
             for (label, image), stem in zip(by_label.items(), stems, strict=True)]
    return sorted(items, key=lambda it: it.key), problems


def label_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number from 1, whitespace-split values) of each non-blank line of a label file."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for n, line in enumerate(f, 1):
            values = line.split()
            if values:
                yield n, values


#: One label line's conversion: (values, classes, ``file:line``, shown (width, height)) → (the object, None) or
#: (None, the problem).
LineReader = Callable[[list[str], YoloClasses, str, tuple[int, int]], tuple[SourceObject | None, str | None]]


def read_labels(item: SourceImage, frame: ImageFrame, options: ReadOptions,
                line: LineReader) -> tuple[list[SourceObject], Problems]:
    """The objects of one image's label file in line order, each line made by ``line``, and the problems of the
    lines it refuses; none for a background image (no label file, or an empty one), counted
    (:func:`count_background`)."""
    lines = list(label_lines(item.annotation)) if item.annotation is not None else []
    if not lines:
        count_background(item, options)
        return [], []
    objects: list[SourceObject] = []
    problems: Problems = []
    for n, values in lines:
        obj, problem = line(values, item.record, f"{item.annotation}:{n}", frame.shown)
        if problem is not None:
            problems.append(problem)
        elif obj is not None:
            objects.append(obj)
    return objects, problems


def parse_line(values: list[str], classes: YoloClasses, where: str) -> tuple[str | None, list[float], str | None]:
    """(class name, coordinates clipped to [0, 1], problem) of one label line; ``where`` is ``file:line``."""
    cid = _class_id(values[0])
    if cid is None:
        return None, [], f"{where}: class {values[0]!r} is not an integer id. Fix: correct the line"
    if cid not in classes.names:
        return None, [], (f"{where}: class {cid} is not in {classes.source.name}'s names ({classes.describe()}). Fix: "
                          f"add it to {classes.source.name}, or correct the line")
    coords = []
    for token in values[1:]:
        try:
            v = float(token)
        except ValueError:
            return None, [], f"{where}: {token!r} is not a number. Fix: correct the line"
        if not (math.isfinite(v) and -COORD_TOLERANCE <= v <= 1 + COORD_TOLERANCE):
            return None, [], (f"{where}: coordinate {token} lies outside [0, 1] (YOLO coordinates are fractions of the "
                              "image's width and height). Fix: normalise the line, or clip it to the image")
        coords.append(min(max(v, 0.0), 1.0))
    return classes.names[cid], coords, None


def kind(src: Path) -> str | None:
    """``seg`` or ``det`` for a YOLO layout (class file present, label files found), None otherwise: ``det``
    when every line of the first :data:`KIND_SAMPLE_FILES` non-empty label files has 5 values, ``seg`` when
    they have more (a line of 5 among them is then refused when read, naming it), None when all are empty."""
    src = Path(src)
    if not src.is_dir() or classes_file(src) is None:
        return None
    counts: set[int] = set()
    seen = 0
    for txt in _label_files(src):
        lengths = {len(values) for _, values in label_lines(txt)}
        if lengths:
            counts |= lengths
            seen += 1
            if seen >= KIND_SAMPLE_FILES:
                break
    if not counts:
        return None
    return "det" if counts == {5} else "seg"


def _label_files(src: Path) -> Iterator[Path]:
    """``.txt`` files in a ``labels`` folder, or beside an image of the same stem, walking ``src`` in order."""
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        here = Path(folder)
        in_labels = "labels" in here.relative_to(src).parts
        stems = {Path(f).stem for f in files if is_image(Path(f))}
        for name in sorted(files):
            if name.endswith(".txt") and (in_labels or name[:-4] in stems):
                yield here / name


#: What :func:`count_background` adds to the importer's summary.
BACKGROUND = "YOLO background images (no label file, or an empty one): imported with no objects"


def count_background(item: SourceImage, options: ReadOptions) -> None:
    """Count ``item`` as a background image in the importer's summary (``options.tally``, where it has one)."""
    if hasattr(options, "tally"):
        options.tally[(item.key, BACKGROUND)] += 1
