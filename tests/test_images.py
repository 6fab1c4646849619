"""Reading images: every PNG/JPEG flavour becomes the RGB uint8 array a viewer shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apis.data.images import ImageReadError, image_size, load_rgb

H, W = 24, 36  # non-square, so a missed rotation changes the shape

ORIENTATION = 0x0112


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _smooth_rgb() -> np.ndarray:
    """Smooth colours (JPEG keeps them within a few levels) with no symmetry, so every rotation differs."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 40 + 170 * x / (W - 1)
    g = 30 + 180 * y / (H - 1)
    b = 128 + 60 * np.sin(x / 7.0) * np.cos(y / 5.0)
    return np.stack([r, g, b], axis=2).round().astype(np.uint8)


def _check(arr: np.ndarray, expected: np.ndarray) -> None:
    assert arr.dtype == np.uint8
    assert arr.shape == expected.shape
    np.testing.assert_array_equal(arr, expected)


def test_rgb_png_round_trips(tmp_path: Path) -> None:
    ref = _rgb()
    path = tmp_path / "rgb.png"
    Image.fromarray(ref, "RGB").save(path)
    _check(load_rgb(path), ref)
    assert image_size(path) == (W, H)


def test_greyscale_png_is_replicated_to_three_channels(tmp_path: Path) -> None:
    grey = _rgb()[..., 0]
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    assert Image.open(path).mode == "L"
    _check(load_rgb(path), np.repeat(grey[..., None], 3, axis=2))


def test_rgba_png_keeps_the_stored_colour(tmp_path: Path) -> None:
    ref = _rgb()
    alpha = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([ref, alpha]), "RGBA").save(path)
    assert Image.open(path).mode == "RGBA"
    _check(load_rgb(path), ref)


def test_grey_alpha_png(tmp_path: Path) -> None:
    grey = _rgb()[..., 1]
    alpha = np.full((H, W), 100, dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    assert Image.open(path).mode == "LA"
    _check(load_rgb(path), np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_png_decodes_to_palette_colours(tmp_path: Path, transparent: bool) -> None:
    palette = np.random.default_rng(2).integers(0, 256, (16, 3), dtype=np.uint8)
    index = np.random.default_rng(3).integers(0, 16, (H, W), dtype=np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette(palette.flatten().tolist())
    path = tmp_path / "palette.png"
    if transparent:
        im.save(path, transparency=5)
        assert "transparency" in Image.open(path).info
    else:
        im.save(path)
    assert Image.open(path).mode == "P"
    _check(load_rgb(path), palette[index])


def test_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    values = np.random.default_rng(4).integers(0, 65536, (H, W), dtype=np.uint16)
    values[0, :4] = [0, 65535, 128, 32896]  # 32896 = 128·257 → 128; 128 → 0
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    expected8 = np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    arr = load_rgb(path)
    _check(arr, np.repeat(expected8[..., None], 3, axis=2))
    assert list(arr[0, :4, 0]) == [0, 255, 0, 128]


def test_dark_16_bit_png_is_still_read_as_16_bit(tmp_path: Path) -> None:
    """All values below 256: a 16-bit file must not be mistaken for an 8-bit one."""
    values = (np.arange(H * W, dtype=np.uint16).reshape(H, W) % 200).astype(np.uint16)
    path = tmp_path / "dark16.png"
    Image.fromarray(values).save(path)
    arr = load_rgb(path)
    assert arr.max() <= 1  # 199 / 65535 · 255 < 1
    _check(arr, np.repeat(np.floor(values * 255.0 / 65535.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2))


# ------------------------------------------------------------------------------ EXIF orientation
# Orientation 6: the stored image must be turned 90° clockwise to display; 8: 90° anticlockwise.
ROTATIONS = {6: -1, 8: 1}  # np.rot90 k (positive k = anticlockwise)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg(tmp_path: Path, orientation: int) -> None:
    stored = _smooth_rgb()
    path = tmp_path / f"rot{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=_exif(orientation))
    with Image.open(path) as im:
        assert im.getexif()[ORIENTATION] == orientation
        raw = np.asarray(im.convert("RGB"))  # the decoder's pixels, in storage order
    expected = np.rot90(raw, ROTATIONS[orientation])
    arr = load_rgb(path)
    assert arr.shape == (W, H, 3)
    _check(arr, expected)
    # And against the array we wrote, through JPEG's loss.
    diff = np.abs(arr.astype(int) - np.rot90(stored, ROTATIONS[orientation]).astype(int))
    assert diff.mean() < 3 and diff.max() < 40
    assert image_size(path) == (H, W)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_png_is_exact(tmp_path: Path, orientation: int) -> None:
    stored = _rgb(5)
    path = tmp_path / f"rot{orientation}.png"
    Image.fromarray(stored).save(path, exif=_exif(orientation))
    with Image.open(path) as im:
        assert im.getexif()[ORIENTATION] == orientation
    k = {3: 2, 6: -1, 8: 1}[orientation]
    expected = np.rot90(stored, k)
    _check(load_rgb(path), expected)
    assert image_size(path) == (expected.shape[1], expected.shape[0])
    # Top-left of the displayed image: orientation 6 shows the stored bottom-left corner there.
    if orientation == 6:
        np.testing.assert_array_equal(load_rgb(path)[0, 0], stored[H - 1, 0])


def test_image_size_without_orientation_is_width_height(tmp_path: Path) -> None:
    path = tmp_path / "plain.jpg"
    Image.fromarray(_smooth_rgb()).save(path)
    assert image_size(path) == (W, H)
    assert load_rgb(path).shape == (H, W, 3)


# ----------------------------------------------------------------------------------------- errors
def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(_rgb()).save(good)
    data = good.read_bytes()
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"definitely not an image" * 8)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    return {
        "missing": tmp_path / "nowhere" / "missing.png",
        "garbage": garbage,
        "empty": empty,
        "truncated": truncated,
    }


@pytest.mark.parametrize("case", ["missing", "garbage", "empty", "truncated"])
@pytest.mark.parametrize("reader", [load_rgb, image_size], ids=["load_rgb", "image_size"])
def test_unreadable_file_names_the_path(tmp_path: Path, case: str, reader) -> None:
    path = _bad_files(tmp_path)[case]
    with pytest.raises(ImageReadError) as err:
        reader(path)
    assert str(path) in str(err.value)
    if case == "missing":
        assert "not found" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_exif_rotated_16_bit_png(tmp_path: Path) -> None:
    values = np.random.default_rng(6).integers(0, 65536, (H, W), dtype=np.uint16)
    path = tmp_path / "sixteen_rot.png"
    Image.fromarray(values).save(path, exif=_exif(8))
    expected8 = np.floor(np.rot90(values, 1).astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    _check(load_rgb(path), np.repeat(expected8[..., None], 3, axis=2))
    assert image_size(path) == (H, W)


def test_an_image_past_pils_pixel_limit_is_a_clear_read_error(tmp_path: Path) -> None:
    # A header claiming 40000×40000 pixels: PIL refuses to decode it; the loader says which file and the fix.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "huge.png"
    ihdr = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match=r"huge\.png: too many pixels for the loader .* Fix: downscale"):
        load_rgb(path)
