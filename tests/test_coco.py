"""Reading, validating, summarising and writing COCO files (apis.data.coco)."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from apis.data.coco import (
    DatasetError,
    DatasetSummary,
    dataset_to_dict,
    format_summary,
    load_coco,
    rle_string_counts,
    summarize,
    write_coco,
)
from apis.data.records import encode_mask

# ----------------------------------------------------------------------------------------- helpers


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE runs of a mask, written out independently of pycocotools:
    column-major pixel order, alternating background/object, starting with background."""
    flat = mask.flatten(order="F").astype(np.uint8)
    runs, current, length = [], 0, 0
    for v in flat:
        if v == current:
            length += 1
        else:
            runs.append(length)
            current, length = int(v), 1
    runs.append(length)
    return runs


def _b_mask() -> np.ndarray:
    """Object of image b (12 rows × 16 columns): rows 2..7, columns 4..10, minus one pixel."""
    m = np.zeros((12, 16), np.uint8)
    m[2:8, 4:11] = 1
    m[5, 6] = 0
    return m


def _crowd_mask() -> np.ndarray:
    """Crowd region of image a (10 rows × 20 columns): rows 5..9, columns 10..14."""
    m = np.zeros((10, 20), np.uint8)
    m[5:10, 10:15] = 1
    return m


def _valid() -> dict:
    """Two images (json order: id 10 then id 3), two categories, polygon + RLE + box-only + crowd."""
    return {
        "info": {"description": "tiny"},
        "images": [
            {"id": 10, "file_name": "a.png", "width": 20, "height": 10},
            {"id": 3, "file_name": "b.png", "width": 16, "height": 12},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 5, "image_id": 10, "category_id": 1, "bbox": [2, 1, 4, 3], "area": 12.0, "iscrowd": 0,
             "segmentation": [[2, 1, 6, 1, 6, 4, 2, 4]]},
            {"id": 2, "image_id": 3, "category_id": 7, "bbox": [4, 2, 7, 6], "iscrowd": 0,
             "segmentation": encode_mask(_b_mask())},  # no area: falls back to the box's 42 px²
            {"id": 9, "image_id": 10, "category_id": 7, "bbox": [0.5, 0.25, 19.5, 9.75], "area": 1500},
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [10, 5, 5, 5], "area": 25, "iscrowd": 1,
             "segmentation": {"size": [10, 20], "counts": _runs(_crowd_mask())}},
        ],
    }


def _write_images(folder: Path, d: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for im in d["images"]:
        Image.new("RGB", (im["width"], im["height"]), (40, 80, 120)).save(folder / im["file_name"])


def _dataset(tmp_path: Path, d: dict | None = None, images_dir: Path | None = None) -> Path:
    """Write ``d`` (default: the valid dataset) as ann.json with its PNGs beside it; return the json path."""
    d = _valid() if d is None else d
    _write_images(images_dir or tmp_path, _valid())
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(d))
    return path


