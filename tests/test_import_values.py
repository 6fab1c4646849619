"""What a label value or a mask's grey value means, on sources built from the DSB images: VOC void borders,
Cityscapes class ids, colour-coded labels, antialiased and alpha masks. Every imported mask must equal the
object the source drew, pixel for pixel."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from dsb_sources import DSB, KEYS, copy_images, imported, key_of, labels, masks, run, same_masks
from PIL import Image

from apis.data.importers import import_dataset

KERNEL = np.ones((3, 3), np.uint8)


def ring(mask: np.ndarray) -> np.ndarray:
    """The pixels just outside ``mask`` (a 1-pixel border)."""
    return cv2.dilate(mask.astype(np.uint8), KERNEL).astype(bool) & ~mask


def edge(mask: np.ndarray) -> np.ndarray:
    """The mask's own outermost pixels."""
    return mask & ~cv2.erode(mask.astype(np.uint8), KERNEL).astype(bool)


def voc_palette() -> list[int]:
    """VOC's colour map: index i's bits spread over the top bits of R, G and B (255 → (224, 224, 192))."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def voc_label(key: str) -> tuple[np.ndarray, int]:
    """SegmentationObject-style indices: object i at i + 1, a 255 border around every object; and the
    number of border pixels."""
    lab = labels(key, dtype=np.uint8)
    border = np.zeros(lab.shape, bool)
    for m in masks(key):
        border |= ring(m)
    border &= lab == 0
    lab[border] = 255
    return lab, int(border.sum())


def test_voc_void_border_is_neither_object_nor_background(tmp_path, capsys):
    keys = KEYS[:3]
    copy_images(keys, tmp_path / "src" / "JPEGImages")
    (tmp_path / "src" / "SegmentationObject").mkdir()
    void = 0
    for k in keys:
        lab, n = voc_label(k)
        void += n
        im = Image.fromarray(lab, mode="P")
        im.putpalette(voc_palette())
        im.save(tmp_path / "src" / "SegmentationObject" / f"{k}.png")
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out", "--val-fraction", "0"], capsys)
    assert code == 0, text
    got = imported(tmp_path / "out")
    for k in keys:
        # One object per nucleus, none made of the borders, each exactly the nucleus.
        assert same_masks([m for _, m, _ in got[k]], masks(k))
    assert f"void pixels: {void:,} in 3 images" in text
    # --ignore-values none: 255 becomes an object (the old behaviour), one more per image.
    result = import_dataset(tmp_path / "src", tmp_path / "none", ignore_values="none", val_fraction=0)
    assert result.instances["train"] == sum(len(masks(k)) for k in keys) + 3


def test_colour_coded_labels_read_one_object_per_colour(tmp_path):
    keys = KEYS[:2]
    copy_images(keys, tmp_path / "src" / "images")
    (tmp_path / "src" / "labels").mkdir()
    rng = np.random.default_rng(0)
    for k in keys:
        ms = masks(k)
        rgb = np.zeros((*ms[0].shape, 3), np.uint8)
        colours = rng.choice(200 * 200 * 200, size=len(ms), replace=False)  # distinct, never white or void
        for m, c in zip(ms, colours, strict=True):
            rgb[m] = (c // 40000 + 1, c // 200 % 200 + 1, c % 200 + 1)
            rgb[ring(m) & (rgb.max(axis=2) == 0)] = (224, 224, 192)  # VOC's void colour as RGB
        Image.fromarray(rgb).save(tmp_path / "src" / "labels" / f"{k}.png")
    result = import_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0)
    got = imported(tmp_path / "out")
    for k in keys:
        assert same_masks([m for _, m, _ in got[k]], masks(k))
    assert any(n.startswith("void pixels:") for n in result.notes)


def cityscapes_label(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nuclei as class 26 instances (26000 + k); of the background, the top third "road" (stuff, 7) and the
    bottom third a crowd region of class 26; the rest 0. Returns the label, the road and the crowd."""
    lab = labels(key, first=26000, dtype=np.uint16)
    h = lab.shape[0]
    rows = np.arange(h)[:, None]
    road = (lab == 0) & (rows < h // 3)
    crowd = (lab == 0) & (rows >= 2 * h // 3)
    lab[road] = 7
    lab[crowd] = 26
    return lab, road, crowd


def test_cityscapes_ids_give_classes_crowds_and_leave_stuff_out(tmp_path, capsys):
    keys = KEYS[:3]
    copy_images(keys, tmp_path / "src" / "images")
    (tmp_path / "src" / "labels").mkdir()
    crowds = {}
    for k in keys:
        lab, _, crowd = cityscapes_label(k)
        crowds[k] = crowd
        Image.fromarray(lab).save(tmp_path / "src" / "labels" / f"{k}.png")
    (tmp_path / "names.yaml").write_text("7: road\n26: nucleus\n24: person\n")
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out", "--class-from-value", "--categories",
                      tmp_path / "names.yaml", "--val-fraction", "0"], capsys)
    assert code == 0, text
    got = imported(tmp_path / "out")
    for k in keys:
        assert same_masks([m for c, m, crowd in got[k] if not crowd and c == "nucleus"], masks(k))
        crowd = [(c, m) for c, m, is_crowd in got[k] if is_crowd]
        assert len(crowd) == 1 and crowd[0][0] == "nucleus" and np.array_equal(crowd[0][1], crowds[k])
        assert all(c == "nucleus" for c, _, _ in got[k])  # the road is stuff: no annotation at all
    assert "stuff regions left out: 3 (road" in text and "crowd regions: 3 kept" in text
    code, text = run(["data", "check", tmp_path / "out" / "train" / "annotations.json"], capsys)
    assert code == 0, text
    # Without names the classes are class_<id>.
    result = import_dataset(tmp_path / "src", tmp_path / "plain", class_from_value=True, val_fraction=0)
    assert result.categories == ["class_26"]
    # Unsaid, such ids are refused: read as one object per value the road and the crowd would be two more objects.
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "unsaid", "--val-fraction", "0"], capsys)
    assert code == 2 and "look like class × 1000 + k ids" in text and "--class-from-value" in text
    assert not (tmp_path / "unsaid").exists()
    plain = import_dataset(tmp_path / "src", tmp_path / "said", val_fraction=0, class_from_value=False)
    assert plain.instances["train"] == sum(len(masks(k)) for k in keys) + 2 * len(keys)


