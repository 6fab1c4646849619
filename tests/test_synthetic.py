"""The built-in synthetic dataset: deterministic, COCO-consistent, occlusion-aware, idempotent."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from apis.data.synthetic import CATEGORIES, SyntheticConfig, generate, mask_to_polygons

SMALL = SyntheticConfig(seed=3, image_size=96, train_images=6, val_images=6)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("small"), SMALL)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _decode(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def _tight_box(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]


def _masks_by_image(coco: dict) -> dict[int, list[np.ndarray]]:
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    out: dict[int, list[np.ndarray]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        out[ann["image_id"]].append(_decode(ann["segmentation"], *sizes[ann["image_id"]]))
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_on_disk_and_coco_keys(small_dataset: dict[str, Path]) -> None:
    assert set(small_dataset) == {"train", "val"}
    for split, path in small_dataset.items():
        coco = _load(path)
        assert path.name == "annotations.json" and path.parent.name == split
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5, 6]
        assert [c["name"] for c in coco["categories"]] == list(CATEGORIES)
        assert coco["info"]["seed"] == 3 and coco["info"]["config"]["image_size"] == 96
        assert len(coco["images"]) == 6
        for im in coco["images"]:
            # file_name is relative to the json's folder, so image_root = json folder.
            assert im["file_name"].startswith("images/")
            with Image.open(path.parent / im["file_name"]) as pil:
                assert pil.mode == "RGB" and pil.size == (im["width"], im["height"]) == (96, 96)
        ids = [a["id"] for a in coco["annotations"]]
        assert len(set(ids)) == len(ids)
        for ann in coco["annotations"]:
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 6
            assert isinstance(ann["segmentation"]["counts"], str)


def test_same_seed_gives_byte_identical_files(small_dataset: dict[str, Path], tmp_path: Path) -> None:
    root = small_dataset["train"].parent.parent
    again = generate(tmp_path / "again", SMALL)
    assert _files(again["train"].parent.parent) == _files(root)


def test_different_seed_differs(small_dataset: dict[str, Path], tmp_path: Path) -> None:
    other = generate(tmp_path / "other", replace(SMALL, seed=4))
    for split in ("train", "val"):
        assert other[split].read_bytes() != small_dataset[split].read_bytes()
        first = "images/000001.png"
        ours, theirs = small_dataset[split].parent / first, other[split].parent / first
        assert ours.read_bytes() != theirs.read_bytes()


def test_an_image_does_not_depend_on_how_many_came_before(
    small_dataset: dict[str, Path], tmp_path: Path
) -> None:
    fewer = generate(tmp_path / "fewer", replace(SMALL, train_images=3, val_images=1))
    name = "images/000003.png"
    assert (fewer["train"].parent / name).read_bytes() == (small_dataset["train"].parent / name).read_bytes()


def test_bbox_and_area_are_those_of_the_decoded_visible_mask(small_dataset: dict[str, Path]) -> None:
    for path in small_dataset.values():
        coco = _load(path)
        sizes = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
        for ann in coco["annotations"]:
            mask = _decode(ann["segmentation"], *sizes[ann["image_id"]])
            assert ann["bbox"] == _tight_box(mask), ann["id"]
            assert ann["area"] == float(mask.sum()) >= 12


def test_masks_of_one_image_are_disjoint_and_counts_in_bounds(small_dataset: dict[str, Path]) -> None:
    for path in small_dataset.values():
        for image_id, masks in _masks_by_image(_load(path)).items():
            assert SMALL.min_instances <= len(masks) <= SMALL.max_instances, image_id
            coverage = np.sum(masks, axis=0)
            assert coverage.max() <= 1, f"image {image_id}: overlapping visible masks"


def test_default_image_size_covers_every_category_and_coco_size_class(tmp_path: Path) -> None:
    config = SyntheticConfig(train_images=0, val_images=60)  # default 160 px images, one split
    coco = _load(generate(tmp_path, config)["val"])
    anns = coco["annotations"]
    assert Counter(a["category_id"] for a in anns).keys() == set(range(1, 7))
    areas = np.array([a["area"] for a in anns])
    shares = [np.mean(areas < 32**2), np.mean((areas >= 32**2) & (areas < 96**2)), np.mean(areas >= 96**2)]
    assert min(shares) >= 0.05, shares
    per_image = Counter(a["image_id"] for a in anns)
    assert len(per_image) == 60 and 1 <= min(per_image.values()) and max(per_image.values()) <= 8


def test_polygon_format_decodes_to_the_same_masks_as_rle(
    small_dataset: dict[str, Path], tmp_path: Path
) -> None:
    poly = generate(tmp_path, replace(SMALL, mask_format="polygon"))
    for split in ("train", "val"):
        coco_poly, coco_rle = _load(poly[split]), _load(small_dataset[split])
        assert isinstance(coco_poly["annotations"][0]["segmentation"], list)
        for ann in coco_poly["annotations"]:
            box = _tight_box(_decode(ann["segmentation"], 96, 96))
            assert np.abs(np.subtract(box, ann["bbox"])).max() <= 1.0
        # The mask format does not touch the random stream: same layout, and pixel-edge polygons
        # rasterise back exactly.
        from_poly, from_rle = _masks_by_image(coco_poly), _masks_by_image(coco_rle)
        assert from_poly.keys() == from_rle.keys()
        for image_id in from_rle:
            a, b = from_poly[image_id], from_rle[image_id]
            assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_mask_to_polygons_round_trips_holes_islands_and_diagonal_touches() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.uniform(size=(23, 31)) < p for p in (0.2, 0.5, 0.8)]
    ring = np.zeros((12, 12), bool)
    ring[2:10, 2:10] = True
    ring[4:8, 4:8] = False
    ring[5:7, 5:7] = True  # an island inside the hole
    masks.append(ring)
    for mask in masks:
        decoded = _decode(mask_to_polygons(mask), *mask.shape)
        assert np.array_equal(decoded, mask)
    assert mask_to_polygons(np.zeros((4, 4), bool)) == []


def test_second_call_with_same_config_writes_nothing(tmp_path: Path) -> None:
    config = replace(SMALL, train_images=3, val_images=2)
    generate(tmp_path, config)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    calls: list[tuple[int, int]] = []
    generate(tmp_path, config, progress=lambda done, total: calls.append((done, total)))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert calls == [(5, 5)]


def test_changed_config_regenerates_and_removes_stale_images(tmp_path: Path) -> None:
    generate(tmp_path, replace(SMALL, train_images=4, val_images=1))
    calls: list[tuple[int, int]] = []
    paths = generate(tmp_path, replace(SMALL, train_images=2, val_images=1),
                     progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert _load(paths["train"])["info"]["config"]["train_images"] == 2
    assert sorted(p.name for p in (tmp_path / "train" / "images").iterdir()) == ["000001.png", "000002.png"]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    "change",
    [
        {"image_size": 16},
        {"min_instances": 0},
        {"min_instances": 5, "max_instances": 4},
        {"mask_format": "png"},
        {"train_images": -1},
    ],
)
def test_invalid_config_is_refused(change: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(**change)