def _refused(path: Path, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_coco(path, **kwargs)
    return info.value


def _ann(d: dict, ann_id: int) -> dict:
    return next(a for a in d["annotations"] if a["id"] == ann_id)


# ------------------------------------------------------------------------------------ valid data


def test_valid_dataset_loads_records_in_file_order(tmp_path):
    ds = load_coco(_dataset(tmp_path))
    assert ds.image_root == tmp_path
    assert ds.info == {"description": "tiny"}
    assert [(c.id, c.name) for c in ds.categories] == [(1, "cat"), (7, "dog")]
    assert [(im.id, im.file_name, im.width, im.height) for im in ds.images] == [
        (10, "a.png", 20, 10), (3, "b.png", 16, 12)]
    a, b = ds.images
    assert [i.id for i in a.instances] == [5, 9, 1]  # file order within the image
    assert [i.id for i in b.instances] == [2]
    assert ds.image_path(a) == tmp_path / "a.png"


def test_boxes_become_xyxy_and_area_falls_back_to_box_area(tmp_path):
    ds = load_coco(_dataset(tmp_path))
    inst = {i.id: i for i in ds.instances(include_crowd=True)}
    assert inst[5].box == (2.0, 1.0, 6.0, 4.0)
    assert inst[9].box == (0.5, 0.25, 20.0, 10.0)
    assert inst[2].box == (4.0, 2.0, 11.0, 8.0)
    assert inst[5].area == 12.0
    assert inst[2].area == 7 * 6  # no "area" in the file
    assert all(isinstance(v, float) for v in inst[5].box)


def test_crowd_kept_but_out_of_the_pool(tmp_path):
    ds = load_coco(_dataset(tmp_path))
    a = ds.images[0]
    crowd = [i for i in a.instances if i.iscrowd]
    assert [i.id for i in crowd] == [1]
    assert [i.id for i in a.pool] == [5, 9]
    assert [i.id for i in ds.instances()] == [5, 9, 2]
    assert np.array_equal(crowd[0].mask(10, 20), _crowd_mask())  # uncompressed RLE decodes


def test_polygon_and_rle_masks_decode_to_the_right_pixels(tmp_path):
    ds = load_coco(_dataset(tmp_path))
    inst = {i.id: i for i in ds.instances()}
    square = np.zeros((10, 20), np.uint8)
    square[1:4, 2:6] = 1  # polygon (2,1)-(6,4): pixel squares of columns 2..5, rows 1..3
    assert np.array_equal(inst[5].mask(10, 20), square)
    assert np.array_equal(inst[2].mask(12, 16), _b_mask())  # compressed RLE string


def test_box_only_annotation_has_no_segmentation(tmp_path):
    d = _valid()
    _ann(d, 2)["segmentation"] = []  # some exporters write [] for "no mask"
    ds = load_coco(_dataset(tmp_path, d))
    inst = {i.id: i for i in ds.instances()}
    assert inst[9].segmentation is None
    assert inst[2].segmentation is None
    with pytest.raises(ValueError, match="no segmentation"):
        inst[9].mask(10, 20)


def test_image_root_defaults_to_images_subfolder_when_files_are_there(tmp_path):
    ds = load_coco(_dataset(tmp_path, images_dir=tmp_path / "images"))
    assert ds.image_root == tmp_path / "images"


def test_explicit_image_root_and_skipping_image_checks(tmp_path):
    elsewhere = tmp_path / "pics"
    path = _dataset(tmp_path, images_dir=elsewhere)
    assert load_coco(path, image_root=elsewhere).image_root == elsewhere
    # Without image checks no file is opened, so a wrong folder is accepted.
    assert len(load_coco(path, image_root=tmp_path / "nowhere", check_images=False).images) == 2


def test_float_ids_and_sizes_holding_integers_are_accepted(tmp_path):
    d = _valid()
    d["images"][0].update(id=10.0, width=20.0)
    _ann(d, 5)["image_id"] = 10.0
    ds = load_coco(_dataset(tmp_path, d))
    assert ds.images[0].id == 10 and ds.images[0].width == 20


def test_box_overshooting_by_less_than_a_pixel_is_clipped(tmp_path):
    d = _valid()
    _ann(d, 9)["bbox"] = [-0.6, -0.4, 20.9, 10.8]  # ends at 20.3, 10.4 on a 20×10 image
    ds = load_coco(_dataset(tmp_path, d))
    assert {i.id: i for i in ds.instances()}[9].box == (0.0, 0.0, 20.0, 10.0)


def test_exif_rotated_jpeg_is_accepted_with_its_displayed_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 30 wide × 20 tall, shown rotated 90°: 20 wide × 30 tall
    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "r.jpg", exif=exif)
    d = {"images": [{"id": 1, "file_name": "r.jpg", "width": 20, "height": 30}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 15, 25]}],
         "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(d))
    ds = load_coco(path)
    assert (ds.images[0].width, ds.images[0].height) == (20, 30)
    assert ds.images[0].instances[0].box == (2.0, 3.0, 17.0, 28.0)

    d["images"][0].update(width=30, height=20)  # the size before rotation is refused, with a hint
    path.write_text(json.dumps(d))
    err = _refused(path)
    assert "image id 1 'r.jpg'" in str(err) and "EXIF" in str(err) and "width=20, height=30" in str(err)


