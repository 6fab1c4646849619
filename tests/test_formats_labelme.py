"""labelme (apis.data.formats.labelme): one LabelMe json per image, written from the DSB 2018 masks at test time
(polygons, LabelMe ≥ 5.3 masks, group ids, rectangles, circles, points)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from format_samples import (
    N_IMAGES,
    N_NUCLEI,
    decode,
    dsb,
    iou,
    labelme_shapes,
    mask_polygons,
    one_line_naming,
    read_all,
    tight_box,
    write_labelme,
)
from PIL import Image

from apis.cli import main
from apis.data.coco import load_coco
from apis.data.formats import labelme
from apis.data.importing.options import ImportOptions
from apis.data.records import decode_segmentation
from apis.data.sources import ReadOptions, orient_array


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_labelme(tmp_path_factory.mktemp("lm") / "labelme")


def one_image(tmp_path: Path, shapes: list[dict], d=None, **fields) -> Path:
    """A LabelMe folder of one DSB image with ``shapes``; ``fields`` override the json's."""
    d = d or dsb()[2]
    root = tmp_path / "one"
    root.mkdir(exist_ok=True)
    shutil.copyfile(d.image, root / d.image.name)
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": d.image.name, "imageData": None,
           "imageHeight": d.height, "imageWidth": d.width, **fields}
    (root / f"{d.key}.json").write_text(json.dumps(doc))
    return root


def polygon(mask, label="nucleus", group=None) -> dict:
    return {"label": label, "points": np.reshape(mask_polygons(mask)[0], (-1, 2)).tolist(), "group_id": group,
            "shape_type": "polygon", "flags": {}}


def test_polygons_and_masks_read_back_exactly_and_points_are_counted(sample):
    options = ImportOptions(root=sample)
    r = read_all(labelme.FORMAT, sample, options)
    assert r.scan_problems == [] and r.read_problems == [] and len(r.items) == N_IMAGES
    ious = []
    for d in dsb():
        objs = r.objects[d.key]
        assert [o.category for o in objs] == d.categories
        ious += [iou(decode(o), m) for o, m in zip(objs, d.masks, strict=True)]
    # Polygons on pixel edges (two of three objects) and pasted masks (one of three): measured mean IoU 1.000.
    assert len(ious) == N_NUCLEI and np.mean(ious) >= 0.9 and min(ious) == 1.0
    assert sum(n for (_, what), n in options.tally.items() if "point shapes left out" in what) == N_IMAGES


def test_shapes_of_one_label_and_group_id_are_one_object(tmp_path):
    d = dsb()[2]
    a, b, c = d.masks[:3]
    shapes = [polygon(a, group=7), polygon(b, "cell", group=7), polygon(b, group=7), polygon(c), polygon(c)]
    r = read_all(labelme.FORMAT, one_image(tmp_path, shapes))
    objs = r.objects[d.key]
    # (nucleus, 7): a and b together; (cell, 7): b alone; two shapes without group_id: two objects.
    assert [o.category for o in objs] == ["nucleus", "cell", "nucleus", "nucleus"]
    assert np.array_equal(decode(objs[0]), a | b) and np.array_equal(decode(objs[1]), b)
    assert np.array_equal(decode(objs[2]), c) and np.array_equal(decode(objs[3]), c)


def test_ignore_regions_are_left_out_and_counted_not_a_category(tmp_path):
    # LabelMe's own examples (labels.txt) start with __ignore__: labelme2coco leaves such shapes out and
    # labelme2voc paints them void. Read as an object they would be a category "__ignore__".
    d = dsb()[2]
    a, b = d.masks[:2]
    options = ImportOptions()
    r = read_all(labelme.FORMAT, one_image(tmp_path, [polygon(a), polygon(b, "__ignore__")]), options)
    objs = r.objects[d.key]
    assert [o.category for o in objs] == ["nucleus"] and np.array_equal(decode(objs[0]), a)
    assert options.tally[(d.key, "LabelMe __ignore__ regions left out (regions to ignore, not objects)")] == 1


