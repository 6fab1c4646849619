"""Decoding the files of a source under a pixel limit that turns a huge (or decompression-bomb) file into a
refusal naming it instead of a traceback. Finding them (image files, stems that must be unique) is
:mod:`apis.data.formats.files`, shared with the tools' formats."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Default largest image (width × height) read: 2**27 = 134 M pixels (11585² or 16384×8192). Under PIL's own
#: refusal threshold (about 179 M), so the training loader reads every imported image too. ``--max-pixels``.
MAX_PIXELS = 2**27


class FileProblem(ValueError):
    """A file that cannot be read as it is: the message names it and the fix."""


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """While importing, PIL refuses images over ``max_pixels`` (instead of its default) without warnings;
    :func:`check_pixels` turns that into a problem line."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def check_pixels(path: Path, limit: int) -> None:
    """Raise :class:`FileProblem` when ``path`` is not an image PIL can open, or has over ``limit`` pixels;
    reads the header only (PIL's own guard is off for it, so the message gives the file's real size)."""
    guard = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise FileProblem(f"{path}: file not found. Fix: restore it or remove what refers to it") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FileProblem(f"{path}: cannot read ({e}). Fix: replace it with a readable image, or remove it") from None
    finally:
        Image.MAX_IMAGE_PIXELS = guard
    if w * h > limit:
        raise FileProblem(f"{path}: {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} (a guard against "
                          "decompression bombs). Fix: pass --max-pixels with a larger number if the file is genuine")


#: File formats whose compression changes pixel values: a label saved so no longer names its objects.
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")  # WebP may be lossless; PIL cannot tell, so refuse rather than guess


def read_pixels(path: Path, limit: int, labels: bool = False
                ) -> tuple[np.ndarray, str, list[tuple[int, int, int]] | None]:
    """The pixels of a mask or label file as stored (H×W or H×W×C; no colour conversion, no EXIF), PIL's
    mode, and for a palette image its colours. ``labels``: the file's values name objects, so a lossy file
    (JPEG: every edge smeared into values of no object) is refused; a binary mask in JPEG is thresholded and may
    stay. Raises :class:`FileProblem` naming the file and the fix."""
    check_pixels(path, limit)
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                raise FileProblem(f"{path}: holds {im.n_frames} pages or frames; apis reads one 2-D mask or label a "
                                  "file, and would see only the first. Fix: save one page per file (a 3-D stack as "
                                  "one image per slice)")
            if labels and im.format in LOSSY_FORMATS:
                raise FileProblem(f"{path}: a label image saved as {im.format}: its lossy compression changes the "
                                  "values around every object, so they no longer name objects. Fix: save the labels "
                                  "as PNG or TIFF (lossless)")
            mode = im.mode
            palette = None
            if mode == "P":
                raw = im.getpalette() or []
                palette = [tuple(raw[i:i + 3]) for i in range(0, len(raw) - 2, 3)]
            return _decoded(im), mode, palette
    except FileProblem:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise FileProblem(f"{path}: cannot read ({e}). Fix: replace it with a readable image, or remove it") from None


#: Rows copied out of PIL at a time: PIL's own ``np.asarray(image)`` goes through two whole-image byte
#: strings (an 8000×8000 16-bit label peaked at 400 MB for its 128 MB of pixels); strips keep one copy.
STRIP_BYTES = 1 << 22


def _decoded(im: Image.Image) -> np.ndarray:
    """The pixels of an open PIL image as a numpy array, copied out a strip of rows at a time."""
    im.load()
    width, height = im.size
    first = np.asarray(im.crop((0, 0, width, min(1, height))))
    out = np.empty((height, *first.shape[1:]), dtype=first.dtype)
    rows = max(1, STRIP_BYTES // max(1, first.nbytes))
    for y in range(0, height, rows):
        out[y:y + rows] = np.asarray(im.crop((0, y, width, min(height, y + rows))))
    return out
