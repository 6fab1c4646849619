"""``apis data import``: read a dataset in any known format and write validated COCO files, exactly or not
at all.

The formats (:data:`~apis.data.importing.registry.FORMATS`; ``--layout`` picks one, else the first whose
``detect`` claims SRC) only find files and read objects (:mod:`apis.data.sources`). Everything around
them lives here, the same for all formats:

* arguments and OUT are checked before any image is read (OUT must be new or empty and outside SRC);
* every image is decoded whole (a truncated file fails here, not in training) under a pixel limit
  (``--max-pixels``); objects come back RLE-encoded, in the image's shown frame (EXIF orientation applied,
  :mod:`apis.data.importing.frames`); each object is checked: a category name, a mask of the image's shown
  size, a box inside the image, a non-zero area;
* ``on_error="refuse"`` (default) writes nothing when there is any problem; ``"skip"`` leaves every image
  with a problem out **whole** (never some of its objects: a missing object would be taught as background),
  lists it, and refuses when no object is left. Problems that are not one image's (an argument, a
  ``--categories`` glob that matches no file, two files of one stem) refuse either way or are listed;
* crowd regions (``iscrowd``) of a category with no object in the whole import are stuff (Cityscapes' road,
  sky): left out and counted;
* an import with no object is refused with the reason; a folder of bare images is pointed to ``apis init``.

Output: ``OUT/train`` and (with a validation fraction) ``OUT/val``, each an ``annotations.json`` with
compressed-RLE masks and tight boxes (box-only objects: ``bbox`` and ``area``, no ``segmentation``) plus an
``images/`` folder (files copied byte for byte; ``width``/``height`` the shown size, as the loader reads
them), which :func:`apis.data.coco.load_coco` accepts, and ``OUT/apis.yaml`` (:mod:`.importing.advice`).
The folder appears whole or not at all (:mod:`apis.data.importing.output`).

Frames: boxes are COCO ``[x, y, w, h]`` over pixel edges (a mask whose columns run 3..7 gets x 3, w 5), in
the shown frame of the image file.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from apis.data.archive import ArchiveError, unpacked_source
from apis.data.images import ImageReadError
from apis.data.importing.advice import SizeAdvice, run_config, size_advice
from apis.data.importing.checks import check_arguments, check_globs, load_categories, object_problems
from apis.data.importing.errors import ImportRefused, refused
from apis.data.importing.files import MAX_PIXELS, FileProblem, check_pixels, pixel_limit
from apis.data.importing.options import DEFAULT_CATEGORY, ImportOptions, parse_values
from apis.data.importing.output import KeptImage, check_out, finish, write_split
from apis.data.importing.registry import FORMATS, pick_format
from apis.data.partial import clear_stale_partials, partial_folder
from apis.data.sources import Format, ImageFrame, SourceImage, SourceObject, read_frame

__all__ = ["FORMATS", "ImportRefused", "ImportResult", "SizeAdvice", "import_dataset", "refused", "size_advice",
           "split_keys", "subset_keys"]

Progress = Callable[[int, int], None]


@dataclass
class ImportResult:
    """What :func:`import_dataset` wrote: json path per split, image and object (non-crowd) counts per split,
    the categories, the problems it skipped and the images it left out whole (``on_error="skip"``), and
    summary ``notes`` (void pixels, crowd and stuff regions, files ignored)."""

    paths: dict[str, Path]
    config: Path
    images: dict[str, int]
    instances: dict[str, int]
    categories: list[str]
    skipped: list[str] = field(default_factory=list)
    sizes: SizeAdvice | None = None
    left_out: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layout: str = ""


# ------------------------------------------------------------------------------------------ splitting
def split_keys(keys: Sequence[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Images to ``train`` and ``val`` by a seeded shuffle of the sorted keys: the same keys, fraction and
    seed give the same split on any machine. A positive fraction of two or more images puts at least one in
    each split."""
    if not 0.0 <= val_fraction < 1.0:
        raise refused(f"--val-fraction {val_fraction}: must be in [0, 1). Fix: pass e.g. 0.2")
    ordered = sorted(keys)
    perm = np.random.default_rng([seed, len(ordered)]).permutation(len(ordered))
    n_val = round(val_fraction * len(ordered))
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    val = {ordered[i] for i in perm[:n_val]}
    return {"train": [k for k in ordered if k not in val], "val": [k for k in ordered if k in val]}


def subset_keys(keys: Sequence[str], max_images: int | None, seed: int) -> list[str]:
    """At most ``max_images`` of ``keys``, a seeded sample (sorted); all of them when None."""
    ordered = sorted(keys)
    if max_images is None or max_images >= len(ordered):
        return ordered
    pick = np.random.default_rng([seed, len(ordered), 1]).choice(len(ordered), size=max_images, replace=False)
    return sorted(ordered[i] for i in pick)


