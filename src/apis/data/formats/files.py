"""Finding a format's files: image files, pairing by stem, and the keys images are imported under.

A *stem* here is a file's path relative to the folder it was found in, without its suffix, with ``/``
separators (``train/a.jpg`` → ``train/a``), so files of one name in two subfolders stay apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from apis.data.images import IMAGE_SUFFIXES
from apis.data.sources import Problems


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` (and its subfolders when ``recursive``), sorted; hidden files left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and is_image(p) and not p.name.startswith("."))


def stem_of(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` without its suffix, ``/``-separated."""
    return Path(path).relative_to(root).with_suffix("").as_posix()


def by_stem(paths: Iterable[Path], root: Path, what: str, fix: str) -> tuple[dict[str, Path], Problems]:
    """``paths`` keyed by :func:`stem_of`. Files sharing a stem (``a.jpg`` beside ``a.png``) are left out, all
    of them (either could be the one meant), with one problem naming them (``what``: the kind of file, ``fix``:
    how to resolve it)."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(paths):
        groups.setdefault(stem_of(p, root), []).append(p)
    problems = [f"{' and '.join(map(str, ps))}: {len(ps)} {what} files of one name. Fix: {fix}"
                for ps in groups.values() if len(ps) > 1]
    return {stem: ps[0] for stem, ps in groups.items() if len(ps) == 1}, problems


def image_keys(stems: Sequence[str]) -> dict[str, str]:
    """The key each image is imported under (its file's new stem): the last part of its stem where that is
    unique in the source, else the whole stem with ``/`` as ``__`` (``train/a`` and ``val/a`` → ``train__a``,
    ``val__a``)."""
    last = [s.rsplit("/", 1)[-1] for s in stems]
    counts: dict[str, int] = {}
    for name in last:
        counts[name] = counts.get(name, 0) + 1
    return {s: (n if counts[n] == 1 else s.replace("/", "__")) for s, n in zip(stems, last, strict=True)}


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in ``root`` once both are resolved (symlinks and ``..`` followed)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True
