"""Writers as the importer's inverses: DSB 2018 (tests/data, 20 images, 522 nuclei) imported, written in each
format, imported back (YOLO also rasterised line by line with pycocotools), and compared pixel by pixel."""

from __future__ import annotations

import copy
import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from apis.data.coco import load_coco
from apis.data.importers import import_dataset
from apis.data.mask_shapes import MaskCut, mask_polygon, own_pixels
from apis.data.partial import PID_FILE
from apis.data.records import decode_segmentation, encode_mask
from apis.data.sources import orient_array
from apis.data.writers import CSV_NAME, WriteError, WriteOptions, write_masks

DSB = Path(__file__).parent / "data" / "dsb2018" / "stage1_train"
N_IMAGES, N_NUCLEI = 20, 522


@pytest.fixture(scope="module")
def dsb(tmp_path_factory) -> tuple[dict, Path]:
    """The DSB images imported once: (COCO dict, the folder its file_name entries are relative to)."""
    out = tmp_path_factory.mktemp("dsb") / "imported"
    result = import_dataset(DSB, out, "mask-folders", category="nucleus", val_fraction=0.0)
    return json.loads(result.paths["train"].read_text()), result.paths["train"].parent


def masks_by_stem(coco: dict) -> dict[str, list[np.ndarray]]:
    """Image stem → its pool masks (H×W bool), in annotation order."""
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        if not a.get("iscrowd") and a.get("segmentation") is not None:
            by_image.setdefault(a["image_id"], []).append(a["segmentation"])
    return {Path(im["file_name"]).stem: [decode_segmentation(s, im["height"], im["width"]).astype(bool)
                                         for s in by_image.get(im["id"], [])] for im in coco["images"]}