def test_many_objects_numbered_past_1000_are_not_taken_for_class_ids(tmp_path):
    keys = KEYS[:2]
    copy_images(keys, tmp_path / "src" / "images")
    (tmp_path / "src" / "labels").mkdir()
    for k in keys:  # objects numbered on both sides of 1000, densely: one number per object
        Image.fromarray(labels(k, first=990)).save(tmp_path / "src" / "labels" / f"{k}.png")
    import_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0)
    got = imported(tmp_path / "out")
    assert all(same_masks([m for _, m, _ in got[k]], masks(k)) for k in keys)


def test_an_8_bit_label_using_every_value_and_255_is_refused_as_ambiguous(tmp_path, capsys):
    key = KEYS[0]
    copy_images([key], tmp_path / "src" / "images")
    (tmp_path / "src" / "labels").mkdir()
    h, w = masks(key)[0].shape
    lab = (np.arange(h * w) % 256).reshape(h, w).astype(np.uint8)  # 255 objects of 1..255 (and 0)
    Image.fromarray(lab).save(tmp_path / "src" / "labels" / f"{key}.png")
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out", "--val-fraction", "0"], capsys)
    assert code == 2 and "--ignore-values none" in text and not (tmp_path / "out").exists()
    result = import_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0, ignore_values="none")
    assert result.instances["train"] == 255


def antialiased(mask: np.ndarray, peak: int) -> np.ndarray:
    """``mask`` drawn with grey edges: its own edge at 200/255 of ``peak``, the ring outside at 60/255, as an
    antialiasing brush leaves them; thresholded at half way it is ``mask`` again."""
    dtype = np.uint8 if peak == 255 else np.uint16
    out = np.zeros(mask.shape, dtype)
    out[mask] = peak
    out[edge(mask)] = 200 * peak // 255
    out[ring(mask)] = 60 * peak // 255
    return out


@pytest.mark.parametrize("save", ["antialiased-8bit", "antialiased-16bit", "zero-one", "LA-grey", "RGBA-red",
                                  "alpha-only", "RGBA-opaque-white"])
def test_mask_files_are_their_grey_value_thresholded(tmp_path, save):
    key = key_of(KEYS, n_masks=29)
    src = tmp_path / "src" / key
    shutil.copytree(DSB / key / "images", src / "images")
    (src / "masks").mkdir()
    ms = masks(key)
    for i, m in enumerate(ms):
        u8 = m.astype(np.uint8) * 255
        if save == "antialiased-8bit":
            im = Image.fromarray(antialiased(m, 255))
        elif save == "antialiased-16bit":
            im = Image.fromarray(antialiased(m, 65535))
        elif save == "zero-one":
            im = Image.fromarray(m.astype(np.uint8))
        elif save == "LA-grey":
            im = Image.fromarray(np.dstack([u8, np.full_like(u8, 255)]), mode="LA")
        elif save == "RGBA-red":
            im = Image.fromarray(np.dstack([u8, 0 * u8, 0 * u8, np.full_like(u8, 255)]), mode="RGBA")
        elif save == "alpha-only":  # drawn in alpha on a constant grey layer
            im = Image.fromarray(np.dstack([np.full_like(u8, 255), u8]), mode="LA")
        else:  # an opaque layer: alpha says nothing (it once made one full-image object of all 29)
            im = Image.fromarray(np.dstack([u8, u8, u8, np.full_like(u8, 255)]), mode="RGBA")
        im.save(src / "masks" / f"{i:03d}.png")
    result = import_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0)
    got = imported(tmp_path / "out")[key]
    assert len(got) == 29 and result.instances["train"] == 29
    assert same_masks([m for _, m, _ in got], ms)


