"""Reading images from disk as the RGB uint8 arrays the rest of apis expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: The image files apis reads (by suffix, any case): what PIL decodes and a browser shows or the loader converts.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


class ImageReadError(ValueError):
    pass


def load_rgb(path: Path) -> np.ndarray:
    """Read any PNG/JPEG as an H×W×3 uint8 RGB array in the orientation a viewer shows.

    EXIF orientation is applied; greyscale is replicated to three channels; alpha is dropped
    (composited on black, i.e. the stored colour is kept); 16-bit images are scaled to 8 bits.
    """
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return _to_rgb8(im)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from None
    except Image.DecompressionBombError as e:  # PIL's own limit (a warning at 89 M pixels, refused at twice that)
        raise ImageReadError(f"{path}: too many pixels for the loader ({e}). Fix: downscale or tile the image; "
                             "apis data import refuses such files unless --max-pixels is raised") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageReadError(f"{path}: cannot read image ({e})") from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _to_rgb8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.clip(np.asarray(im), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA").convert("RGB")
    elif im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()
