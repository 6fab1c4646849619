"""Turn the folder layouts in which instance masks are usually published into validated COCO files.

Two layouts (:data:`LAYOUTS`):

* ``mask-folders``: one folder per image holding ``images/NAME.png`` and ``masks/*.png``, one binary
  image per instance (the 2018 Data Science Bowl's ``stage1_train/ID/images/ID.png`` + ``masks/``).
* ``label-images``: a folder of images beside a folder of label images, where every instance has its
  own integer and 0 is background (Penn-Fudan's ``PNGImages/`` + ``PedMasks/``, the Cell Tracking
  Challenge's ``man_seg*.tif``, many others). A label file is found from the image's stem with a name
  template (:data:`LABEL_NAMES`, or ``label_name``).

:func:`import_dataset` reads every image and mask, checks them, and writes ``OUT/train`` and (with a
validation fraction) ``OUT/val``, each an ``annotations.json`` with compressed-RLE masks and tight boxes
plus an ``images/`` folder (the files copied byte for byte), which :func:`apis.data.coco.load_coco`
accepts. It also writes ``OUT/apis.yaml``: a run config naming both files and, where the median object
is under :data:`MIN_OBJECT_PIXELS` across at the tiny preset's 160-pixel input (nuclei: about 8), input
sizes that bring it there, commented out: they cost the square of the scale in training time, and the tiny
preset already *tests* at up to twice its size where objects are small (``model.max_test_upscale``,
:mod:`apis.data.sizes`; README; :func:`size_advice`).

Every problem (unreadable file, a mask of another size than its image, an empty mask, two instances
sharing a pixel, an image without labels or labels without an image, a category no rule gives) becomes
one line naming the file and the fix. ``on_error="refuse"`` (default) writes nothing when there is any;
``"skip"`` leaves the offending image or instance out, reports it, and writes the rest. Either way the
output folder appears whole or not at all: it is built beside OUT and renamed into place.

Frames: boxes are COCO ``[x, y, w, h]`` over pixel edges (a mask whose columns run 3..7 gets x 3, w 5),
in the pixels of the image file.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from apis.atomic import write_json_atomic, write_text_atomic
from apis.data.images import ImageReadError, image_size
from apis.data.records import encode_mask
from apis.data.sizes import MIN_OBJECT_PIXELS, SIZE_STEP, median_side_at

LAYOUTS = ("mask-folders", "label-images")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Folder names tried, in order, for the two folders of the label-image layout.
IMAGE_DIRS = ("images", "imgs", "img", "PNGImages", "JPEGImages", "raw", "input")
LABEL_DIRS = ("labels", "label", "masks", "PedMasks", "instances", "SegmentationObject", "gt", "ground_truth")
#: Label file names tried for an image of stem ``{stem}`` (``{digits}``: its trailing digits, as the Cell
#: Tracking Challenge's ``t013.tif`` → ``man_seg013.tif``); the one matching most images is used.
LABEL_NAMES = ("{stem}", "{stem}_mask", "{stem}_masks", "{stem}_label", "{stem}_labels", "{stem}_instances",
               "{stem}_gt", "man_seg{digits}")
#: The tiny preset's input sizes (short side, long side cap), to judge object sizes against.
TINY_TEST_MIN_SIZE = 160
TINY_MAX_SIZE = 320

Progress = Callable[[int, int], None]


class ImportRefused(ValueError):
    """The source cannot be imported as it is. ``problems``: one line each, naming the file and the fix."""

    def __init__(self, problems: Sequence[str], head: str | None = None):
        self.problems = list(problems)
        n = len(self.problems)
        head = head or (f"import refused, nothing written: {n} problem{'s' if n != 1 else ''} found; fix them "
                        "(or pass --on-error skip to leave those images and masks out):")
        listed = [f"  - {p}" for p in self.problems[:200]]
        if n > 200:
            listed.append(f"  ... and {n - 200} more")
        super().__init__("\n".join([head, *listed]))


def refused(problem: str) -> ImportRefused:
    """A refusal for one problem of the command line or the source as a whole (not a list of bad files)."""
    return ImportRefused([problem], head="import refused:")


@dataclass(frozen=True)
class SourceImage:
    """One image of the source: its file, and where its instances come from (``masks``: one binary PNG per
    instance; ``label``: one label image). ``key`` is unique in the source and becomes the file's stem."""

    key: str
    image: Path
    masks: tuple[Path, ...] = ()
    label: Path | None = None


