"""Masks of images with an EXIF orientation land on the pixels the loader shows: for each imported mask, the
mean brightness of ``load_rgb``'s image inside it equals that of the original image inside the original
mask. Built from the DSB images: stored pixels = the original, tag 6 (a quarter turn) or 3 (a half turn)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dsb_sources import DSB, KEYS, annotations, image_path, imported, key_of, labels, masks, run
from PIL import Image

from apis.data.images import load_rgb
from apis.data.importers import import_dataset
from apis.data.sources import orient_array

COLOUR = key_of(KEYS, width=320)  # 320×256: a quarter turn changes its size
SQUARE = key_of(KEYS, width=256)


def brightness(image: np.ndarray, ms: list[np.ndarray]) -> list[float]:
    grey = image.astype(np.float64).mean(axis=2)
    return [float(grey[m].mean()) for m in ms]


def tagged_copy(key: str, path: Path, orientation: int) -> None:
    """The original pixels stored in ``path`` (JPEG or PNG) with EXIF ``orientation``."""
    im = Image.open(image_path(key)).convert("RGB")
    exif = im.getexif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, exif=exif.tobytes(), **({"quality": 100} if path.suffix == ".jpg" else {}))


def mask_folder(root: Path, key: str, suffix: str, orientation: int, drawn: str = "stored") -> Path:
    """SRC/key/images/key.SUFFIX tagged, SRC/key/masks/*.png: the original masks (``stored``) or the same
    turned as the image is shown (``shown``)."""
    tagged_copy(key, root / key / "images" / f"{key}{suffix}", orientation)
    (root / key / "masks").mkdir(parents=True)
    for i, m in enumerate(masks(key)):
        m = orient_array(m, orientation) if drawn == "shown" else m
        Image.fromarray(m.astype(np.uint8) * 255).save(root / key / "masks" / f"{i:03d}.png")
    return root


def assert_on_the_right_pixels(out: Path, key: str, suffix: str) -> None:
    ms = [m for _, m, _ in imported(out)[key]]
    shown = load_rgb(out / "train" / "images" / f"{key}{suffix}")
    assert ms[0].shape == shown.shape[:2]
    want = brightness(load_rgb(image_path(key)), masks(key))
    assert np.allclose(brightness(shown, ms), want, atol=1.0)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("drawn", ["stored", "shown"])
def test_quarter_turn_masks_are_placed_by_their_size(tmp_path, suffix, drawn):
    src = mask_folder(tmp_path / "src", COLOUR, suffix, 6, drawn)
    import_dataset(src, tmp_path / "out", val_fraction=0)
    assert_on_the_right_pixels(tmp_path / "out", COLOUR, suffix)
    image = annotations(tmp_path / "out")["images"][0]
    assert (image["width"], image["height"]) == (256, 320)  # the shown size, as the loader reads it


@pytest.mark.parametrize(("key", "orientation"), [(COLOUR, 3), (SQUARE, 6)])
def test_same_size_stored_and_shown_is_refused_until_exif_is_given(tmp_path, capsys, key, orientation):
    src = mask_folder(tmp_path / "src", key, ".jpg", orientation)
    code, text = run(["data", "import", src, tmp_path / "out"], capsys)
    assert code == 2 and "--exif stored or --exif shown" in text and f"EXIF orientation {orientation}" in text
    assert not (tmp_path / "out").exists()
    import_dataset(src, tmp_path / "out", exif="stored", val_fraction=0)
    assert_on_the_right_pixels(tmp_path / "out", key, ".jpg")
    # --exif shown on masks drawn on the stored pixels puts them on the wrong ones: the option is obeyed.
    import_dataset(src, tmp_path / "wrong", exif="shown", val_fraction=0)
    with pytest.raises(AssertionError):
        assert_on_the_right_pixels(tmp_path / "wrong", key, ".jpg")


def test_label_image_of_a_turned_jpeg_is_turned_with_it(tmp_path):
    tagged_copy(COLOUR, tmp_path / "src" / "images" / f"{COLOUR}.jpg", 8)
    (tmp_path / "src" / "labels").mkdir()
    Image.fromarray(labels(COLOUR)).save(tmp_path / "src" / "labels" / f"{COLOUR}.png")
    import_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0)
    assert_on_the_right_pixels(tmp_path / "out", COLOUR, ".jpg")


def test_masks_of_neither_size_are_refused(tmp_path, capsys):
    src = mask_folder(tmp_path / "src", COLOUR, ".jpg", 6)
    first = sorted((src / COLOUR / "masks").iterdir())[0]
    Image.fromarray(np.full((100, 100), 255, np.uint8)).save(first)
    code, text = run(["data", "import", src, tmp_path / "out"], capsys)
    assert code == 2 and f"{first}: is 100x100" in text and "320x256 stored, 256x320 shown" in text
    shutil.rmtree(src)
    assert not (tmp_path / "out").exists() and DSB.is_dir()