def test_rectangles_alone_are_boxes_beside_a_polygon_they_are_filled(tmp_path):
    d = dsb()[2]
    x, y, w, h = tight_box(d.masks[0])
    rect = {"label": "nucleus", "points": [[x + w, y + h], [x, y]], "group_id": None, "shape_type": "rectangle"}
    grouped = {**rect, "group_id": 3}
    shapes = [rect, grouped, polygon(d.masks[1], group=3)]
    r = read_all(labelme.FORMAT, one_image(tmp_path, shapes))
    box_only, filled = r.objects[d.key]
    assert box_only.rle is None and box_only.box == (x, y, w, h) and box_only.area == w * h
    box_mask = np.zeros_like(d.masks[0])
    box_mask[int(y):int(y + h), int(x):int(x + w)] = True
    assert np.array_equal(decode(filled), box_mask | d.masks[1])


def test_a_circle_is_its_disc(tmp_path):
    shapes = [{"label": "nucleus", "points": [[100.0, 80.0], [100.0, 92.0]], "group_id": None, "shape_type": "circle"}]
    r = read_all(labelme.FORMAT, one_image(tmp_path, shapes))
    yy, xx = np.mgrid[:256, :256]
    disc = (xx + 0.5 - 100) ** 2 + (yy + 0.5 - 80) ** 2 <= 12 ** 2  # pixel centres within the radius
    assert iou(decode(r.objects[dsb()[2].key][0]), disc) > 0.95


def test_polygons_are_in_the_shown_frame_and_the_size_is_checked_there(tmp_path):
    d = next(d for d in dsb() if d.width == 320)
    root = tmp_path / "exif"
    root.mkdir()
    im = Image.open(d.image).convert("RGB")
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(root / "turned.png", exif=exif.tobytes())
    shown = [np.ascontiguousarray(orient_array(m, 6)) for m in d.masks[:4]]
    doc = {"shapes": [polygon(m) for m in shown], "imagePath": "turned.png", "imageData": None,
           "imageHeight": 320, "imageWidth": 256}
    (root / "turned.json").write_text(json.dumps(doc))
    r = read_all(labelme.FORMAT, root)
    assert r.read_problems == [] and [iou(decode(o), m) for o, m in zip(r.objects["turned"], shown, strict=True)] == [
        1.0] * 4
    (root / "turned.json").write_text(json.dumps({**doc, "imageHeight": 256, "imageWidth": 320}))
    r = read_all(labelme.FORMAT, root)
    assert one_line_naming(r.read_problems, root / "turned.json")
    assert "320x256 differ from" in r.read_problems[0] and "the size before EXIF rotation" in r.read_problems[0]


