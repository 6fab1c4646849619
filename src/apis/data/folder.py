"""A folder of images with nothing else: the start of a project whose boxes people draw (``apis init PROJECT
--images DIR``).

Only files directly in the folder count (subfolders are not searched: a dataset's mask folders would pass for
images); their suffix says which are images: ``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff``, ``.bmp`` (any case).
Every image is decoded once as the loader reads it (:func:`apis.data.images.load_rgb`), and its size is the size
as shown, EXIF orientation applied (:func:`apis.data.images.image_size`). A folder is refused as a whole, every
problem on its own line naming the file and the fix: no image at all, an image that cannot be read, two images
with the same stem (``a.png`` and ``a.jpg``: a name must say which image it is).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from apis.data.images import IMAGE_SUFFIXES, ImageReadError, image_size, load_rgb

# What a browser shows exactly as the loader reads it; anything else (TIFF, 16-bit, CMYK) is stored converted.
_SHOWN_AS_IS = {".png", ".jpg", ".jpeg", ".bmp"}
_MODES_AS_IS = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}


class FolderRefused(ValueError):
    """The folder cannot start a project; ``problems`` has one line per problem, naming the file and the fix."""

    def __init__(self, folder: Path, problems: Sequence[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = (f"{folder}: refused, nothing written: {n} problem{'s' if n != 1 else ''}; fix "
                f"{'them' if n != 1 else 'it'} and run again:")
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


@dataclass(frozen=True)
class FolderImage:
    """An image file of the folder; ``width`` × ``height`` as shown (EXIF orientation applied). ``convert``: a
    browser would not show the file as the loader reads it (TIFF, 16-bit, CMYK), so the project stores it as the
    PNG of :func:`apis.data.images.load_rgb` instead of a copy."""

    path: Path
    width: int
    height: int
    convert: bool

    @property
    def stored_name(self) -> str:
        """The file's name inside the project: its own, or its stem with ``.png`` when converted."""
        return f"{self.path.stem}.png" if self.convert else self.path.name


def scan_images(folder: Path, progress: Callable[[int, int], None] | None = None) -> list[FolderImage]:
    """The images directly in ``folder``, sorted by name, each decoded once; :class:`FolderRefused` listing every
    problem. ``progress(done, total)`` is called per image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderRefused(folder, [f"{folder} is not a folder; pass --images the folder that holds the images"])
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    paths = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        others = len(files)
        raise FolderRefused(folder, [
            f"{folder} holds no image ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) directly"
            + (f" ({others} other file{'s' if others != 1 else ''})" if others else "")
            + "; put the images in this folder itself (subfolders are not searched)"])
    problems: list[str] = []
    by_stem: dict[str, Path] = {}
    for p in paths:
        key = p.stem.lower()  # a.PNG and a.jpg would be one name on a case-insensitive disk
        if key in by_stem:
            problems.append(f"{p.name} and {by_stem[key].name} share the name '{p.stem}': rename or remove one, "
                            "each image needs a name of its own")
        else:
            by_stem[key] = p
    images = []
    for n, p in enumerate(paths, 1):
        try:
            load_rgb(p)  # the loader must be able to read every pixel, not only the header
            width, height = image_size(p)
            with Image.open(p) as im:
                mode = im.mode
        except (ImageReadError, OSError) as err:
            problems.append(f"{p.name}: cannot be read as an image ({_reason(err, p)}); replace it with a readable "
                            "PNG, JPEG, TIFF or BMP, or move it out of the folder")
            continue
        finally:
            if progress is not None:
                progress(n, len(paths))
        convert = p.suffix.lower() not in _SHOWN_AS_IS or mode not in _MODES_AS_IS
        images.append(FolderImage(p, width, height, convert))
    if problems:
        raise FolderRefused(folder, problems)
    return images


def _reason(err: Exception, path: Path) -> str:
    """The error's words without the path it starts with (the line names the file already)."""
    text = str(err)
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text