def test_a_faint_mask_is_refused_not_guessed(tmp_path, capsys):
    key = KEYS[0]
    shutil.copytree(DSB / key, tmp_path / "src" / key)
    first = sorted((tmp_path / "src" / key / "masks").iterdir())[0]
    Image.fromarray((np.asarray(Image.open(first)) > 0).astype(np.uint8) * 100).save(first)  # drawn at 100/255
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out"], capsys)
    assert code == 2 and "mask is empty" in text and first.name in text and "--mask-threshold" in text
    assert not (tmp_path / "out").exists()
    result = import_dataset(tmp_path / "src", tmp_path / "out", mask_threshold=100, val_fraction=0)
    assert same_masks([m for _, m, _ in imported(tmp_path / "out")[key]], masks(key))
    assert result.instances["train"] == len(masks(key))


def test_label_images_of_16_bit_values_import_exactly(tmp_path):
    keys = KEYS[:4]
    copy_images(keys, tmp_path / "src" / "PNGImages")
    (tmp_path / "src" / "PedMasks").mkdir()
    for k in keys:
        Image.fromarray(labels(k, first=301)).save(tmp_path / "src" / "PedMasks" / f"{k}_mask.png")
    import_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0)
    got = imported(tmp_path / "out")
    assert all(same_masks([m for _, m, _ in got[k]], masks(k)) for k in keys)
    assert Path(tmp_path / "out" / "train" / "annotations.json").is_file()


def test_a_label_image_saved_as_jpeg_is_refused_a_jpeg_mask_is_thresholded(tmp_path, capsys):
    # JPEG smears every edge of a label image into values of no object: 70 nuclei read as 89 objects before.
    keys = KEYS[:3]
    copy_images(keys, tmp_path / "src" / "images")
    (tmp_path / "src" / "labels").mkdir()
    for k in keys:
        Image.fromarray(labels(k, dtype=np.uint8)).save(tmp_path / "src" / "labels" / f"{k}.jpg", quality=90)
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out", "--val-fraction", "0"], capsys)
    assert code == 2 and "saved as JPEG" in text and "PNG or TIFF" in text and not (tmp_path / "out").exists()
    # A binary mask in JPEG is still its grey value thresholded at 128: one object, the nucleus.
    key = KEYS[0]
    folder = tmp_path / "masks" / key
    copy_images([key], folder / "images")
    (folder / "masks").mkdir()
    for i, m in enumerate(masks(key)):
        Image.fromarray(m.astype(np.uint8) * 255).save(folder / "masks" / f"{i:03d}.jpg", quality=95)
    import_dataset(tmp_path / "masks", tmp_path / "out2", val_fraction=0)
    got = [m for _, m, _ in imported(tmp_path / "out2")[key]]
    assert len(got) == len(masks(key))
    assert min(float((a & b).sum() / (a | b).sum()) for a, b in zip(got, masks(key), strict=True)) > 0.9


def test_multi_page_tiff_labels_and_images_are_refused_not_cut_to_their_first_page(tmp_path, capsys):
    key = KEYS[0]
    copy_images([key], tmp_path / "src" / "images")
    (tmp_path / "src" / "labels").mkdir()
    lab = Image.fromarray(labels(key))
    lab.save(tmp_path / "src" / "labels" / f"{key}.tif", save_all=True, append_images=[lab])
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out", "--val-fraction", "0"], capsys)
    assert code == 2 and "holds 2 pages" in text and not (tmp_path / "out").exists()
    (tmp_path / "src" / "labels" / f"{key}.tif").unlink()
    lab.save(tmp_path / "src" / "labels" / f"{key}.tif")
    (tmp_path / "src" / "images" / f"{key}.png").unlink()
    im = Image.open(DSB / key / "images" / f"{key}.png").convert("L")
    im.save(tmp_path / "src" / "images" / f"{key}.tif", save_all=True, append_images=[im])
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out", "--val-fraction", "0"], capsys)
    assert code == 2 and "holds 2 pages" in text and not (tmp_path / "out").exists()


def test_webp_images_are_images_to_every_layout_but_a_webp_label_is_refused(tmp_path, capsys):
    # One list of image suffixes (apis.data.images.IMAGE_SUFFIXES): a .webp image beside its label imports.
    key = KEYS[0]
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "labels").mkdir()
    Image.open(DSB / key / "images" / f"{key}.png").convert("RGB").save(tmp_path / "src" / "images" / f"{key}.webp",
                                                                        lossless=True)
    Image.fromarray(labels(key)).save(tmp_path / "src" / "labels" / f"{key}.png")
    import_dataset(tmp_path / "src", tmp_path / "out", val_fraction=0)
    assert same_masks([m for _, m, _ in imported(tmp_path / "out")[key]], masks(key))
    (tmp_path / "src" / "labels" / f"{key}.png").unlink()
    Image.fromarray(labels(key, dtype=np.uint8)).save(tmp_path / "src" / "labels" / f"{key}.webp", lossless=True)
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out2", "--val-fraction", "0"], capsys)
    assert code == 2 and "saved as WEBP" in text
