"""yolo-seg and yolo-det (apis.data.formats) on YOLO datasets written from the DSB 2018 masks at test time."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from format_samples import (
    N_IMAGES,
    N_NUCLEI,
    NAMES,
    decode,
    dsb,
    iou,
    mask_polygons,
    one_line_naming,
    read_all,
    tight_box,
    write_yolo,
)
from PIL import Image

from apis.cli import main
from apis.data.coco import load_coco
from apis.data.formats import yolo, yolo_det, yolo_seg
from apis.data.importing.options import ImportOptions
from apis.data.records import decode_segmentation
from apis.data.sources import ReadOptions, orient_array, read_frame


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    root = write_yolo(tmp_path_factory.mktemp("yseg") / "yolo", merge_first=True)
    return root, read_all(yolo_seg.FORMAT, root)


def expected(d, merged: bool):
    """The objects a YOLO file of ``d`` holds: its masks, the first two as one where they were merged."""
    masks, cats = list(d.masks), d.categories
    if merged:
        return [masks[0] | masks[1], *masks[2:]], [cats[0], *cats[2:]]
    return masks, cats


def test_yolo_seg_reads_each_line_as_one_object_in_coco_polygon_convention(seg):
    root, r = seg
    assert r.scan_problems == [] and r.read_problems == []
    assert len(r.items) == N_IMAGES and {it.key for it in r.items} == {d.key for d in dsb()}
    ious = []
    for i, d in enumerate(dsb()):
        masks, cats = expected(d, merged=i == 0)
        objs = r.objects[d.key]
        assert len(objs) == len(masks)
        assert [o.category for o in objs] == cats
        ious += [iou(decode(o), m) for o, m in zip(objs, masks, strict=True)]
    assert len(ious) == N_NUCLEI - 1  # one line holds two nuclei
    # Polygons traced on pixel edges are filled back exactly by COCO's convention (measured: mean IoU 1.000).
    assert np.mean(ious) >= 0.9 and min(ious) > 0.99


def test_a_line_joining_two_parts_fills_both_whole(seg):
    root, r = seg
    d = dsb()[0]
    union = d.masks[0] | d.masks[1]
    first = decode(r.objects[d.key][0])
    assert np.array_equal(first, union)  # the corridor between the parts adds and removes nothing
    label = root / "labels" / "train" / f"{d.key}.txt"
    assert len(label.read_text().splitlines()[0].split()) > 1 + sum(len(p) for p in mask_polygons(d.masks[0]))


def test_names_as_a_mapping_and_a_classes_txt(tmp_path):
    root = write_yolo(tmp_path / "a", dsb()[:2], names_as_dict=True)
    assert yaml.safe_load((root / "data.yaml").read_text())["names"] == {0: "nucleus", 1: "cell"}
    r = read_all(yolo_seg.FORMAT, root)
    assert sum(len(v) for v in r.objects.values()) == sum(len(d.masks) for d in dsb()[:2])
    # Label Studio's export: classes.txt instead of data.yaml, every image found under images/.
    (root / "data.yaml").unlink()
    (root / "classes.txt").write_text("nucleus\ncell\n")
    assert yolo_seg.detect(root)
    r2 = read_all(yolo_seg.FORMAT, root)
    assert r2.scan_problems == [] and {k: [o.category for o in v] for k, v in r2.objects.items()} == {
        d.key: d.categories for d in dsb()[:2]}


def test_roboflow_layout_with_paths_climbing_out_of_the_yaml(tmp_path):
    """Roboflow: train/images + train/labels, data.yaml saying ../train/images."""
    flat = write_yolo(tmp_path / "flat", dsb()[:6])
    root = tmp_path / "robo"
    for split, sub in (("train", "train"), ("val", "valid")):
        shutil.copytree(flat / "images" / split, root / sub / "images")
        shutil.copytree(flat / "labels" / split, root / sub / "labels")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "../train/images", "val": "../valid/images",
                                                    "nc": 2, "names": list(NAMES)}))
    r = read_all(yolo_seg.FORMAT, root)
    assert r.scan_problems == [] and len(r.items) == 6
    assert all(it.annotation.parent.name == "labels" for it in r.items)


def test_background_images_are_counted_not_refused(tmp_path):
    root = write_yolo(tmp_path / "bg", dsb()[:3])
    labels = sorted((root / "labels" / "train").glob("*.txt"))
    labels[0].unlink()
    labels[1].write_text("\n")
    options = ImportOptions(root=root)
    items, problems = yolo_seg.FORMAT.scan(root, options)
    assert problems == []
    objects = {it.key: yolo_seg.FORMAT.read(it, read_frame(it.image), options) for it in items}
    assert [len(objs) for objs, _ in objects.values()].count(0) == 2
    assert all(bad == [] for _, bad in objects.values())
    assert sum(n for (_, what), n in options.tally.items() if what == yolo.BACKGROUND) == 2


@pytest.mark.parametrize("line, says", [
    ("7 0.1 0.1 0.2 0.1 0.2 0.2", "class 7 is not in data.yaml's names (ids 0..1)"),
    ("0 0.1 0.1 0.2 0.1 0.2", "5 coordinates; a polygon needs x y pairs"),
    ("1 0.1 0.1 0.2 0.1 1.2 0.2", "coordinate 1.2 lies outside [0, 1]"),
    ("0 0.1 -0.05 0.2 0.1 0.2 0.2", "coordinate -0.05 lies outside [0, 1]"),
    ("0 0.5 0.5 0.1 0.1", "a box (class cx cy w h) in a segmentation dataset"),
    ("x 0.1 0.1 0.2 0.1 0.2 0.2", "class 'x' is not an integer id"),
])
def test_bad_lines_are_refused_naming_file_and_line(tmp_path, line, says):
    root = write_yolo(tmp_path / "bad", dsb()[:2])
    label = sorted((root / "labels").rglob("*.txt"))[0]
    n = len(label.read_text().splitlines()) + 1
    label.write_text(label.read_text() + line + "\n")
    r = read_all(yolo_seg.FORMAT, root)
    assert r.scan_problems == []
    assert len(r.read_problems) == 1 and one_line_naming(r.read_problems, f"{label}:{n}")
    assert says in r.read_problems[0]


def test_label_files_with_a_byte_order_mark_and_windows_line_ends(tmp_path):
    root = write_yolo(tmp_path / "bom", dsb()[:1])
    label = next((root / "labels").rglob("*.txt"))
    label.write_bytes(b"\xef\xbb\xbf" + label.read_bytes().replace(b"\n", b"\r\n"))
    r = read_all(yolo_seg.FORMAT, root)
    assert r.read_problems == [] and len(r.objects[dsb()[0].key]) == len(dsb()[0].masks)


def test_scan_refuses_ambiguous_and_orphan_files(tmp_path):
    root = write_yolo(tmp_path / "scan", dsb()[:4])
    train = root / "images" / "train"
    first = sorted(train.iterdir())[0]
    Image.open(first).convert("RGB").save(first.with_suffix(".jpg"))  # a.png and a.jpg: one label file
    (root / "labels" / "train" / "ghost.txt").write_text("0 0.1 0.1 0.2 0.1 0.2 0.2\n")
    (root / "images" / "test").mkdir()
    shutil.copyfile(first, root / "images" / "test" / "lonely.png")
    data = yaml.safe_load((root / "data.yaml").read_text())
    (root / "data.yaml").write_text(yaml.safe_dump({**data, "test": "images/test", "val": "images/nowhere"}))
    items, problems = yolo_seg.FORMAT.scan(root, ReadOptions())
    assert len(problems) == 4 and all("\n" not in p and "Fix:" in p for p in problems)
    said = " ".join(problems)
    assert f"{first.with_suffix('.jpg')} and {first}: two images of one label file" in said
    assert f"{root / 'labels' / 'train' / 'ghost.txt'}: label file without an image" in said
    assert f"{root / 'images' / 'test'}: no labels folder {root / 'labels' / 'test'}" in said
    assert "val: 'images/nowhere' is not found" in said and str(root / "data.yaml") in said
    assert len(items) == 2  # the train images left: both images of the clashing label file are out


def test_polygons_are_fractions_of_the_shown_image(tmp_path):
    """An image with EXIF orientation 6 (stored 320x256, shown 256x320): YOLO's fractions are of the shown size."""
    d = next(d for d in dsb() if d.width == 320)
    root = tmp_path / "exif"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text(yaml.safe_dump({"names": list(NAMES)}))
    im = Image.open(d.image).convert("RGB")
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(root / "images" / "turned.png", exif=exif.tobytes())
    shown = [np.ascontiguousarray(orient_array(m, 6)) for m in d.masks[:5]]
    h, w = shown[0].shape
    lines = []
    for m in shown:
        poly = mask_polygons(m)[0]
        lines.append("0 " + " ".join(f"{v / (w if k % 2 == 0 else h):.6f}" for k, v in enumerate(poly)))
    (root / "labels" / "turned.txt").write_text("\n".join(lines))
    r = read_all(yolo_seg.FORMAT, root)
    assert r.scan_problems == [] and r.read_problems == []
    objs = r.objects["turned"]
    assert (w, h) == (256, 320) and all(o.rle["size"] == [320, 256] for o in objs)
    assert [iou(decode(o), m) for o, m in zip(objs, shown, strict=True)] == [1.0] * 5


