"""Each labelling tool's sample is claimed by its own format and no other (apis.data.formats), the importer's
registry picks it, and none of them claims the importer's own layouts."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from format_samples import DSB, dsb, write_cellpose, write_coco, write_labelme, write_voc, write_yolo
from PIL import Image

from apis.data.archive import unpacked_source
from apis.data.formats import cellpose, coco_json, labelme, voc_seg, yolo_det, yolo_seg
from apis.data.importing.registry import FORMATS, pick_format

OURS = (coco_json.FORMAT, labelme.FORMAT, voc_seg.FORMAT, cellpose.FORMAT, yolo_seg.FORMAT, yolo_det.FORMAT)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect")
    few = dsb()[:3]
    return {
        "coco": write_coco(tmp / "coco", few),
        "coco-boxes": write_coco(tmp / "coco-boxes", few, boxes_only=True),
        "labelme": write_labelme(tmp / "labelme", few),
        "voc-seg": write_voc(tmp / "voc", few),
        "voc-seg-pascal": write_voc(tmp / "pascal", few, rgb_objects=False, voc_names=("cat", "dog")),
        "cellpose": write_cellpose(tmp / "cellpose", few, png_for=(1,)),
        "yolo-seg": write_yolo(tmp / "yseg", few),
        "yolo-det": write_yolo(tmp / "ydet", few, boxes=True),
    }


@pytest.fixture(scope="module")
def importer_layouts(tmp_path_factory):
    """The importer's own layouts: DSB's mask folders, images/ + labels/ label images, X_img + X_mask side by side."""
    tmp = tmp_path_factory.mktemp("layouts")
    (tmp / "li" / "images").mkdir(parents=True)
    (tmp / "li" / "labels").mkdir()
    (tmp / "sbs").mkdir()
    for d in dsb()[:3]:
        shutil.copyfile(d.image, tmp / "li" / "images" / d.image.name)
        Image.fromarray(d.labels().astype(np.uint8)).save(tmp / "li" / "labels" / d.image.name)
        shutil.copyfile(d.image, tmp / "sbs" / f"{d.key}_img.png")
        Image.fromarray(d.labels().astype(np.uint8)).save(tmp / "sbs" / f"{d.key}_mask.png")
    return {"mask-folders": DSB, "label-images": tmp / "li", "side-by-side": tmp / "sbs"}


def test_each_sample_is_claimed_by_its_own_format_only(samples):
    for name, src in samples.items():
        own = name.removesuffix("-boxes").removesuffix("-pascal")
        assert [f.name for f in OURS if f.detect(src)] == [own], name
        assert pick_format(src, None).name == own, name


def test_the_registry_lists_every_format_and_ours_claim_none_of_the_importers_layouts(importer_layouts):
    assert {f.name for f in OURS} <= set(FORMATS)
    for name, src in importer_layouts.items():
        assert [f.name for f in OURS if f.detect(src)] == [], name
        assert pick_format(src, None).name == name


def test_a_cvat_zip_unpacks_to_a_folder_voc_seg_claims(samples, tmp_path):
    z = tmp_path / "export.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(samples["voc-seg"].rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(samples["voc-seg"]).as_posix())
    with unpacked_source(z, tmp_dir=tmp_path) as src:
        assert pick_format(src, None).name == "voc-seg"


def test_a_single_coco_json_is_claimed_by_coco(samples):
    assert pick_format(samples["coco"] / "annotations.json", None).name == "coco"