# ------------------------------------------------------------------------------------------ reading
def _read_image(fmt: Format, item: SourceImage, options: ImportOptions
                ) -> tuple[ImageFrame | None, list[SourceObject], list[str]]:
    """The frame and objects of one image, and its problems (any problem: the image is left out whole)."""
    try:
        check_pixels(item.image, options.max_pixels)
        frame = read_frame(item.image)
    except (FileProblem, ImageReadError) as e:
        return None, [], [f"{e}. Fix: replace the image with a readable one, or remove it"
                          if not isinstance(e, FileProblem) else str(e)]
    try:
        objects, problems = fmt.read(item, frame, options)
    except ImportRefused:
        raise
    except (FileProblem, ImageReadError, OSError, ValueError, Image.DecompressionBombError) as e:
        return frame, [], [f"{item.image}: its annotations cannot be read ({e}). Fix: repair or remove them (or "
                           "raise --max-pixels for a genuine huge file)"]
    return frame, list(objects), list(problems) + object_problems(objects, frame, item.image)


# ------------------------------------------------------------------------------------------ import
def import_dataset(
    src: Path | str,
    out: Path | str,
    layout: str | None = None,
    *,
    images_dir: Path | str | None = None,
    labels_dir: Path | str | None = None,
    label_name: str | None = None,
    image_pattern: str | None = None,
    label_pattern: str | None = None,
    category: str | None = None,
    categories_file: Path | str | None = None,
    ignore_values: str | Sequence[int] | None = None,
    class_from_value: bool | None = None,
    mask_threshold: int = 128,
    exif: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    max_pixels: int = MAX_PIXELS,
    on_error: str = "refuse",
    progress: Progress | None = None,
) -> ImportResult:
    """Read ``src`` in ``layout`` (None: detected), check every image and object, and write ``out/train``,
    ``out/val`` and ``out/apis.yaml`` (module doc). The keyword options are ``apis data import``'s (see its
    --help and :class:`~apis.data.sources.ReadOptions`); ``ignore_values`` is text as on the command line
    (``0,255``, ``#e0e0c0``, ``none``) or a sequence of ints. Raises :class:`ImportRefused`."""
    src, out = Path(src), Path(out)
    check_arguments(on_error, exif, mask_threshold, val_fraction, max_images, max_pixels, category, categories_file)
    is_zip = src.is_file() and src.suffix.lower() == ".zip"
    is_json = src.is_file() and src.suffix.lower() == ".json"  # a COCO file: the coco format reads it
    if not src.is_dir() and not is_zip and not is_json:
        raise refused(f"{src}: {'not found' if not src.exists() else 'not a folder, a .zip or a COCO .json'}. Fix: "
                      "pass the folder (or .zip export, or COCO json) holding the dataset")
    if is_json and layout is None:
        layout = "coco"
    check_out(src, out)
    voids = parse_values(ignore_values) if isinstance(ignore_values, str) or ignore_values is None \
        else tuple(int(v) for v in ignore_values)
    rules = load_categories(Path(categories_file), class_from_value) if categories_file else {}
    options = ImportOptions(category=category, categories=rules, ignore_values=voids,
                            class_from_value=class_from_value, mask_threshold=mask_threshold, exif=exif,
                            label_name=label_name, image_pattern=image_pattern, label_pattern=label_pattern,
                            root=src, images_dir=Path(images_dir) if images_dir else None,
                            labels_dir=Path(labels_dir) if labels_dir else None, max_pixels=max_pixels)
    if layout is None and (images_dir or labels_dir):
        layout = "label-images"
    elif layout is None and (image_pattern or label_pattern):
        layout = "side-by-side"
    stale = clear_stale_partials(out)
    try:
        with unpacked_source(src) as folder:  # a .zip (CVAT's exports) is read as the folder inside it
            result = _import_folder(folder, out, layout, replace(options, root=folder), val_fraction=val_fraction,
                                    seed=seed, max_images=max_images, on_error=on_error, progress=progress,
                                    described=f"{src.resolve()}")
    except ArchiveError as e:
        raise refused(str(e)) from None
    if stale:
        result.notes.append(f"removed {len(stale)} partial folder(s) of an earlier import into {out} that was killed")
    return result