def test_yolo_det_reads_boxes_only(tmp_path):
    root = write_yolo(tmp_path / "det", boxes=True)
    assert yolo_det.detect(root) and not yolo_seg.detect(root) and yolo_det.FORMAT.boxes_only
    r = read_all(yolo_det.FORMAT, root)
    assert r.scan_problems == [] and r.read_problems == []
    n = 0
    for d in dsb():
        objs = r.objects[d.key]
        assert [o.category for o in objs] == d.categories and all(o.rle is None for o in objs)
        for o, m in zip(objs, d.masks, strict=True):
            assert np.allclose(o.box, tight_box(m), atol=1e-3)
            n += 1
    assert n == N_NUCLEI


@pytest.mark.parametrize("line, says", [
    ("0 0.5 0.5 0.1 0.1 0.3", "6 values; a detection line is 'class cx cy w h'"),
    ("0 0.05 0.5 0.2 0.1", "the box runs outside the image"),
    ("3 0.5 0.5 0.1 0.1", "class 3 is not in data.yaml's names"),
    ("0 0.5 0.5 0 0.1", "the box has no area"),
])
def test_yolo_det_bad_lines_are_refused(tmp_path, line, says):
    root = write_yolo(tmp_path / "det", dsb()[:1], boxes=True)
    label = next((root / "labels").rglob("*.txt"))
    n = len(label.read_text().splitlines()) + 1
    label.write_text(label.read_text() + line + "\n")
    r = read_all(yolo_det.FORMAT, root)
    assert len(r.read_problems) == 1 and one_line_naming(r.read_problems, f"{label}:{n}") and says in r.read_problems[0]


