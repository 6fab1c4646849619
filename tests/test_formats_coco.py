"""coco (apis.data.formats.coco_json): a COCO instances json with polygons, RLE or boxes only, validated by
apis.data.coco.load_coco, written from the DSB 2018 masks at test time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from format_samples import N_IMAGES, N_NUCLEI, NAMES, decode, dsb, read_all, tight_box, write_coco

from apis.cli import main
from apis.data.coco import load_coco
from apis.data.formats import coco_json
from apis.data.sources import ReadOptions


def test_polygons_and_both_rles_are_reencoded_exactly(tmp_path):
    root = write_coco(tmp_path / "coco")
    r = read_all(coco_json.FORMAT, root)
    assert r.scan_problems == [] and r.read_problems == [] and len(r.items) == N_IMAGES
    n = 0
    for d in dsb():
        objs = r.objects[d.key]
        assert [o.category for o in objs] == d.categories
        for o, m in zip(objs, d.masks, strict=True):
            assert isinstance(o.rle["counts"], str) and np.array_equal(decode(o), m)
            assert o.box == tight_box(m) and o.area == m.sum() and not o.iscrowd
            n += 1
    assert n == N_NUCLEI


def test_boxes_only_coco_gives_box_only_objects(tmp_path):
    root = write_coco(tmp_path / "boxes", boxes_only=True)
    r = read_all(coco_json.FORMAT, root)
    assert r.scan_problems == [] and r.read_problems == []
    objs = [o for d in dsb() for o in r.objects[d.key]]
    assert len(objs) == N_NUCLEI and all(o.rle is None for o in objs)
    assert [o.box for o in objs] == [tight_box(m) for d in dsb() for m in d.masks]


def test_crowd_annotations_stay_crowd(tmp_path):
    root = write_coco(tmp_path / "crowd", dsb()[:2])
    data = json.loads((root / "annotations.json").read_text())
    data["annotations"][1]["iscrowd"] = 1
    data["annotations"][2]["iscrowd"] = 1
    del data["annotations"][2]["segmentation"]
    (root / "annotations.json").write_text(json.dumps(data))
    objs = read_all(coco_json.FORMAT, root).objects[dsb()[0].key]
    assert [o.iscrowd for o in objs[:4]] == [False, True, True, False]
    assert objs[1].rle is not None and objs[2].rle is None


def test_cocos_own_layout_annotations_folder_beside_the_image_folder(tmp_path):
    flat = write_coco(tmp_path / "flat", dsb()[:4])
    root = tmp_path / "coco2017"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(flat / "images", root / "val2017")
    shutil.copyfile(flat / "annotations.json", root / "annotations" / "instances_val2017.json")
    data = json.loads((flat / "annotations.json").read_text())
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"images": data["images"], "annotations": [{"id": 1, "image_id": 1, "caption": "cells"}]}))
    assert coco_json.coco_files(root) == [root / "annotations" / "instances_val2017.json"]
    r = read_all(coco_json.FORMAT, root)
    assert r.scan_problems == [] and len(r.items) == 4 and r.items[0].image.parent == root / "val2017"
    # SRC the json itself
    assert coco_json.detect(root / "annotations" / "instances_val2017.json")
    assert len(read_all(coco_json.FORMAT, root / "annotations" / "instances_val2017.json").items) == 4


def test_roboflows_export_one_folder_per_split_with_its_annotations_coco_json(tmp_path):
    # Roboflow's "COCO JSON": train/_annotations.coco.json beside train's images, valid/ the same; an image name
    # may repeat across the splits (two different images).
    root = tmp_path / "roboflow"
    for split, images in (("train", dsb()[:3]), ("valid", dsb()[3:5])):
        flat = write_coco(tmp_path / f"flat-{split}", images)
        shutil.copytree(flat / "images", root / split)
        shutil.copyfile(flat / "annotations.json", root / split / "_annotations.coco.json")
    same = dsb()[0].image.name  # valid's first image renamed as train's first
    (root / "valid" / dsb()[3].image.name).rename(root / "valid" / same)
    data = json.loads((root / "valid" / "_annotations.coco.json").read_text())
    data["images"][0]["file_name"] = same
    (root / "valid" / "_annotations.coco.json").write_text(json.dumps(data))
    assert coco_json.detect(root)
    r = read_all(coco_json.FORMAT, root)
    assert r.scan_problems == [] and r.read_problems == [] and len(r.items) == 5
    assert len({it.key for it in r.items}) == 5
    assert sum(len(objs) for objs in r.objects.values()) == sum(len(d.masks) for d in dsb()[:5])


def test_load_cocos_problems_and_duplicate_names_are_refused(tmp_path):
    root = write_coco(tmp_path / "bad", dsb()[:2])
    data = json.loads((root / "annotations.json").read_text())
    data["annotations"][0]["category_id"] = 99
    data["categories"].append({"id": 11, "name": "nucleus"})
    (root / "annotations.json").write_text(json.dumps(data))
    items, problems = coco_json.FORMAT.scan(root, ReadOptions())
    assert len(problems) == 1 and "category_id 99 is not in" in problems[0]  # load_coco's own line
    data["annotations"][0]["category_id"] = 3
    (root / "annotations.json").write_text(json.dumps(data))
    items, problems = coco_json.FORMAT.scan(root, ReadOptions())
    assert len(problems) == 1 and "categories 3 and 11 are both named 'nucleus'" in problems[0]
    assert str(root / "annotations.json") in problems[0] and "Fix:" in problems[0]


def test_images_not_found_are_named(tmp_path):
    root = write_coco(tmp_path / "noimg", dsb()[:2])
    shutil.rmtree(root / "images")
    items, problems = coco_json.FORMAT.scan(root, ReadOptions())
    assert items == [] and len(problems) == 1 and "its first image is not found" in problems[0]
    assert "Fix:" in problems[0] and str(root / "annotations.json") in problems[0]


def test_detect_wants_images_and_annotations(tmp_path):
    (tmp_path / "labelme.json").write_text(json.dumps({"shapes": [], "imagePath": "a.png"}))
    assert not coco_json.detect(tmp_path)
    (tmp_path / "ls.json").write_text(json.dumps([{"annotations": [], "data": {"image": "a.png"}}]))
    assert not coco_json.detect(tmp_path)  # Label Studio's tasks: annotations, but no images list


def test_apis_data_import_reads_a_boxes_only_coco_end_to_end(tmp_path, capsys):
    root = write_coco(tmp_path / "boxes", boxes_only=True)
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(root), str(tmp_path / "out"), "--val-fraction", "0"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "format: coco" in text and f"box-only objects: {N_NUCLEI} (bbox and area, no segmentation)\n" in text
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")
    assert sorted(c.name for c in ds.categories) == sorted(NAMES)
    boxes = {Path(im.file_name).stem: [a.box for a in im.instances] for im in ds.images}
    for d in dsb():
        want = [(x, y, x + w, y + h) for x, y, w, h in (tight_box(m) for m in d.masks)]
        assert boxes[d.key] == want
    assert all(a.segmentation is None for a in ds.instances())


def test_apis_data_import_takes_the_json_itself(tmp_path, capsys):
    root = write_coco(tmp_path / "coco", dsb()[:3])
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(root / "annotations.json"), str(tmp_path / "out"), "--val-fraction", "0"])
    assert e.value.code == 0 and "format: coco" in capsys.readouterr().out
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")
    assert sum(len(im.instances) for im in ds.images) == sum(len(d.masks) for d in dsb()[:3])
    (tmp_path / "other.json").write_text(json.dumps({"shapes": []}))
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(tmp_path / "other.json"), str(tmp_path / "out2")])
    text = capsys.readouterr().out
    assert e.value.code == 2 and "no COCO json" in text and "Traceback" not in text
