"""The checks ``apis data import`` makes the same for every format: its arguments (before anything is read),
``--categories`` (a YAML file, and no glob that matches nothing), and every object a reader returns."""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from apis.data.importing.errors import refused
from apis.data.importing.frames import EXIF_CHOICES
from apis.data.importing.options import ImportOptions
from apis.data.sources import ImageFrame, SourceImage, SourceObject


def load_categories(path: Path, class_from_value: bool) -> dict[str, str]:
    """``--categories``: a YAML mapping of globs over annotation paths (relative to SRC) to category names,
    or with ``--class-from-value`` of class ids to names. Keys come back as text."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise refused(f"{path}: not found. Fix: pass --categories a YAML file of 'GLOB: CATEGORY' lines") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise refused(f"{path}: not valid YAML ({e}). Fix: write 'GLOB: CATEGORY' lines") from None
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) and v.strip() for v in raw.values()):
        raise refused(f"{path}: must map globs (or, with --class-from-value, class ids) to category names, e.g. "
                      "'\"*/masks/car_*.png\": car' or '26: car'. Fix: rewrite it so")
    ids = all(isinstance(k, int) and not isinstance(k, bool) for k in raw)
    if class_from_value and not ids:
        raise refused(f"{path}: with --class-from-value its keys must be class ids (e.g. '26: car'). "
                      "Fix: rewrite it so")
    if ids and not class_from_value:
        raise refused(f"{path}: maps class ids to names, which only --class-from-value reads; without it the keys "
                      "are globs over file paths. Fix: pass --class-from-value, or write globs")
    return {str(k): v.strip() for k, v in raw.items()}


def check_arguments(on_error: str, exif: str, mask_threshold: int, val_fraction: float, max_images: int | None,
                     max_pixels: int, category: str | None, categories_file: object) -> None:
    if on_error not in ("refuse", "skip"):
        raise refused(f"--on-error {on_error!r}: choose refuse or skip")
    if exif not in EXIF_CHOICES:
        raise refused(f"--exif {exif!r}: choose {', '.join(EXIF_CHOICES)}")
    if not 1 <= mask_threshold <= 255:
        raise refused(f"--mask-threshold {mask_threshold}: must be 1..255 (on the 8-bit scale). Fix: e.g. 128")
    if not (0.0 <= val_fraction < 1.0):
        raise refused(f"--val-fraction {val_fraction}: must be in [0, 1). Fix: pass e.g. 0.2")
    if max_images is not None and max_images < 1:
        raise refused(f"--max-images {max_images}: must be ≥ 1")
    if max_pixels < 1:
        raise refused(f"--max-pixels {max_pixels}: must be ≥ 1")
    if categories_file is not None and category is not None:
        raise refused("--category and --categories both given. Fix: pass one of them")
    if category is not None and not category.strip():
        raise refused("--category '': a category needs a name. Fix: e.g. --category nucleus")


def check_globs(items: Sequence[SourceImage], options: ImportOptions, where: str) -> None:
    """Refuse a ``--categories`` glob that matches no annotation file of the source (a typo would otherwise
    leave its objects unnamed or the import empty)."""
    files = [Path(os.path.relpath(p, options.root)).as_posix() for it in items
             for p in (*it.masks, it.label, it.annotation) if p is not None]
    dead = [g for g in options.categories if not any(fnmatch.fnmatchcase(f, g) for f in files)]
    if dead:
        example = files[0] if files else "-"
        raise refused(f"{where}: {', '.join(map(repr, dead))} match{'es' if len(dead) == 1 else ''} no annotation "
                      f"file of {options.root} ({len(files)} files, e.g. {example}). Fix: correct the glob (paths "
                      "are relative to SRC) or remove it")


def object_problems(objects: Sequence[SourceObject], frame: ImageFrame, image: Path) -> list[str]:
    """The checks every format's objects pass: a category name, a mask of the image's shown size, a box
    inside the image (over pixel edges), a non-zero area."""
    width, height = frame.shown
    problems = []
    for obj in objects:
        where = obj.source or str(image)
        x, y, w, h = obj.box
        if not isinstance(obj.category, str) or not obj.category.strip():
            problems.append(f"{where}: an object without a category name. Fix: name it in the source, or pass "
                            "--category")
        elif obj.rle is not None and list(obj.rle.get("size", [])) != [height, width]:
            problems.append(f"{where}: mask is {obj.rle.get('size')} (height, width), its image {image.name} is shown "
                            f"{height}x{width}. Fix: pair the right files, or save the mask at the image's size")
        elif not all(math.isfinite(v) for v in obj.box) or w <= 0 or h <= 0 or obj.area <= 0:
            problems.append(f"{where}: an empty object (box {list(obj.box)}, area {obj.area:g}). Fix: delete it")
        elif x < -1e-6 or y < -1e-6 or x + w > width + 1e-6 or y + h > height + 1e-6:
            problems.append(f"{where}: object box [{x:g}, {y:g}, {w:g}, {h:g}] reaches outside its {width}x{height} "
                            f"image {image.name}. Fix: clip it to the image, or pair the right image")
    return problems
