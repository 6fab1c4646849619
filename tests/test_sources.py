"""The reader records' frames: EXIF orientations move a raster as PIL and the training loader move the image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

from apis.data.sources import SourceObject, orient_array, read_frame


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_array_matches_pil_exif_transpose(tmp_path, orientation):
    stored = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif.tobytes())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(orient_array(stored, orientation), shown)
    frame = read_frame(path)
    assert frame.orientation == orientation and frame.stored == (5, 3)
    assert frame.shown == (shown.shape[1], shown.shape[0])


def test_source_object_from_rle_has_tight_box_and_area():
    mask = np.zeros((6, 9), bool)
    mask[2:4, 3:8] = True
    obj = SourceObject.from_rle(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))), "cell", "a.png")
    assert obj.box == (3.0, 2.0, 5.0, 2.0) and obj.area == 10.0 and obj.rle["size"] == [6, 9]
    assert isinstance(obj.rle["counts"], str)
