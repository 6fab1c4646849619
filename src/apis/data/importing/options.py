"""What the importer adds to :class:`~apis.data.sources.ReadOptions` for its own layouts, and the shared
readings of two options: the category of an annotation file, and the void values of ``--ignore-values``."""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from apis.data.importing.errors import refused
from apis.data.importing.files import MAX_PIXELS
from apis.data.sources import ReadOptions

#: The category of objects whose format and options name none.
DEFAULT_CATEGORY = "object"


@dataclass(frozen=True)
class ImportOptions(ReadOptions):
    """:class:`ReadOptions` plus what the importer's own layouts need. ``root``: the source folder, which
    ``categories`` globs are relative to; ``images_dir`` / ``labels_dir``: the label-images layout's two
    folders (None: found in ``root``); ``max_pixels``: the largest width × height read; ``tally``: counts
    readers report for the summary, keyed by (image key, what), e.g. ``(key, "void pixels")``, so that an
    image left out is left out of them too."""

    root: Path = Path(".")
    images_dir: Path | None = None
    labels_dir: Path | None = None
    max_pixels: int = MAX_PIXELS
    tally: Counter = field(default_factory=Counter, compare=False)


def category_of(path: Path, options: ReadOptions) -> str | None:
    """The category of an object read from ``path``: ``options.category`` (default ``object``) when no rules
    are given, else the first glob of ``options.categories`` matching the path relative to the source folder
    (None when none does: a problem the reader reports)."""
    if not options.categories:
        return options.category or DEFAULT_CATEGORY
    root = getattr(options, "root", Path("."))
    rel = Path(os.path.relpath(path, root)).as_posix()
    for pattern, name in options.categories.items():
        if fnmatch.fnmatchcase(rel, pattern):
            return name
    return None


def parse_values(text: str | None, flag: str = "--ignore-values") -> tuple[int, ...] | None:
    """``--ignore-values``: None → the format's default; ``none`` → no void value; else a comma list of
    integers (label values) or ``#RRGGBB`` / ``R:G:B`` colours (colour-coded labels), each colour as the
    integer ``R·65536 + G·256 + B``."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    out = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if part.startswith("#") and len(part) == 7:
                out.append(int(part[1:], 16))
            elif part.count(":") == 2:
                r, g, b = (int(c) for c in part.split(":"))
                if not all(0 <= c <= 255 for c in (r, g, b)):
                    raise ValueError(part)
                out.append(r << 16 | g << 8 | b)
            else:
                value = int(part)
                if value < 0:
                    raise ValueError(part)
                out.append(value)
        except ValueError:
            raise refused(f"{flag} {text!r}: {part!r} is not a value. Fix: pass non-negative integers, #RRGGBB or "
                          "R:G:B colours separated by commas (e.g. 0,255 or #e0e0c0), or none") from None
    return tuple(out)