@pytest.mark.parametrize("shape, says", [
    ({"label": "nucleus", "points": [[1, 1], [5, 5]], "shape_type": "cuboid"}, "shape_type 'cuboid' is not one"),
    ({"label": "", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon"}, "has no label"),
    ({"label": "nucleus", "points": [[1, 1], [5, 5]], "shape_type": "polygon"}, "a polygon needs 3 or more"),
    ({"label": "nucleus", "points": [[1, 1], [5, 5]], "shape_type": "mask", "mask": "bm90IGEgcG5n"},
     "its 'mask' is not a base64 PNG"),
    ({"label": "nucleus", "points": [[300, 1], [310, 1], [310, 9]], "shape_type": "polygon"}, "covers no pixel"),
    ({"label": "nucleus", "points": [[1, 1], [5, 1], [5, 5]], "shape_type": "polygon", "group_id": "a"},
     "group_id 'a' is not an integer"),
])
def test_bad_shapes_are_refused_naming_the_file_and_shape(tmp_path, shape, says):
    d = dsb()[2]
    root = one_image(tmp_path, [polygon(d.masks[0]), shape])
    r = read_all(labelme.FORMAT, root)
    assert r.objects[d.key] == [] and len(r.read_problems) == 1  # the image is refused whole
    assert one_line_naming(r.read_problems, root / f"{d.key}.json") and "shapes[1]" in r.read_problems[0]
    assert says in r.read_problems[0]


def test_a_mask_shape_of_the_wrong_size_is_refused(tmp_path):
    d = dsb()[2]
    shape = next(s for s in labelme_shapes(d) if s["shape_type"] == "mask")
    shape["points"][1][0] += 2
    r = read_all(labelme.FORMAT, one_image(tmp_path, [shape]))
    assert len(r.read_problems) == 1 and "its points span" in r.read_problems[0] and "Fix:" in r.read_problems[0]


def test_scan_refuses_missing_embedded_unannotated_and_doubled_images(tmp_path):
    root = write_labelme(tmp_path / "scan", dsb()[:5])
    keys = [d.key for d in dsb()[:5]]
    j = [root / f"{k}.json" for k in keys]
    doc = json.loads(j[0].read_text())
    j[0].write_text(json.dumps({**doc, "imagePath": "elsewhere/x.png"}))
    (root / f"{keys[1]}.png").unlink()
    j[1].write_text(json.dumps({**json.loads(j[1].read_text()), "imageData": "aGVsbG8="}))
    j[2].unlink()
    shutil.copyfile(j[3], root / "copy.json")
    (root / "notes.json").write_text(json.dumps({"author": "me"}))
    items, problems = labelme.FORMAT.scan(root, ReadOptions())
    assert [it.key for it in items] == [keys[3], keys[4]]
    assert len(problems) == 6 and all("\n" not in p and "Fix:" in p for p in problems)
    said = " ".join(problems)
    assert f"{j[0]}: imagePath 'elsewhere/x.png' is not found" in said
    assert f"{j[1]}: the image exists only embedded in it as imageData" in said
    assert f"{root / keys[2]}.png: no LabelMe json names it" in said
    assert f"{root / 'copy.json'} and {j[3]}: two LabelMe files of one image" in said or \
        f"{j[3]} and {root / 'copy.json'}: two LabelMe files of one image" in said
    assert f"{root / 'notes.json'}: not a LabelMe file" in said
    assert f"{root / keys[0]}.png: no LabelMe json names it" in said


def test_detect_takes_labelme_folders_only(sample, tmp_path):
    assert labelme.detect(sample)
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "instances.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    assert not labelme.detect(coco) and not labelme.detect(tmp_path / "nothing")


def test_apis_data_import_reads_labelme_end_to_end(sample, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(sample), str(tmp_path / "out"), "--val-fraction", "0"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "format: labelme" in text and f"LabelMe point shapes left out (they mark no region): {N_IMAGES} in" in text
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")
    names = ds.category_names
    by_key = {d.key: d for d in dsb()}
    ious = []
    for im in ds.images:
        d = by_key[Path(im.file_name).stem]
        assert [names[a.category_id] for a in im.instances] == d.categories
        ious += [iou(decode_segmentation(a.segmentation, im.height, im.width).astype(bool), m)
                 for a, m in zip(im.instances, d.masks, strict=True)]
    assert len(ious) == N_NUCLEI and np.mean(ious) >= 0.9


def test_an_image_path_from_another_machine_finds_the_image_of_the_jsons_name(tmp_path):
    d = dsb()[2]
    root = one_image(tmp_path, [polygon(d.masks[0])], imagePath=f"C:\\Users\\me\\data\\{d.image.name}")
    r = read_all(labelme.FORMAT, root)
    assert r.scan_problems == [] and len(r.objects[d.key]) == 1
    (root / f"{d.key}.json").rename(root / "other.json")  # another name: not taken for it
    assert "is not found" in labelme.FORMAT.scan(root, ReadOptions())[1][0]