def test_apis_data_import_reads_yolo_seg_end_to_end(seg, tmp_path, capsys):
    root, _ = seg
    (root / "labels" / "train" / f"{dsb()[1].key}.txt").rename(tmp_path / "aside.txt")  # a background image
    try:
        with pytest.raises(SystemExit) as e:
            main(["data", "import", str(root), str(tmp_path / "out"), "--val-fraction", "0"])
        assert e.value.code == 0
    finally:
        (tmp_path / "aside.txt").rename(root / "labels" / "train" / f"{dsb()[1].key}.txt")
    text = capsys.readouterr().out
    assert "format: yolo-seg" in text and f"{yolo.BACKGROUND}: 1 in 1 image" in text
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")
    names = ds.category_names
    assert len(ds.images) == N_IMAGES
    ious, cats = [], Counter()
    for im in ds.images:
        i, d = next((i, d) for i, d in enumerate(dsb()) if d.key == Path(im.file_name).stem)
        masks, want = expected(d, merged=i == 0) if i != 1 else ([], [])
        assert [names[a.category_id] for a in im.instances] == want
        for a, m in zip(im.instances, masks, strict=True):
            ious.append(iou(decode_segmentation(a.segmentation, im.height, im.width).astype(bool), m))
            cats[names[a.category_id]] += 1
    assert len(ious) == N_NUCLEI - 1 - len(dsb()[1].masks) and np.mean(ious) >= 0.9
    assert set(cats) == set(NAMES)
