"""apis data import on real pixels (tests/data/dsb2018: 20 DSB 2018 images, CC0) and on broken copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from apis.cli import main
from apis.data.coco import load_coco
from apis.data.importers import ImportRefused, import_dataset, size_advice, split_keys
from apis.data.records import decode_segmentation

DSB = Path(__file__).parent / "data" / "dsb2018" / "stage1_train"
N_IMAGES, N_NUCLEI = 20, 522


def dsb_masks(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").iterdir())]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "dsb"
    return import_dataset(DSB, out, category="nucleus", val_fraction=0.25, seed=0), out


def test_mask_folders_import_is_valid_coco_with_tight_boxes(imported):
    result, out = imported
    assert result.images == {"train": 15, "val": 5}
    assert sum(result.instances.values()) == N_NUCLEI
    assert result.categories == ["nucleus"] and result.skipped == []
    seen = 0
    for split in ("train", "val"):
        ds = load_coco(out / split / "annotations.json")  # the COCO reader's own validation accepts it
        assert [c.name for c in ds.categories] == ["nucleus"]
        for im in ds.images:
            key = Path(im.file_name).stem
            source = sorted(m.sum() for m in dsb_masks(DSB / key))
            assert sorted(int(a.area) for a in im.instances) == source
            for a in im.instances:
                mask = decode_segmentation(a.segmentation, im.height, im.width).astype(bool)
                ys, xs = np.nonzero(mask)
                # Tight box over pixel edges: the mask touches all four sides.
                assert a.box == (xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0)
                assert mask.sum() == a.area
                seen += 1
            # The image is the source file, byte for byte.
            assert (ds.image_root / im.file_name).read_bytes() == next((DSB / key / "images").iterdir()).read_bytes()
    assert seen == N_NUCLEI


def test_split_is_reproducible_and_by_image(imported, tmp_path):
    result, out = imported
    again = import_dataset(DSB, tmp_path / "again", category="nucleus", val_fraction=0.25, seed=0)
    for split in ("train", "val"):
        a = json.loads((out / split / "annotations.json").read_text())
        b = json.loads(again.paths[split].read_text())
        assert [i["file_name"] for i in a["images"]] == [i["file_name"] for i in b["images"]]
    train = {i["file_name"] for i in json.loads((out / "train/annotations.json").read_text())["images"]}
    val = {i["file_name"] for i in json.loads((out / "val/annotations.json").read_text())["images"]}
    assert not train & val and len(train | val) == N_IMAGES
    other = split_keys([f"k{i}" for i in range(20)], 0.25, seed=1)
    assert other != split_keys([f"k{i}" for i in range(20)], 0.25, seed=0)
    assert split_keys(["a", "b"], 0.01, 0) == {"train": ["a"], "val": ["b"]} or \
        split_keys(["a", "b"], 0.01, 0) == {"train": ["b"], "val": ["a"]}


def test_small_nuclei_get_size_advice_in_the_run_config(imported):
    result, out = imported
    assert result.sizes is not None and result.sizes.too_small_for_tiny
    assert result.sizes.test_min_size > 160
    text = (out / "apis.yaml").read_text()
    assert f"# model: {{test_min_size: {result.sizes.test_min_size}," in text and "preset: tiny" in text
    assert "model" not in yaml.safe_load(text)  # advice only: the tiny preset's sizes stay unless uncommented
    # At the advised input the median object is at least 16 px across; at 160 px it was not.
    big = size_advice([(400.0, 1000, 1000)] * 3)  # 20 px objects in 1000 px images: 3.2 px at 160
    assert big.at_tiny == pytest.approx(3.2) and big.test_min_size == 800
    fine = size_advice([(40_000.0, 400, 300)])
    assert not fine.too_small_for_tiny and fine.test_min_size == 160


def write_label_layout(root: Path, keys: list[str], suffix: str = "_mask") -> None:
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for key in keys:
        shutil.copyfile(next((DSB / key / "images").iterdir()), root / "PNGImages" / f"{key}.png")
        masks = dsb_masks(DSB / key)
        labels = np.zeros(masks[0].shape, dtype=np.uint16)
        for i, m in enumerate(masks, 1):
            labels[m & (labels == 0)] = 300 + i  # 16-bit values above 255
        Image.fromarray(labels).save(root / "PedMasks" / f"{key}{suffix}.png")


def test_label_images_layout_gives_the_same_instances(tmp_path):
    keys = sorted(p.name for p in DSB.iterdir())[:4]
    write_label_layout(tmp_path / "src", keys)
    result = import_dataset(tmp_path / "src", tmp_path / "out", category="nucleus", val_fraction=0.0)
    assert list(result.paths) == ["train"] and result.images["train"] == 4
    ds = load_coco(result.paths["train"])
    for im in ds.images:
        expected = sorted(int(m.sum()) for m in dsb_masks(DSB / Path(im.file_name).stem))
        # DSB's masks do not overlap, so each label value is one mask exactly.
        assert sorted(int(a.area) for a in im.instances) == expected


@pytest.fixture
def broken(tmp_path):
    """A copy of five images of the subset, one problem planted in each."""
    src = tmp_path / "src"
    keys = sorted(p.name for p in DSB.iterdir())[:6]
    for k in keys:
        shutil.copytree(DSB / k, src / k)
    masks = [sorted((src / k / "masks").iterdir()) for k in keys]
    masks[0][0].write_bytes(b"not a png at all")                                   # unreadable
    Image.fromarray(np.ones((10, 12), np.uint8) * 255).save(masks[1][0])           # another size
    first = np.asarray(Image.open(masks[2][0]))
    Image.fromarray(np.zeros_like(first)).save(masks[2][0])                        # empty
    shutil.copyfile(masks[3][0], masks[3][0].with_name("copy-of-first.png"))       # two instances, one pixel
    next((src / keys[4] / "images").iterdir()).unlink()                            # missing image
    return src, keys


def test_each_bad_input_gives_one_line_and_nothing_is_written(broken, tmp_path):
    src, keys = broken
    out = tmp_path / "out"
    with pytest.raises(ImportRefused) as e:
        import_dataset(src, out)
    problems = e.value.problems
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    for what in ("cannot read", "is 12x10", "mask is empty", "shares", "no image file"):
        assert sum(what in p for p in problems) == 1, (what, joined)
    assert all("Fix:" in p for p in problems)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no half-written folder beside it either


def test_skip_leaves_every_image_with_a_problem_out_whole(broken, tmp_path):
    src, keys = broken
    result = import_dataset(src, tmp_path / "out", on_error="skip", val_fraction=0.0)
    assert len(result.skipped) == 5
    # The four images with one bad mask are left out whole (their other objects would be taught as
    # background otherwise), the one without its file never was an image: only the sixth stays, all of it.
    assert result.images["train"] == 1
    assert result.instances["train"] == len(list((src / keys[5] / "masks").iterdir()))
    assert sorted(Path(p).parent.parent.name for p in result.left_out) == sorted(keys[:4])
    ds = load_coco(result.paths["train"])
    assert [Path(im.file_name).stem for im in ds.images] == [keys[5]]


def test_output_folder_must_be_new_and_layout_found(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ImportRefused, match="not empty"):
        import_dataset(DSB, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ImportRefused, match="no known layout"):
        import_dataset(tmp_path / "nothing", tmp_path / "out2")
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(tmp_path / "nothing"), str(tmp_path / "out3")])
    assert e.value.code == 2
    assert "no known layout" in capsys.readouterr().out


def test_cli_imports_labels_with_a_name_template(tmp_path, capsys):
    keys = sorted(p.name for p in DSB.iterdir())[:3]
    write_label_layout(tmp_path / "src", keys, suffix="")
    (tmp_path / "src" / "PedMasks").rename(tmp_path / "src" / "seg")
    for p in (tmp_path / "src" / "seg").iterdir():
        p.rename(p.with_name(f"man_seg_{p.name}"))
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(tmp_path / "src"), str(tmp_path / "out"),
              "--images", str(tmp_path / "src/PNGImages"), "--labels", str(tmp_path / "src/seg"),
              "--label-name", "man_seg_{stem}", "--val-fraction", "0"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "train:" in text and "3 images" in text and "apis.yaml" in text
    assert load_coco(tmp_path / "out/train/annotations.json").images[0].instances