def _import_folder(src: Path, out: Path, layout: str | None, options: ImportOptions, *, val_fraction: float,
                   seed: int, max_images: int | None, on_error: str, progress: Progress | None, described: str
                   ) -> ImportResult:
    """:func:`import_dataset` once its arguments and OUT are checked and a .zip is unpacked to ``src``."""
    fmt = pick_format(src, layout)
    rules, class_from_value = options.categories, options.class_from_value
    with pixel_limit(options.max_pixels):
        items, problems = fmt.scan(src, options)
        problems = list(problems)
        if rules and not class_from_value:
            check_globs(items, options, "--categories")
        seen: dict[str, SourceImage] = {}
        for it in items:
            other = seen.setdefault(it.key.lower(), it)
            if other is not it:
                problems.append(f"{it.image}: has the same name as {other.image} once imported ({it.key!r}). Fix: "
                                "rename one of them")
        by_key = {it.key: it for it in items if seen[it.key.lower()] is it}
        if not by_key and not problems:
            raise refused(f"{src}: {fmt.name} found no image to import. Fix: check --layout and the folders")
        keys = subset_keys(list(by_key), max_images, seed)
        kept: dict[str, KeptImage] = {}
        left_out: list[str] = []
        for done, key in enumerate(keys, 1):
            frame, objects, bad = _read_image(fmt, by_key[key], options)
            if bad:
                problems += bad
                left_out.append(str(by_key[key].image))
            else:
                kept[key] = KeptImage(by_key[key], frame, tuple(objects))
            if progress is not None:
                progress(done, len(keys))
    if problems and on_error == "refuse":
        raise ImportRefused(problems)
    kept, notes = _settle(kept, options.tally, fmt)
    n_objects = sum(not o.iscrowd for k in kept.values() for o in k.objects)
    if n_objects == 0:
        why = (f"every image with a problem was left out ({len(left_out)}) and the {len(kept)} left hold no object"
               if problems else f"the {len(kept)} images hold no object ({'; '.join(notes) or fmt.name})")
        if not problems:
            raise refused(f"{src}: no object to import: {why}. Fix: check the layout and the options that say what "
                          "a value means (--layout, --ignore-values, --mask-threshold, --class-from-value)")
        raise ImportRefused(problems, head=f"import refused, nothing written: no object to import: {why}. The "
                                           "problems:")
    names = _category_names(kept, options)
    voids = options.ignore_values
    info = {"description": f"imported by apis data import from {described} ({fmt.name})",
            "apis_import": {"layout": fmt.name, "val_fraction": val_fraction, "seed": seed, "max_images": max_images,
                            "mask_threshold": options.mask_threshold, "exif": options.exif,
                            "class_from_value": class_from_value,
                            "ignore_values": None if voids is None else list(voids)}}
    tmp = partial_folder(out)
    try:
        paths, counts, n_inst = {}, {}, {}
        for split, split_keys_ in split_keys(list(kept), val_fraction, seed).items():
            if split_keys_:
                counts[split], _ = write_split(tmp / split, split_keys_, kept, names, {**info, "split": split})
                n_inst[split] = sum(not o.iscrowd for k in split_keys_ for o in kept[k].objects)
                paths[split] = out / split / "annotations.json"
        advice = size_advice([(o.area, *k.frame.shown) for k in kept.values() for o in k.objects if not o.iscrowd])
        (tmp / "apis.yaml").write_text(run_config(paths, advice))
        finish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(paths, out / "apis.yaml", counts, n_inst, names, problems, advice, left_out, notes, fmt.name)


def _settle(kept: dict[str, KeptImage], tally: Counter, fmt: Format) -> tuple[dict[str, KeptImage], list[str]]:
    """Leave out the crowd regions of categories with no object anywhere (stuff), and the summary notes."""
    has_objects = {o.category for k in kept.values() for o in k.objects if not o.iscrowd}
    stuff = Counter(o.category for k in kept.values() for o in k.objects if o.iscrowd and o.category not in has_objects)
    if stuff:
        kept = {key: replace(k, objects=tuple(o for o in k.objects if not o.iscrowd or o.category in has_objects))
                for key, k in kept.items()}
    notes = []
    totals: Counter = Counter()
    images: Counter = Counter()
    for (key, what), n in tally.items():
        if key in kept and n:
            totals[what] += n
            images[what] += 1
    for what, n in sorted(totals.items()):
        why = " (void: left out of every mask, neither object nor background)" if what == "void pixels" else ""
        notes.append(f"{what}: {n:,} in {images[what]} image{'s' if images[what] != 1 else ''}{why}")
    crowds = sum(o.iscrowd for k in kept.values() for o in k.objects)
    if crowds:
        notes.append(f"crowd regions: {crowds} kept with iscrowd 1 (never pool objects)")
    if stuff:
        notes.append(f"stuff regions left out: {sum(stuff.values())} ({', '.join(sorted(stuff))}: crowd values of "
                     "classes with no object anywhere)")
    boxes = sum(o.rle is None for k in kept.values() for o in k.objects)
    if boxes:
        # Said by the objects, not the format: a COCO file is boxes-only or not by its content.
        masked = any(o.rle is not None for k in kept.values() for o in k.objects)
        notes.append(f"box-only objects: {boxes} (bbox and area, no segmentation)"
                     + ("; the rest have masks" if masked else ""))
    return kept, notes


def _category_names(kept: dict[str, KeptImage], options: ImportOptions) -> list[str]:
    """The categories objects use: in the order ``--categories`` lists them, then as first met."""
    used = list(dict.fromkeys(o.category for k in kept.values() for o in k.objects))
    listed = [n for n in dict.fromkeys(options.categories.values()) if n in used]
    return listed + [n for n in used if n not in listed] or [options.category or DEFAULT_CATEGORY]