def canonical(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A label map whose values number the objects by their first pixel in raster order: two sets of masks are
    the same objects with the same pixels exactly when their canonical maps are equal."""
    label = np.zeros(shape, np.int64)
    for k, m in enumerate(masks, 1):
        label[m] = k
    values, first = np.unique(label.ravel(), return_index=True)
    objects = values[np.argsort(first)]
    objects = objects[objects != 0]  # background stays 0
    lut = np.zeros(int(values.max()) + 1, np.int64)
    lut[objects] = np.arange(1, len(objects) + 1)
    return lut[label]


def pixels_differing(a: dict[str, list[np.ndarray]], b: dict[str, list[np.ndarray]], shapes: dict) -> int:
    assert a.keys() == b.keys()
    return sum(int((canonical(a[k], shapes[k]) != canonical(b[k], shapes[k])).sum()) for k in a)


def reimport(folder: Path, layout: str, tmp_path: Path) -> dict:
    result = import_dataset(folder, tmp_path / f"back-{layout}", layout, category="nucleus", val_fraction=0.0)
    return json.loads(result.paths["train"].read_text())


def read_csv(folder: Path) -> list[dict]:
    with open(folder / CSV_NAME, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def shapes_of(coco: dict) -> dict[str, tuple[int, int]]:
    return {Path(im["file_name"]).stem: (im["height"], im["width"]) for im in coco["images"]}


def yolo_masks(folder: Path, coco: dict) -> dict[str, list[np.ndarray]]:
    """Each YOLO line rasterised as one COCO polygon: x·W, y·H through pycocotools' frPyObjects."""
    out = {}
    for im in coco["images"]:
        stem, h, w = Path(im["file_name"]).stem, im["height"], im["width"]
        masks = []
        for line in (folder / "labels" / "train" / f"{stem}.txt").read_text().splitlines():
            xy = np.array(line.split()[1:], dtype=np.float64).reshape(-1, 2) * (w, h)
            masks.append(mask_utils.decode(mask_utils.frPyObjects([xy.ravel().tolist()], h, w)[0]).astype(bool))
        out[stem] = masks
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize(("fmt", "ext"), [("label-images", "png"), ("label-images", "tif"), ("mask-folders", "png")])
def test_raster_formats_import_back_pixel_exact(dsb, tmp_path, fmt, ext):
    coco, root = dsb
    result = write_masks(coco, root, tmp_path / fmt, fmt, WriteOptions(label_ext=ext))
    assert (result.images, result.objects, result.written) == (N_IMAGES, N_NUCLEI, N_NUCLEI)
    assert result.reassigned == {} and result.missing == []
    back = reimport(tmp_path / fmt, fmt, tmp_path)
    assert len(back["annotations"]) == N_NUCLEI
    assert pixels_differing(masks_by_stem(coco), masks_by_stem(back), shapes_of(coco)) == 0
    for im in coco["images"]:  # the images themselves, byte for byte
        stem = Path(im["file_name"]).stem
        copied = tmp_path / fmt / ("images" if fmt == "label-images" else f"{stem}/images") / f"{stem}.png"
        assert copied.read_bytes() == (root / im["file_name"]).read_bytes()
    if fmt == "label-images":
        labels = [np.asarray(Image.open(p)) for p in sorted((tmp_path / fmt / "labels").iterdir())]
        assert len(labels) == N_IMAGES and all(p.suffix == f".{ext}" for p in (tmp_path / fmt / "labels").iterdir())
        assert all(a.dtype == np.uint8 and a.max() <= 254 for a in labels)


def test_coco_folder_loads_and_keeps_every_mask(dsb, tmp_path):
    coco, root = dsb
    write_masks(coco, root, tmp_path / "coco", "coco")
    ds = load_coco(tmp_path / "coco" / "annotations.json")  # apis data check's reader: images found beside it
    assert ds.image_root == tmp_path / "coco" and len(ds.instances()) == N_NUCLEI
    written = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert [a["segmentation"] for a in written["annotations"]] == [a["segmentation"] for a in coco["annotations"]]
    assert written["info"]["apis_image_root"] == str((tmp_path / "coco").resolve())
    assert all(im["file_name"].startswith("images/") for im in written["images"])
    rows = read_csv(tmp_path / "coco")
    assert [int(r["json_index"]) for r in rows] == list(range(N_NUCLEI))


def test_yolo_polygons_fill_back_to_the_masks(dsb, tmp_path):
    coco, root = dsb
    result = write_masks(coco, root, tmp_path / "yolo", "yolo")
    assert result.written == N_NUCLEI
    back = yolo_masks(tmp_path / "yolo", coco)
    ious = [iou(a, b) for k, ms in masks_by_stem(coco).items() for a, b in zip(ms, back[k], strict=True)]
    assert len(ious) == N_NUCLEI and np.mean(ious) >= 0.95
    assert pixels_differing(masks_by_stem(coco), back, shapes_of(coco)) == 0  # measured: exact, not just ≥ 0.95
    line = (tmp_path / "yolo" / "labels" / "train" / f"{Path(coco['images'][0]['file_name']).stem}.txt").read_text()
    first = line.splitlines()[0].split()
    assert first[0] == "0" and all(len(v.split(".")[1]) == 6 and 0.0 <= float(v) <= 1.0 for v in first[1:])
    data = (tmp_path / "yolo" / "data.yaml").read_text()
    assert "train: images/train" in data and "- nucleus" in data and f"path: {(tmp_path / 'yolo').resolve()}" in data
    again = reimport(tmp_path / "yolo", "yolo-seg", tmp_path)  # and through apis data import's YOLO-seg reader
    assert pixels_differing(masks_by_stem(coco), masks_by_stem(again), shapes_of(coco)) == 0


def several_parts(coco: dict) -> tuple[dict, list[int]]:
    """``coco`` with, in its first image, two nuclei made one object (two parts), one made a ring (a hole) and
    one a ring with an island inside it. Returns the dict and the ids of the three objects."""
    coco = copy.deepcopy(coco)
    im = coco["images"][0]
    h, w = im["height"], im["width"]
    anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
    masks = {a["id"]: decode_segmentation(a["segmentation"], h, w).astype(bool) for a in anns}
    big = sorted(masks, key=lambda i: -masks[i].sum())
    a, b, c, d = big[:4]
    ring = masks[c] & ~cv2.erode(masks[c].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    inner = cv2.erode(masks[d].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    island = (masks[d] & ~inner) | cv2.erode(masks[d].astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
    new = {a: masks[a] | masks[b], c: ring, d: island}
    assert cv2.connectedComponents(new[a].astype(np.uint8))[0] - 1 >= 2  # really two parts
    coco["annotations"] = [x for x in coco["annotations"] if x["id"] != b]
    for x in coco["annotations"]:
        if x["id"] in new:
            x["segmentation"] = encode_mask(new[x["id"]])
    return coco, [a, c, d]


def test_yolo_keeps_an_object_in_several_parts_or_with_holes_on_one_line(dsb, tmp_path):
    coco, ids = several_parts(dsb[0])
    write_masks(coco, dsb[1], tmp_path / "yolo", "yolo")
    rows = {int(r["annotation_id"]): r for r in read_csv(tmp_path / "yolo")}
    stem = Path(coco["images"][0]["file_name"]).stem
    back = yolo_masks(tmp_path / "yolo", coco)[stem]
    want = masks_by_stem(coco)[stem]
    assert len(back) == len(want)  # one line per object, parts joined
    image_anns = [a["id"] for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    for i in ids:
        k = image_anns.index(i)
        assert int(rows[i]["yolo_line"]) == k + 1
        assert iou(back[k], want[k]) == 1.0
        n, parts = cv2.connectedComponents(want[k].astype(np.uint8))
        assert all(back[k][parts == p].all() for p in range(1, n))  # every part filled whole
        holes = ~want[k] & (cv2.dilate(want[k].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        assert not back[k][~want[k]].any() and not back[k][holes].any()
    again = masks_by_stem(reimport(tmp_path / "yolo", "yolo-seg", tmp_path))
    assert pixels_differing(masks_by_stem(coco), again, shapes_of(coco)) == 0


def test_polygon_vertices_a_quarter_pixel_inside_are_the_exact_offset(dsb):
    """The measurement behind mask_polygon: 6-decimal normalised vertices, rasterised by pycocotools."""
    masks = [m for ms in masks_by_stem(dsb[0]).values() for m in ms][::3]

    def lost(polygon_of) -> int:
        total = 0
        for m in masks:
            h, w = m.shape
            xy = np.round(polygon_of(m) / (w, h), 6) * (w, h)
            back = mask_utils.decode(mask_utils.frPyObjects([xy.ravel().tolist()], h, w)[0]).astype(bool)
            total += int((back != m).sum())
        return total

    assert lost(mask_polygon) == 0
    assert lost(lambda m: mask_polygon(m, 0.2)) == 0 and lost(lambda m: mask_polygon(m, -0.2)) == 0
    assert lost(lambda m: mask_polygon(m, 0.25)) > 1000 and lost(lambda m: mask_polygon(m, -0.25)) > 1000

    def centres(m: np.ndarray, offset: float) -> np.ndarray:  # cv2's contour of the mask itself
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        return max(contours, key=len).reshape(-1, 2) + offset

    assert all(lost(lambda m, o=o: centres(m, o)) > 3000 for o in (0.0, 0.25, 0.5))


# ------------------------------------------------------------------------------------------- overlaps
def grown(coco: dict, pixels: int = 2) -> dict:
    """``coco`` with every mask dilated: neighbouring nuclei now overlap, as exported masks may."""
    coco = copy.deepcopy(coco)
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    for a in coco["annotations"]:
        m = decode_segmentation(a["segmentation"], *sizes[a["image_id"]])
        a["segmentation"] = encode_mask(cv2.dilate(m, kernel))
        a["apis_score"] = 0.5
    return coco


def test_own_pixels_gives_a_shared_pixel_to_the_smaller_object_then_the_more_trusted():
    big, small, twin = np.zeros((6, 6), bool), np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    big[0:4, 0:4], small[2:5, 2:5], twin[2:5, 2:5] = True, True, True
    owner, lost = own_pixels([MaskCut.of(big), MaskCut.of(small), None], [0.9, 0.1, 0.0], (6, 6))
    assert owner[3, 3] == 2 and owner[0, 0] == 1 and lost == [4, 0, 0]
    owner, lost = own_pixels([MaskCut.of(small), MaskCut.of(twin)], [0.2, 0.8], (6, 6))
    assert (owner[small] == 2).all() and lost == [9, 0]  # equal size: the higher score keeps it
    owner, lost = own_pixels([MaskCut.of(small), MaskCut.of(twin)], [0.5, 0.5], (6, 6))
    assert (owner[small] == 1).all() and lost == [0, 9]  # and then the earlier


@pytest.mark.parametrize("fmt", ["label-images", "mask-folders"])
def test_overlapping_masks_are_resolved_counted_and_import_back(dsb, tmp_path, fmt):
    coco = grown(dsb[0])
    result = write_masks(coco, dsb[1], tmp_path / fmt, fmt)
    assert result.reassigned and sum(result.reassigned.values()) > 100
    rows = read_csv(tmp_path / fmt)
    assert {int(r["annotation_id"]): int(r["reassigned_pixels"]) for r in rows if int(r["reassigned_pixels"])} \
        == result.reassigned
    assert any("pixels of" in line and "smaller object" in line for line in result.lines())
    # What comes back is each mask less exactly its reassigned pixels, and nothing else.
    want = {}
    by_stem = masks_by_stem(coco)
    for stem, masks in by_stem.items():
        cuts = [MaskCut.of(m) for m in masks]
        owner, lost = own_pixels(cuts, [0.5] * len(cuts), masks[0].shape if masks else (1, 1))
        want[stem] = [owner == k + 1 for k in range(len(masks)) if lost[k] < cuts[k].area]
    back = masks_by_stem(reimport(tmp_path / fmt, fmt, tmp_path))
    assert pixels_differing(want, back, shapes_of(coco)) == 0


# ------------------------------------------------------------------------------------------- label values
def many_objects(coco: dict, n: int) -> dict:
    """``coco`` whose first image holds ``n`` separate 3×3 squares instead of its nuclei."""
    coco = copy.deepcopy(coco)
    im = coco["images"][0]
    h, w = im["height"], im["width"]
    others = [a for a in coco["annotations"] if a["image_id"] != im["id"]]
    squares = []
    for k in range(n):
        y, x = divmod(k, w // 5)
        m = np.zeros((h, w), np.uint8)
        m[5 * y : 5 * y + 3, 5 * x : 5 * x + 3] = 1
        squares.append({"id": 100000 + k, "image_id": im["id"], "category_id": 1, "iscrowd": 0,
                        "bbox": [5 * x, 5 * y, 3, 3], "area": 9, "segmentation": encode_mask(m)})
    coco["annotations"] = squares + others
    return coco


@pytest.mark.parametrize(("n", "dtype"), [(254, np.uint8), (300, np.uint16)])
def test_label_images_are_8_bit_up_to_254_objects_never_255_then_16_bit(dsb, tmp_path, n, dtype):
    coco = many_objects(dsb[0], n)
    result = write_masks(coco, dsb[1], tmp_path / "labels", "label-images")
    stem = Path(coco["images"][0]["file_name"]).stem
    with Image.open(tmp_path / "labels" / "labels" / f"{stem}.png") as pil:
        label = np.asarray(pil)
        assert pil.mode == ("L" if dtype is np.uint8 else "I;16")
    assert label.dtype == dtype and label.max() == n and len(np.unique(label)) == n + 1
    assert result.wide == int(dtype is np.uint16)
    back = masks_by_stem(reimport(tmp_path / "labels", "label-images", tmp_path))
    assert len(back[stem]) == n


def test_every_image_gets_its_files_also_without_objects(dsb, tmp_path):
    coco = copy.deepcopy(dsb[0])
    empty = coco["images"][1]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != empty["id"]]
    stem = Path(empty["file_name"]).stem
    write_masks(coco, dsb[1], tmp_path / "li", "label-images")
    write_masks(coco, dsb[1], tmp_path / "mf", "mask-folders")
    write_masks(coco, dsb[1], tmp_path / "yolo", "yolo")
    assert not np.asarray(Image.open(tmp_path / "li" / "labels" / f"{stem}.png")).any()
    assert (tmp_path / "mf" / stem / "images" / f"{stem}.png").is_file()
    assert not any((tmp_path / "mf" / stem / "masks").iterdir())
    assert (tmp_path / "yolo" / "labels" / "train" / f"{stem}.txt").read_text() == ""
    back = reimport(tmp_path / "li", "label-images", tmp_path)
    assert len(back["images"]) == N_IMAGES


# ------------------------------------------------------------------------------------------- the CSV
def test_missing_objects_are_listed_with_their_trust_fields_never_dropped(dsb, tmp_path):
    coco = copy.deepcopy(dsb[0])
    gone = [coco["annotations"][0]["id"], coco["annotations"][7]["id"]]
    for a in coco["annotations"]:
        a.update(apis_score=0.75, apis_source="prediction_set", apis_refinement=None, apis_points=3,
                 apis_points_agree=2 / 3)
        if a["id"] in gone:
            del a["segmentation"]
            a.update(apis_score=0.0, apis_source="missing")
    for fmt, locator in (("label-images", "label_value"), ("mask-folders", "mask_file"), ("yolo", "yolo_line")):
        result = write_masks(coco, dsb[1], tmp_path / fmt, fmt)
        rows = read_csv(tmp_path / fmt)
        assert len(rows) == N_NUCLEI and result.written == N_NUCLEI - 2 and sorted(result.missing) == sorted(gone)
        assert any("2 objects have no mask" in line for line in result.lines())
        missing = [r for r in rows if r["missing"] == "yes"]
        assert sorted(int(r["annotation_id"]) for r in missing) == sorted(gone)
        assert all(r[locator] == "" and r["area"] == "0" and r["apis_source"] == "missing" for r in missing)
        kept = next(r for r in rows if r["missing"] == "no")
        ann = next(a for a in coco["annotations"] if a["id"] == int(kept["annotation_id"]))
        assert kept["category"] == "nucleus" and kept["apis_score"] == "0.75" and kept["points_answered"] == "3"
        assert kept["points_agree"] == "0.666667" and kept["apis_refinement"] == ""
        assert [float(kept[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")] == ann["bbox"]
        assert int(kept["area"]) == int(mask_utils.area(
            {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}))
    labels = {int(r["annotation_id"]): r["label_value"] for r in read_csv(tmp_path / "label-images")}
    first_image = [a["id"] for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    assert [labels[i] for i in first_image[:3]] == ["", "1", "2"]  # values skip the missing object


# ------------------------------------------------------------------------------------------- the folder
def test_a_folder_that_is_not_an_export_is_never_replaced_and_force_replaces_an_export(dsb, tmp_path):
    coco, root = dsb
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    for force in (False, True):
        with pytest.raises(WriteError, match="never replaced. Fix: pass a new or empty folder"):
            write_masks(coco, root, keep, "yolo", WriteOptions(force=force))
    assert (keep / "notes.txt").read_text() == "precious" and len(list(keep.iterdir())) == 1
    out = tmp_path / "export"
    write_masks(coco, root, out, "label-images")
    with pytest.raises(WriteError, match="--force to replace it"):
        write_masks(coco, root, out, "yolo")
    write_masks(coco, root, out, "yolo", WriteOptions(force=True))
    assert (out / "data.yaml").is_file() and not (out / "labels" / "0.png").exists()
    assert not (out / "labels" / f"{Path(coco['images'][0]['file_name']).stem}.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mine"]  # no partial or old folder left


def test_a_failure_leaves_nothing_and_names_the_file(dsb, tmp_path):
    coco = copy.deepcopy(dsb[0])
    coco["images"][5]["file_name"] = "images/not-there.png"
    with pytest.raises(WriteError, match=r"not-there\.png: image cannot be read .* Fix: "):
        write_masks(coco, dsb[1], tmp_path / "out", "mask-folders")
    coco = copy.deepcopy(dsb[0])
    coco["images"][2]["width"] += 1
    with pytest.raises(WriteError, match=r"says 321x256|says 257x256|Fix: point the image root"):
        write_masks(coco, dsb[1], tmp_path / "out", "label-images")
    with pytest.raises(WriteError, match="choose a format of coco, label-images, mask-folders, yolo"):
        write_masks(dsb[0], dsb[1], tmp_path / "out", "cvat")
    assert list(tmp_path.iterdir()) == []


def test_images_sharing_a_stem_get_distinct_files(dsb, tmp_path):
    coco = copy.deepcopy(dsb[0])
    coco["images"] = coco["images"][:2]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in {im["id"] for im in coco["images"]}]
    root = tmp_path / "root"
    for k, im in enumerate(coco["images"]):
        (root / f"d{k}").mkdir(parents=True)
        (root / f"d{k}" / "same.png").write_bytes((dsb[1] / im["file_name"]).read_bytes())
        im["file_name"] = f"d{k}/same.png"
    write_masks(coco, root, tmp_path / "out", "mask-folders")
    ids = [im["id"] for im in coco["images"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([CSV_NAME, *(f"same-{i}" for i in ids)])
    back = reimport(tmp_path / "out", "mask-folders", tmp_path)
    assert len(back["annotations"]) == len(coco["annotations"])


def test_masks_are_drawn_on_the_image_as_shown_under_an_exif_orientation(dsb, tmp_path):
    """Two images stored turned, with EXIF orientations 6 (a quarter turn of a 320×256 image) and 3 (a half turn)
    that show them as the COCO dict has them: the label images are drawn on the image as shown."""
    coco, root = copy.deepcopy(dsb[0]), tmp_path / "root"
    wide = next(i for i, im in enumerate(coco["images"]) if im["width"] != im["height"])
    turned = {wide: (6, lambda a: np.rot90(a, k=1)), 0 if wide else 1: (3, lambda a: a[::-1, ::-1])}
    for i, im in enumerate(coco["images"]):
        (root / Path(im["file_name"]).parent).mkdir(parents=True, exist_ok=True)
        if i not in turned:
            (root / im["file_name"]).write_bytes((dsb[1] / im["file_name"]).read_bytes())
            continue
        orientation, unturn = turned[i]
        shown = np.asarray(Image.open(dsb[1] / im["file_name"]))
        stored = np.ascontiguousarray(unturn(shown))
        assert (orient_array(stored, orientation) == shown).all()
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(root / im["file_name"], exif=exif)
    result = write_masks(coco, root, tmp_path / "li", "label-images")
    assert result.oriented == 2 and any("--exif shown" in line for line in result.lines())
    stem = Path(coco["images"][wide]["file_name"]).stem
    with Image.open(tmp_path / "li" / "labels" / f"{stem}.png") as label:
        assert label.size == (coco["images"][wide]["width"], coco["images"][wide]["height"])
    back = import_dataset(tmp_path / "li", tmp_path / "back", "label-images", val_fraction=0.0, exif="shown")
    again = json.loads(back.paths["train"].read_text())
    assert pixels_differing(masks_by_stem(coco), masks_by_stem(again), shapes_of(coco)) == 0


def test_a_killed_exports_partial_folder_is_removed_and_the_folder_follows_the_umask(dsb, tmp_path):
    # The export builds beside OUT as the importer does (apis.data.partial): a kill -9 leaves a partial folder
    # with its writer's pid, removed by the next export into OUT; the folder is not tempfile's private 0700.
    coco, root = dsb
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".li.partial-{gone.stdout.strip()}-0000"
    (dead / "labels").mkdir(parents=True)
    (dead / PID_FILE).write_text(gone.stdout)
    old = os.umask(0o027)
    try:
        write_masks(coco, root, tmp_path / "li", "label-images")
    finally:
        os.umask(old)
    assert not dead.exists() and not (tmp_path / "li" / PID_FILE).exists()
    assert stat.S_IMODE((tmp_path / "li").stat().st_mode) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["li"]