@dataclass(frozen=True)
class ImportedInstance:
    category: str
    mask: np.ndarray  # H×W bool
    source: Path


@dataclass
class ImportResult:
    """What :func:`import_dataset` wrote: json path per split, counts, and the problems it skipped."""

    paths: dict[str, Path]
    config: Path
    images: dict[str, int]
    instances: dict[str, int]
    categories: list[str]
    skipped: list[str] = field(default_factory=list)
    sizes: SizeAdvice | None = None


@dataclass(frozen=True)
class SizeAdvice:
    """Object sizes against the model's input. ``median_pixels``: median of √area over all objects, in the
    files' pixels; ``at_tiny``: the same at the tiny preset's input size; ``test_min_size`` /
    ``train_min_sizes`` / ``max_size``: input sizes at which it reaches :data:`MIN_OBJECT_PIXELS` (the
    tiny preset's own where it already does)."""

    median_pixels: float
    at_tiny: float
    test_min_size: int
    train_min_sizes: tuple[int, ...]
    max_size: int

    @property
    def too_small_for_tiny(self) -> bool:
        return self.at_tiny < MIN_OBJECT_PIXELS

    def lines(self) -> list[str]:
        head = (f"objects: median {self.median_pixels:.1f} px across in the files, {self.at_tiny:.1f} px at the "
                f"tiny preset's input ({TINY_TEST_MIN_SIZE} px short side)")
        if not self.too_small_for_tiny:
            return [head + "; the tiny preset's sizes fit"]
        return [head + f": under {MIN_OBJECT_PIXELS:g} px, two cells of the finest feature level (stride 8), "
                "where small objects lose detail",
                f"  set model.test_min_size: {self.test_min_size}, model.train_min_sizes: "
                f"{list(self.train_min_sizes)}, model.max_size: {self.max_size} to bring it there (in apis.yaml, "
                "commented out: training costs about the square of the scale; the tiny preset tests at up to twice its "
                "size by itself, model.max_test_upscale)"]


# ------------------------------------------------------------------------------------------ scanning
def detect_layout(src: Path) -> str:
    """``mask-folders`` when a subfolder of ``src`` holds ``images/`` and ``masks/``; ``label-images`` when
    ``src`` holds an image folder and a label folder (:data:`IMAGE_DIRS`, :data:`LABEL_DIRS`)."""
    src = Path(src)
    if not src.is_dir():
        raise refused(f"{src}: not a folder. Fix: pass the folder holding the dataset")
    for sub in sorted(p for p in src.iterdir() if p.is_dir()):
        if (sub / "images").is_dir() and (sub / "masks").is_dir():
            return "mask-folders"
    if _find_dir(src, IMAGE_DIRS) and _find_dir(src, LABEL_DIRS):
        return "label-images"
    raise refused(
        f"{src}: no known layout: neither folders with images/ and masks/ inside (mask-folders) nor an image "
        f"folder ({', '.join(IMAGE_DIRS)}) beside a label folder ({', '.join(LABEL_DIRS)}). Fix: pass --layout "
        "and --images/--labels")