# ------------------------------------------------------------------------------- validation errors


def _set(path: list, value) -> Callable[[dict], None]:
    """A mutation that sets d[path[0]][path[1]]... = value (ints index lists, ann ids pick annotations)."""
    def mutate(d: dict) -> None:
        target = d
        for key in path[:-1]:
            target = _ann(d, key[1]) if isinstance(key, tuple) else target[key]
        target[path[-1]] = value
    return mutate


def _drop(path: list) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        target = d
        for key in path[:-1]:
            target = _ann(d, key[1]) if isinstance(key, tuple) else target[key]
        del target[path[-1]]
    return mutate


def _append(section: str, entry: dict) -> Callable[[dict], None]:
    return lambda d: d[section].append(entry)


ANN5 = "annotation id 5 (image id 10)"
ANN2 = "annotation id 2 (image id 3)"

# (case id, mutation of the valid dataset, substrings the message must contain besides the file path)
RECORD_ERRORS = [
    ("box outside image", _set([("ann", 5), "bbox"], [15, 1, 7, 3]), [ANN5, "outside the 20x10 image"]),
    ("box left of image", _set([("ann", 5), "bbox"], [-2, 1, 4, 3]), [ANN5, "outside"]),
    ("box zero width", _set([("ann", 5), "bbox"], [2, 1, 0, 3]), [ANN5, "zero or negative"]),
    ("box negative height", _set([("ann", 5), "bbox"], [2, 1, 4, -3]), [ANN5, "zero or negative"]),
    ("box non-finite", _set([("ann", 5), "bbox"], [2, 1, float("nan"), 3]), [ANN5, "non-finite"]),
    ("box not 4 numbers", _set([("ann", 5), "bbox"], [2, 1, 4]), [ANN5, "[x, y, w, h]"]),
    ("box missing", _drop([("ann", 5), "bbox"]), [ANN5, "bbox must be"]),
    ("unknown category", _set([("ann", 5), "category_id"], 99), [ANN5, "category_id 99"]),
    ("unknown image", _set([("ann", 5), "image_id"], 42),
     ["annotation id 5 (image id 42)", 'not in "images"']),
    ("duplicate annotation id", _set([("ann", 9), "id"], 5), ["annotation id 5 (image id 10)", "duplicates"]),
    ("duplicate image id", _append("images", {"id": 3, "file_name": "b.png", "width": 16, "height": 12}),
     ["image id 3 'b.png'", "duplicates an earlier image id"]),
    ("duplicate category id", _append("categories", {"id": 7, "name": "wolf"}),
     ["category id 7 'wolf'", "duplicates"]),
    ("polygon odd", _set([("ann", 5), "segmentation"], [[2, 1, 6, 1, 6, 4, 2]]),
     [ANN5, "polygon 0 has 7 coordinates"]),
    ("polygon too short", _set([("ann", 5), "segmentation"], [[2, 1, 6, 1]]), [ANN5, "polygon 0 has 4"]),
    ("polygon flat list", _set([("ann", 5), "segmentation"], [2, 1, 6, 1, 6, 4]), [ANN5, "not a list"]),
    ("rle without counts", _set([("ann", 2), "segmentation"], {"size": [12, 16]}),
     [ANN2, "RLE has no counts"]),
    ("rle without size", _set([("ann", 2), "segmentation"], {"counts": "abc"}), [ANN2, "RLE has no size"]),
    ("rle wrong size", _set([("ann", 2), "segmentation"], encode_mask(np.zeros((16, 12), np.uint8))),
     [ANN2, "RLE size [16, 12] differs", "[12, 16]"]),
    ("rle runs do not cover image", _set([("ann", 1), "segmentation"], {"size": [10, 20], "counts": [5, 5]}),
     ["annotation id 1 (image id 10)", "cover 10 pixels"]),
    ("rle corrupt string", _set([("ann", 2), "segmentation"], {"size": [12, 16], "counts": "~~~"}),
     [ANN2, "corrupt"]),
    ("segmentation wrong type", _set([("ann", 5), "segmentation"], "polygon"), [ANN5, "JSON string"]),
    ("iscrowd wrong", _set([("ann", 5), "iscrowd"], 2), [ANN5, "iscrowd must be 0 or 1"]),
    ("area negative", _set([("ann", 5), "area"], -1), [ANN5, "area must be"]),
    ("annotation without id", _drop([("ann", 5), "id"]), ["annotations[0] (image id 10)", "integer id"]),
    ("image without size", _drop(["images", 1, "width"]), ["image id 3 'b.png'", "positive integers"]),
    ("category without name", _drop(["categories", 0, "name"]), ["category id 1", "no name"]),
    ("image file missing", _set(["images", 1, "file_name"], "gone.png"),
     ["image id 3 'gone.png'", "not found", "image_root"]),
    ("image size differs", _set(["images", 1, "width"], 17),
     ["image id 3 'b.png'", "json size 17x12 differs from the file's 16x12"]),
]


