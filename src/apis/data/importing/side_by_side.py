"""The ``side-by-side`` layout: images and their label images in one folder, told apart by a suffix
(``X_img.png`` + ``X_mask.png``, ``X-raw.tif`` + ``X-labels.tif``), perhaps beside other per-image files
(``X_fg.png``) that are ignored and counted.

Files are grouped by the stem left after removing the last ``_suffix`` / ``-suffix``. Without options the
roles are told from a few files of each suffix (:func:`looks_like`): the image suffix is the one whose
files are photos (neighbouring pixels differ more often than not: noise, texture), the label suffix the one
whose files hold integer labels with several values (large flat regions, three values or more). Where
that is not exactly one of each, the import is refused with the fix: ``--image-pattern '*_img.png'
--label-pattern '*_mask.png'`` (one ``*`` each, standing for the shared stem). Label values are read as
:mod:`.label_values` says.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from apis.data.formats.files import image_files
from apis.data.importing.errors import refused
from apis.data.importing.files import MAX_PIXELS, FileProblem, read_pixels
from apis.data.importing.label_values import label_values, read_label_objects
from apis.data.sources import Format, ImageFrame, ReadOptions, SourceImage, SourceObject

SPLIT = re.compile(r"^(?P<base>.+)[_-](?P<suffix>[^_-]+)$")
#: A photo's neighbouring pixels differ at least this often (DSB's images: 0.33 to 0.94; labels made from
#: its masks: 0.004 to 0.033, only along object edges).
PHOTO_CHANGE = 0.15
#: At most this many suffixes are roles; more means the last ``_part`` is a number or a name, not a role.
MAX_ROLES = 6
SAMPLE = 3


def _groups(src: Path) -> dict[str, dict[str, list[Path]]]:
    """suffix → base → files (several where ``X_img.png`` and ``X_img.jpg`` both exist)."""
    out: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for f in image_files(src):
        m = SPLIT.match(f.stem)
        if m:
            out[m["suffix"]][m["base"]].append(f)
    return out


def detect(src: Path) -> bool:
    files = image_files(src)
    groups = _groups(src)
    bases = Counter(b for by_base in groups.values() for b in by_base)
    matched = sum(len(v) for by_base in groups.values() for v in by_base.values())
    return 2 <= len(groups) <= MAX_ROLES and any(n >= 2 for n in bases.values()) and 2 * matched >= len(files) > 0


def looks_like(path: Path, limit: int) -> str:
    """``photo``, ``labels`` (flat regions, ≥ 3 values), ``binary`` (2 values), ``blank`` (1 value)."""
    pixels, mode, _ = read_pixels(path, limit)
    values, _ = label_values(pixels, mode, path) if pixels.dtype.kind != "f" else (pixels, "")
    if values.ndim != 2 or min(values.shape) < 2:
        return "blank"
    changes = ((values[:, 1:] != values[:, :-1]).mean() + (values[1:] != values[:-1]).mean()) / 2
    if changes > PHOTO_CHANGE:
        return "photo"
    n = len(np.unique(values))
    return "labels" if n >= 3 else "binary" if n == 2 else "blank"


def _pattern(pattern: str, flag: str) -> re.Pattern:
    if pattern.count("*") != 1 or "/" in pattern:
        raise refused(f"{flag} {pattern!r}: needs exactly one * (the stem an image and its labels share) and no "
                      "folder. Fix: e.g. --image-pattern '*_img.png' --label-pattern '*_mask.png'")
    head, tail = (fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z") for part in pattern.split("*"))
    return re.compile(f"(?s:{head}(?P<stem>.+){tail})\\Z")


def _roles(src: Path, groups: dict[str, dict[str, list[Path]]], limit: int) -> tuple[str, str]:
    """The image suffix and the label suffix, told from a few files of each (module doc), or refused."""
    if not groups:
        raise refused(f"{src}: no files named like X_img.png and X_mask.png (a stem, _ or -, a suffix) side by side. "
                      "Fix: pass --layout for the source's format")
    kinds: dict[str, str] = {}
    for suffix, by_base in sorted(groups.items()):
        sample = [fs[0] for _, fs in sorted(by_base.items())][:SAMPLE]
        try:
            seen = {looks_like(f, limit) for f in sample}
        except FileProblem as e:
            raise refused(f"{e} (while telling images from labels)") from None
        kinds[suffix] = seen.pop() if len(seen) == 1 else "mixed"
    photos = [s for s, k in kinds.items() if k == "photo"]
    labels = [s for s, k in kinds.items() if k == "labels"]
    if len(photos) == 1 and len(labels) == 1:
        return photos[0], labels[0]
    seen_as = ", ".join(f"*_{s}: {k}" for s, k in sorted(kinds.items()))
    ext = next(iter(next(iter(groups.values())).values()))[0].suffix
    raise refused(f"{src}: images and labels side by side, but which suffix is which cannot be told ({seen_as}; one "
                  f"photo suffix and one label suffix needed). Fix: pass --image-pattern '*_IMG{ext}' "
                  f"--label-pattern '*_LABEL{ext}' with the two suffixes")


def scan(src: Path, options: ReadOptions) -> tuple[list[SourceImage], list[str]]:
    """Image and label file of each stem (module doc); problems: a stem without one of them, or with two files
    of one role (``X_img.png`` beside ``X_img.jpg``). Other files of a stem are counted as ignored."""
    if bool(options.image_pattern) != bool(options.label_pattern):
        raise refused("--image-pattern and --label-pattern go together. Fix: pass both, e.g. '*_img.png' and "
                      "'*_mask.png'")
    files = image_files(src)
    roles: dict[str, dict[str, list[Path]]] = {"image": defaultdict(list), "label": defaultdict(list)}
    extra: Counter = Counter()
    if options.image_pattern:
        pats = {"image": _pattern(options.image_pattern, "--image-pattern"),
                "label": _pattern(options.label_pattern, "--label-pattern")}
        for f in files:
            hits = [(role, m["stem"]) for role, p in pats.items() if (m := p.match(f.name))]
            for role, stem in hits[:1]:
                roles[role][stem].append(f)
            if not hits:
                m = SPLIT.match(f.stem)
                extra[m["base"] if m else f.stem] += 1
    else:
        groups = _groups(src)
        image_suffix, label_suffix = _roles(src, groups, getattr(options, "max_pixels", MAX_PIXELS))
        roles = {"image": groups[image_suffix], "label": groups[label_suffix]}
        for suffix, by_base in groups.items():
            if suffix not in (image_suffix, label_suffix):
                for base, fs in by_base.items():
                    extra[base] += len(fs)
    images, problems = [], []
    for stem in sorted(set(roles["image"]) | set(roles["label"])):
        image, label = roles["image"].get(stem, []), roles["label"].get(stem, [])
        for role, fs in (("image", image), ("label", label)):
            if len(fs) > 1:
                names = ", ".join(f.name for f in fs)
                problems.append(f"{fs[0]}: {len(fs)} {role} files of the stem {stem!r} ({names}); which one is meant "
                                "is unclear. Fix: rename or remove all but one")
        if len(image) > 1 or len(label) > 1:
            continue
        if not label:
            problems.append(f"{image[0]}: no label file of the stem {stem!r} beside it. Fix: add it, or remove the "
                            "image")
        elif not image:
            problems.append(f"{label[0]}: label file without an image of the stem {stem!r}. Fix: add the image, or "
                            "remove the label file")
        else:
            images.append(SourceImage(stem, image[0], label=label[0]))
            if extra[stem] and hasattr(options, "tally"):
                options.tally[(stem, "other per-image files ignored")] += extra[stem]
    return images, problems


def read(item: SourceImage, frame: ImageFrame, options: ReadOptions) -> tuple[list[SourceObject], list[str]]:
    return read_label_objects(item, frame, options)


FORMAT = Format("side-by-side", detect, scan, read,
                help="X_img.png + X_mask.png in SRC, told apart by suffix (or --image-pattern/--label-pattern)")