def _find_dir(src: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (src / name).is_dir():
            return src / name
    return None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_mask_folders(src: Path) -> tuple[list[SourceImage], list[str]]:
    """One :class:`SourceImage` per subfolder of ``src`` (sorted), and the problems found: a folder with
    no image, or with several."""
    images, problems = [], []
    for sub in sorted(p for p in Path(src).iterdir() if p.is_dir()):
        found = _image_files(sub / "images") if (sub / "images").is_dir() else []
        masks = tuple(_image_files(sub / "masks")) if (sub / "masks").is_dir() else ()
        if len(found) != 1:
            what = "no image file" if not found else f"{len(found)} image files"
            problems.append(f"{sub / 'images'}: {what} (one expected). Fix: put the image of this folder's masks "
                            "there, alone, or remove the folder")
            continue
        images.append(SourceImage(sub.name, found[0], masks=masks))
    return images, problems


def label_template(images: Sequence[Path], labels_dir: Path) -> str:
    """The :data:`LABEL_NAMES` template that finds a label file for the most ``images`` (ties: the first)."""
    present = {p.stem: p for p in _image_files(labels_dir)}
    best, hits = LABEL_NAMES[0], -1
    for template in LABEL_NAMES:
        n = sum(_label_stem(template, im.stem) in present for im in images)
        if n > hits:
            best, hits = template, n
    return best


def _label_stem(template: str, stem: str) -> str:
    digits = stem[len(stem.rstrip("0123456789")):]
    return template.format(stem=stem, digits=digits)


def scan_label_images(images_dir: Path, labels_dir: Path, label_name: str | None = None
                      ) -> tuple[list[SourceImage], list[str]]:
    """Images of ``images_dir`` paired with their label files in ``labels_dir`` by ``label_name`` (a
    template over ``{stem}`` / ``{digits}``; default: :func:`label_template`), and the problems: an image
    without a label file, a label file without an image."""
    for d, flag in ((images_dir, "--images"), (labels_dir, "--labels")):
        if not Path(d).is_dir():
            raise refused(f"{d}: not a folder. Fix: pass {flag} the folder holding them")
    files = _image_files(Path(images_dir))
    template = label_name or label_template(files, Path(labels_dir))
    labels = {p.stem: p for p in _image_files(Path(labels_dir))}
    images, problems, used = [], [], set()
    for f in files:
        stem = _label_stem(template, f.stem)
        if stem not in labels:
            problems.append(f"{f}: no label image {Path(labels_dir) / stem}.* (name template {template!r}). Fix: add "
                            "it, remove the image, or pass --label-name")
            continue
        used.add(stem)
        images.append(SourceImage(f.stem, f, label=labels[stem]))
    for stem, path in sorted(labels.items()):
        if stem not in used:
            problems.append(f"{path}: label image without an image in {images_dir} (name template {template!r}). "
                            "Fix: add the image, remove the label file, or pass --label-name")
    return images, problems


# ------------------------------------------------------------------------------------------ reading
def read_array(path: Path) -> np.ndarray:
    """The pixels of a mask or label file as stored (no colour conversion); raises ImageReadError."""
    try:
        with Image.open(path) as im:
            return np.asarray(im).copy()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot read ({e})") from None


class CategoryRules:
    """Which category an instance gets: one name for all (``--category``), or the first glob of a mapping
    file that matches the instance's mask or label file, as a path relative to the source folder."""

    def __init__(self, default: str | None, rules: Mapping[str, str] | None = None, where: Path | None = None):
        self.default, self.rules, self.where = default, dict(rules or {}), where

    @staticmethod
    def from_file(path: Path) -> CategoryRules:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise refused(f"{path}: not found. Fix: pass --categories a YAML file of glob: category") from None
        except yaml.YAMLError as e:
            raise refused(f"{path}: not valid YAML ({e}). Fix: write 'GLOB: CATEGORY' lines") from None
        if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) and v for v in raw.values()):
            raise refused(f"{path}: must map globs to category names, e.g. '\"*/masks/car_*.png\": car'. "
                          "Fix: rewrite it so")
        return CategoryRules(None, {str(k): v for k, v in raw.items()}, path)

    def names(self) -> list[str]:
        return [self.default] if self.default else list(dict.fromkeys(self.rules.values()))

    def category(self, relative: str) -> str | None:
        if self.default:
            return self.default
        for pattern, name in self.rules.items():
            if fnmatch.fnmatch(relative, pattern):
                return name
        return None