@pytest.mark.parametrize("mutate, expected", [c[1:] for c in RECORD_ERRORS],
                         ids=[c[0] for c in RECORD_ERRORS])
def test_each_invalid_record_is_refused_naming_file_and_record(tmp_path, mutate, expected):
    d = _valid()
    mutate(d)
    path = _dataset(tmp_path, d)
    err = _refused(path)
    message = str(err)
    assert str(path) in message
    for text in expected:
        assert text in message
    assert "Fix:" in message
    assert all(p.startswith(str(path)) for p in err.problems)


def test_unreadable_image_file_is_refused(tmp_path):
    path = _dataset(tmp_path)
    (tmp_path / "b.png").write_text("not a png")
    err = _refused(path)
    assert len(err.problems) == 1
    assert str(path) in str(err) and "image id 3 'b.png'" in str(err) and "unreadable" in str(err)


def test_missing_image_folder_is_one_problem(tmp_path):
    err = _refused(_dataset(tmp_path), image_root=tmp_path / "nowhere")
    assert len(err.problems) == 1 and "nowhere" in err.problems[0] and "image_root" in err.problems[0]


def test_every_problem_is_listed_not_only_the_first(tmp_path):
    d = _valid()
    _ann(d, 5)["bbox"] = [2, 1, 0, 3]
    _ann(d, 2)["category_id"] = 99
    _ann(d, 9)["segmentation"] = [[1, 2, 3]]
    d["images"][1]["file_name"] = "gone.png"
    path = _dataset(tmp_path, d)
    err = _refused(path)
    assert len(err.problems) == 4
    for record in (ANN5, ANN2, "annotation id 9 (image id 10)", "image id 3 'gone.png'"):
        assert record in str(err)
    assert "4 problems" in str(err)
    again = pickle.loads(pickle.dumps(err))  # survives a trip through a worker process
    assert again.problems == err.problems and str(again) == str(err)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"images": [], "annotations": [', "ends early"),  # truncated
        ('{"images": [] "annotations": []}', "not valid JSON"),
        ("", "empty"),
        ("\x89PNG\r\n\x1a\n\xff\xfe\x00", "not a JSON file"),
        ("[1, 2]", "array, not an object"),
        ('{"images": [], "annotations": []}', 'no "categories" list'),
        ('{"images": {}, "annotations": [], "categories": []}', '"images" is a JSON object, not a list'),
    ],
    ids=["truncated", "syntax", "empty", "binary", "top-level list", "missing key", "key not a list"],
)
def test_broken_files_are_refused_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "broken.json"
    path.write_bytes(text.encode("latin-1"))
    err = _refused(path)
    assert str(path) in str(err) and expected in str(err)