def read_instances(item: SourceImage, size: tuple[int, int], src: Path, rules: CategoryRules
                   ) -> tuple[list[ImportedInstance], list[str]]:
    """The instances of one image (``size`` = (width, height) of its file) and the problems of its masks."""
    width, height = size
    out: list[ImportedInstance] = []
    problems: list[str] = []

    def category_of(path: Path) -> str | None:
        rel = os.path.relpath(path, src)
        name = rules.category(rel)
        if name is None:
            problems.append(f"{path}: matches no pattern of {rules.where}. Fix: add a glob for {rel!r} there")
        return name

    if item.label is not None:
        try:
            labels = read_array(item.label)
        except ImageReadError as e:
            return [], [f"{e}. Fix: replace the label image with a readable one, or remove its image"]
        if labels.ndim != 2:
            return [], [f"{item.label}: label image has {labels.shape[2]} channels; each instance needs one integer "
                        "per pixel. Fix: convert it to a single-channel (L, I;16 or palette) label image"]
        if labels.shape != (height, width):
            return [], [f"{item.label}: label image is {labels.shape[1]}x{labels.shape[0]}, its image {item.image} "
                        f"is {width}x{height}. Fix: pair the right files or resize the labels (nearest neighbour)"]
        name = category_of(item.label)
        if name is None:
            return [], problems
        for value in np.unique(labels):
            if value != 0:
                out.append(ImportedInstance(name, labels == value, item.label))
        return out, problems

    owner = np.full((height, width), -1, dtype=np.int32)
    for path in item.masks:
        try:
            raw = read_array(path)
        except ImageReadError as e:
            problems.append(f"{e}. Fix: replace the mask with a readable PNG, or delete it")
            continue
        mask = (raw[..., :3].max(axis=2) if raw.ndim == 3 else raw) > 0
        if mask.shape != (height, width):
            problems.append(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {item.image} is "
                            f"{width}x{height}. Fix: save the mask at the image's size, or delete it")
            continue
        if not mask.any():
            problems.append(f"{path}: mask is empty (no pixel above 0). Fix: delete the file")
            continue
        shared = owner[mask]
        shared = shared[shared >= 0]
        if shared.size:
            other = out[int(np.bincount(shared).argmax())].source
            problems.append(f"{path}: shares {shared.size} pixels with {other.name} (two instances on one pixel). "
                            "Fix: remove the pixels from one of the masks")
            continue
        name = category_of(path)
        if name is None:
            continue
        owner[mask] = len(out)
        out.append(ImportedInstance(name, mask, path))
    return out, problems


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
    if max_images < 1:
        raise refused(f"--max-images {max_images}: must be ≥ 1")
    pick = np.random.default_rng([seed, len(ordered), 1]).choice(len(ordered), size=max_images, replace=False)
    return sorted(ordered[i] for i in pick)


# ------------------------------------------------------------------------------------------ sizes
def size_advice(objects: Sequence[tuple[float, int, int]]) -> SizeAdvice | None:
    """Input sizes for objects given as (area in pixels, image width, image height). The model scales each
    image so its short side is ``test_min_size`` (long side at most ``max_size``); the advice is the smallest
    multiple of 32 at which the median object reaches :data:`MIN_OBJECT_PIXELS` across."""
    if not objects:
        return None
    at_tiny = median_side_at(objects, TINY_TEST_MIN_SIZE, TINY_MAX_SIZE)
    test = TINY_TEST_MIN_SIZE
    while median_side_at(objects, test, 2 * test) < MIN_OBJECT_PIXELS and test < 2048:
        test += SIZE_STEP
    train = tuple(test + d for d in (-32, -16, 0, 16, 32))
    median = float(np.median(np.sqrt(np.array([a for a, _, _ in objects], dtype=np.float64))))
    return SizeAdvice(median, at_tiny, test, train, 2 * test)


# ------------------------------------------------------------------------------------------ import
def import_dataset(
    src: Path | str,
    out: Path | str,
    layout: str | None = None,
    *,
    images_dir: Path | str | None = None,
    labels_dir: Path | str | None = None,
    label_name: str | None = None,
    category: str | None = None,
    categories_file: Path | str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    on_error: str = "refuse",
    progress: Progress | None = None,
) -> ImportResult:
    """Read ``src`` in ``layout`` (None: :func:`detect_layout`), check every image and mask, and write
    ``out/train`` and ``out/val`` (module doc). ``category`` names the one category (default ``object``);
    ``categories_file`` maps globs over mask / label paths (relative to ``src``) to categories instead.
    ``max_images``: a seeded sample of that many images (a development subset). ``on_error``: ``refuse``
    raises :class:`ImportRefused` listing every problem, writing nothing; ``skip`` leaves the bad images and
    instances out and lists them in :attr:`ImportResult.skipped`. ``out`` must not exist or be empty."""
    src, out = Path(src), Path(out)
    if on_error not in ("refuse", "skip"):
        raise refused(f"--on-error {on_error!r}: choose refuse or skip")
    if categories_file is not None and category is not None:
        raise refused("--category and --categories both given. Fix: pass one of them")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise refused(f"{out}: exists and is not empty. Fix: choose a new folder, or delete this one")
    rules = CategoryRules.from_file(Path(categories_file)) if categories_file else CategoryRules(category or "object")
    layout = layout or (detect_layout(src) if images_dir is None else "label-images")
    if layout not in LAYOUTS:
        raise refused(f"--layout {layout!r}: choose {' or '.join(LAYOUTS)}")
    if layout == "mask-folders":
        items, problems = scan_mask_folders(src)
    else:
        idir = Path(images_dir) if images_dir else _find_dir(src, IMAGE_DIRS)
        ldir = Path(labels_dir) if labels_dir else _find_dir(src, LABEL_DIRS)
        if idir is None or ldir is None:
            raise refused(f"{src}: no image or label folder found. Fix: pass --images and --labels")
        items, problems = scan_label_images(idir, ldir, label_name)
    by_key = {it.key: it for it in items}
    keys = subset_keys(list(by_key), max_images, seed)

    read: dict[str, tuple[SourceImage, tuple[int, int], list[ImportedInstance]]] = {}
    for done, key in enumerate(keys, 1):
        item = by_key[key]
        try:
            size = image_size(item.image)
            with Image.open(item.image) as im:
                im.load()  # decode it all: a truncated file must fail here, not in training
        except (ImageReadError, UnidentifiedImageError, OSError) as e:
            problems.append(f"{item.image}: image unreadable ({e}). Fix: replace the file or remove it")
            continue
        instances, bad = read_instances(item, size, src, rules)
        problems += bad
        read[key] = (item, size, instances)
        if progress is not None:
            progress(done, len(keys))
    if problems and on_error == "refuse":
        raise ImportRefused(problems)
    if not read:
        raise refused(f"{src}: no image could be imported. Fix: check the layout (--layout) and folders")

    names = [n for n in rules.names() if any(i.category == n for _, _, insts in read.values() for i in insts)]
    names = names or rules.names()[:1]
    splits = split_keys(list(read), val_fraction, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        paths, counts, n_inst = {}, {}, {}
        objects: list[tuple[float, int, int]] = []
        for split, split_keys_ in splits.items():
            if not split_keys_:
                continue
            coco = _split_coco(split_keys_, read, names, tmp / split)
            coco["info"] = {"description": f"imported by apis data import from {src.resolve()} ({layout})",
                            "apis_import": {"layout": layout, "split": split, "val_fraction": val_fraction,
                                            "seed": seed, "max_images": max_images}}
            write_json_atomic(coco, tmp / split / "annotations.json")
            paths[split] = out / split / "annotations.json"
            counts[split], n_inst[split] = len(coco["images"]), len(coco["annotations"])
            sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
            objects += [(a["area"], *sizes[a["image_id"]]) for a in coco["annotations"]]
        advice = size_advice(objects)
        config = _run_config(paths, advice)
        write_text_atomic(config, tmp / "apis.yaml")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportResult(paths, out / "apis.yaml", counts, n_inst, names, problems, advice)


def _split_coco(keys: Sequence[str], read: Mapping, names: Sequence[str], folder: Path) -> dict:
    (folder / "images").mkdir(parents=True)
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for image_id, key in enumerate(keys, 1):
        item, (width, height), instances = read[key]
        file_name = f"images/{key}{item.image.suffix.lower()}"
        shutil.copyfile(item.image, folder / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for inst in instances:
            rle = encode_mask(inst.mask)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_ids[inst.category],
                                # pycocotools' tight box of the mask, over pixel edges
                                "bbox": [int(v) for v in mask_utils.toBbox(rle)],
                                "area": int(mask_utils.area(rle)), "iscrowd": 0, "segmentation": rle,
                                "apis_source_file": str(inst.source.name)})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]}


def _run_config(paths: Mapping[str, Path], advice: SizeAdvice | None) -> str:
    lines = ["# Written by `apis data import`: the tiny preset on the imported splits.",
             "#   apis compare runs/NAME --config THIS_FILE", "preset: tiny",
             "data: {" + ", ".join(f"{k}: {str(Path(v).resolve())!r}" for k, v in paths.items()) + "}"]
    if advice is not None and advice.too_small_for_tiny:
        lines.append(f"# The median object is {advice.at_tiny:.1f} px across at the tiny preset's input; these sizes "
                     f"bring it to {MIN_OBJECT_PIXELS:g} px,")
        lines.append("# at about the square of the scale in training time (uncomment to use them):")
        lines.append(f"# model: {{test_min_size: {advice.test_min_size}, "
                     f"train_min_sizes: {list(advice.train_min_sizes)}, max_size: {advice.max_size}}}")
    return "\n".join(lines) + "\n"