def test_missing_json_file_is_a_dataset_error(tmp_path):
    err = _refused(tmp_path / "nope.json")
    assert "nope.json" in str(err) and "not found" in str(err)


def test_rle_string_decoder_matches_pycocotools():
    rng = np.random.default_rng(0)
    for shape in [(12, 16), (40, 33), (1, 1)]:
        mask = (rng.random(shape) > 0.6).astype(np.uint8)
        mask[: shape[0] // 2, : shape[1] // 2] = 1  # long runs exercise multi-character values
        assert rle_string_counts(encode_mask(mask)["counts"]) == _runs(mask)
    with pytest.raises(ValueError):
        rle_string_counts("0`")  # stops inside a value


# -------------------------------------------------------------------------------------- summaries


def test_summarize_counts_on_a_hand_made_dataset(tmp_path):
    d = _valid()
    d["images"].append({"id": 4, "file_name": "c.png", "width": 200, "height": 100})
    d["annotations"] += [
        {"id": 20, "image_id": 4, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 96.0 ** 2},  # large
        {"id": 21, "image_id": 4, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 32.0 ** 2},  # medium
        {"id": 22, "image_id": 4, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 32.0 ** 2 - 1},  # small
    ]
    Image.new("RGB", (200, 100)).save(tmp_path / "c.png")
    s = summarize(load_coco(_dataset(tmp_path, d)))
    assert s == DatasetSummary(
        images=3, instances=6, crowd=1,
        per_category={"cat": 4, "dog": 2},
        # areas: 12 (small), 42 (small), 1500 (medium), 9216 (large), 1024 (medium), 1023 (small)
        sizes={"small": 3, "medium": 2, "large": 1},
        instances_per_image_min=1, instances_per_image_mean=2.0, instances_per_image_max=3,
        instances_with_mask=2,  # ids 5 and 2; 9 and 20-22 are box-only, the crowd mask is not counted
    )
    assert not s.has_masks


def test_summary_tables_render(tmp_path):
    d = _valid()
    _ann(d, 9)["segmentation"] = [[0, 0, 5, 0, 5, 5]]
    s = summarize(load_coco(_dataset(tmp_path, d)))
    assert s.has_masks
    console = Console(width=100, record=True, file=open(os.devnull, "w"))
    for table in format_summary(s):
        console.print(table)
    text = console.export_text()
    assert "cat" in text and "dog" in text and "1 / 1.50 / 2" in text and "66.7%" in text


def test_summary_of_an_empty_dataset(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    s = summarize(load_coco(path))
    assert (s.images, s.instances, s.instances_per_image_mean, s.has_masks) == (0, 0, 0.0, False)


def test_same_category_names_stay_distinct(tmp_path):
    d = _valid()
    d["categories"][1]["name"] = "cat"
    s = summarize(load_coco(_dataset(tmp_path, d)))
    assert s.per_category == {"cat (id 1)": 1, "cat (id 7)": 2}


# ---------------------------------------------------------------------------------------- writing


def test_write_coco_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("old")
    os.chmod(out, 0o640)
    write_coco({"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}, out)
    assert json.loads(out.read_text())["categories"] == [{"id": 1, "name": "x"}]
    assert out.stat().st_mode & 0o777 == 0o640  # the replaced file's mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]

    with pytest.raises(ValueError):
        write_coco({"annotations": [{"area": float("nan")}]}, out)  # NaN is not JSON
    assert json.loads(out.read_text())["categories"] == [{"id": 1, "name": "x"}]  # old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_dataset_round_trips_through_write_coco(tmp_path):
    ds = load_coco(_dataset(tmp_path))
    out = write_coco(dataset_to_dict(ds), tmp_path / "copy.json", indent=1)
    again = load_coco(out)
    assert again.images == ds.images and again.categories == ds.categories and again.info == ds.info
    assert "segmentation" not in next(a for a in json.loads(out.read_text())["annotations"] if a["id"] == 9)

