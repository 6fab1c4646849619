"""Every bad input to ``apis data import`` ends with exit code 2 and one line naming the file and the fix,
and nothing written; ``--on-error skip`` leaves whole images out. Sources built from the DSB images."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from dsb_sources import DSB, KEYS, annotations, copy_images, imported, labels, masks, run, same_masks
from PIL import Image

from apis.data import importers
from apis.data.coco import load_coco
from apis.data.importers import ImportRefused, import_dataset
from apis.data.partial import PID_FILE
from apis.data.sources import Format, SourceImage, SourceObject


def label_source(root: Path, keys: list[str]) -> Path:
    copy_images(keys, root / "images")
    (root / "labels").mkdir()
    for k in keys:
        Image.fromarray(labels(k)).save(root / "labels" / f"{k}.png")
    return root


def refused_cleanly(code: int, text: str, *needles: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text and "error:" in text
    for needle in needles:
        assert needle in text, (needle, text)


def test_skip_leaves_an_image_out_whole_when_its_label_fails(tmp_path, capsys):
    keys = KEYS[:4]
    src = label_source(tmp_path / "src", keys)
    (src / "labels" / f"{keys[0]}.png").write_bytes(b"\x89PNG broken")
    Image.fromarray(np.ones((10, 12), np.uint16)).save(src / "labels" / f"{keys[1]}.png")
    code, text = run(["data", "import", src, tmp_path / "out"], capsys)
    refused_cleanly(code, text, "2 problems", f"{keys[0]}.png: cannot read", f"{keys[1]}.png: is 12x10")
    assert not (tmp_path / "out").exists()
    code, text = run(["data", "import", src, tmp_path / "out", "--on-error", "skip", "--val-fraction", "0"], capsys)
    assert code == 0, text
    assert text.count("left out whole:") == 2 and f"{keys[0]}.png" in text
    got = imported(tmp_path / "out")
    assert sorted(got) == sorted(keys[2:])
    assert all(same_masks([m for _, m, _ in got[k]], masks(k)) for k in keys[2:])
    # Nothing left to import: refused, even with skip.
    for k in keys[2:]:
        (src / "labels" / f"{k}.png").write_bytes(b"")
    code, text = run(["data", "import", src, tmp_path / "out2", "--on-error", "skip"], capsys)
    refused_cleanly(code, text, "no object to import")
    assert not (tmp_path / "out2").exists()


def test_a_categories_glob_that_matches_nothing_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    for k in KEYS[:3]:
        shutil.copytree(DSB / k, src / k)
    (tmp_path / "cats.yaml").write_text('"*/mask/*.png": nucleus\n')  # masks/, not mask/
    for mode in ("refuse", "skip"):
        code, text = run(["data", "import", src, tmp_path / "out", "--categories", tmp_path / "cats.yaml",
                          "--on-error", mode], capsys)
        refused_cleanly(code, text, "'*/mask/*.png' matches no annotation file", "Fix: correct the glob")
    (tmp_path / "cats.yaml").write_text('"*/masks/*.png": nucleus\n')
    code, text = run(["data", "import", src, tmp_path / "out", "--categories", tmp_path / "cats.yaml"], capsys)
    assert code == 0 and "categories: nucleus" in text


def test_zero_objects_is_refused_with_the_reason(tmp_path, capsys):
    keys = KEYS[:2]
    copy_images(keys, tmp_path / "src" / "images")
    (tmp_path / "src" / "labels").mkdir()
    for k in keys:  # a border of 255 only: void, and no object
        lab = np.zeros(masks(k)[0].shape, np.uint8)
        lab[0] = 255
        Image.fromarray(lab).save(tmp_path / "src" / "labels" / f"{k}.png")
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out"], capsys)
    refused_cleanly(code, text, "no object to import", "the 2 images hold no object", "void pixels")
    assert not (tmp_path / "out").exists()


def test_two_files_of_one_stem_are_refused_naming_both(tmp_path, capsys):
    keys = KEYS[:3]
    src = label_source(tmp_path / "src", keys)
    Image.open(src / "images" / f"{keys[0]}.png").convert("RGB").save(src / "images" / f"{keys[0]}.jpg")
    shutil.copyfile(src / "labels" / f"{keys[1]}.png", src / "labels" / f"{keys[1]}.tif")
    code, text = run(["data", "import", src, tmp_path / "out"], capsys)
    refused_cleanly(code, text, "2 problems")
    for k, a, b in ((keys[0], "png", "jpg"), (keys[1], "png", "tif")):  # one line names both files of a stem
        assert any(f"{k}.{a}" in line and f"{k}.{b}" in line and "rename or remove all but one" in line
                   for line in text.splitlines()), text
    assert "label image without an image" not in text and "no label image" not in text  # said once, not thrice


@pytest.mark.parametrize("name", ["{foo}", "{", "{0}", "{stem.x}", "sub/{stem}", "fixed"])
def test_a_bad_label_name_is_one_line(tmp_path, capsys, name):
    src = label_source(tmp_path / "src", KEYS[:1])
    code, text = run(["data", "import", src, tmp_path / "out", "--label-name", name], capsys)
    refused_cleanly(code, text, f"--label-name {name!r}", "Fix:")


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims ``width``×``height`` (a decompression bomb's header) without the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_huge_image_is_refused_with_the_limit_to_raise(tmp_path, capsys):
    keys = KEYS[:2]
    src = label_source(tmp_path / "src", keys)
    png_header_only(src / "images" / f"{keys[0]}.png", 40_000, 40_000)
    code, text = run(["data", "import", src, tmp_path / "out"], capsys)
    refused_cleanly(code, text, f"{keys[0]}.png: 40000x40000 = 1,600,000,000 pixels, over the limit of 134,217,728",
                    "Fix: pass --max-pixels")
    shutil.copyfile(DSB / keys[0] / "images" / f"{keys[0]}.png", src / "images" / f"{keys[0]}.png")
    code, text = run(["data", "import", src, tmp_path / "out", "--max-pixels", "1000"], capsys)
    w, h = Image.open(src / "images" / f"{keys[0]}.png").size
    refused_cleanly(code, text, f"{keys[0]}.png: {w}x{h} = {w * h:,} pixels, over the limit of 1,000",
                    "Fix: pass --max-pixels")


def test_out_is_checked_before_any_image_is_read(tmp_path, capsys, monkeypatch):
    src = label_source(tmp_path / "src", KEYS[:2])
    monkeypatch.setattr(importers, "read_frame", lambda p: pytest.fail(f"read {p} before checking OUT"))
    code, text = run(["data", "import", src, src], capsys)
    refused_cleanly(code, text, "OUT is the source folder; choose another")
    code, text = run(["data", "import", src, src / "imported"], capsys)
    refused_cleanly(code, text, "OUT is inside the source folder")
    code, text = run(["data", "import", src, src / "labels"], capsys)
    refused_cleanly(code, text, "OUT is inside the source folder")
    code, text = run(["data", "import", src, tmp_path / "out", "--exif", "sideways"], capsys)
    refused_cleanly(code, text, "--exif 'sideways': choose auto, stored, shown")
    assert sorted(p.name for p in src.iterdir()) == ["images", "labels"]
    assert len(list((src / "labels").iterdir())) == 2


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_out_respects_the_umask(tmp_path, umask):
    src = label_source(tmp_path / "src", KEYS[:1])
    old = os.umask(umask)
    try:
        import_dataset(src, tmp_path / "out", val_fraction=0)
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "out" / "train" / "images").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "out" / "train" / "annotations.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not (tmp_path / "out" / PID_FILE).exists()


def test_partial_folders_of_killed_imports_are_removed(tmp_path):
    src = label_source(tmp_path / "src", KEYS[:1])
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".out.partial-{gone.stdout.strip()}-0000"
    alive = tmp_path / ".out.partial-live-0000"
    for folder, pid in ((dead, gone.stdout.strip()), (alive, str(os.getppid()))):
        (folder / "train").mkdir(parents=True)
        (folder / PID_FILE).write_text(pid)
    result = import_dataset(src, tmp_path / "out", val_fraction=0)
    assert not dead.exists() and alive.exists()  # a live writer's folder is its own
    assert any("partial folder" in n for n in result.notes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial-live-0000", "out", "src"]


def test_a_folder_of_bare_images_points_to_apis_init(tmp_path, capsys):
    copy_images(KEYS[:3], tmp_path / "photos")
    code, text = run(["data", "import", tmp_path / "photos", tmp_path / "out"], capsys)
    refused_cleanly(code, text, f"apis init PROJECT --images {tmp_path / 'photos'}", "apis serve")
    code, text = run(["data", "import", tmp_path / "photos", tmp_path / "out", "--layout", "yolo-ish"], capsys)
    refused_cleanly(code, text, "--layout 'yolo-ish': unknown", "mask-folders")


def box_format(boxes: dict[str, list[tuple[float, float, float, float]]]) -> Format:
    """A boxes-only format over SRC/*.png whose boxes are given in the test."""
    def scan(src, options):
        return [SourceImage(p.stem, p) for p in sorted(Path(src).glob("*.png"))], []

    def read(item, frame, options):
        return [SourceObject.from_box(b, "nucleus", f"{item.image}#{i}") for i, b in enumerate(boxes[item.key])], []

    return Format("boxes-test", lambda src: False, scan, read, boxes_only=True)


def test_box_only_objects_are_written_without_segmentation(tmp_path, monkeypatch):
    keys = KEYS[:2]
    copy_images(keys, tmp_path / "src")
    boxes = {keys[0]: [(10.0, 20.0, 30.5, 40.0)], keys[1]: [(0.0, 0.0, 256.0, 256.0), (5.0, 6.0, 7.0, 8.0)]}
    monkeypatch.setitem(importers.FORMATS, "boxes-test", box_format(boxes))
    result = import_dataset(tmp_path / "src", tmp_path / "out", "boxes-test", val_fraction=0)
    assert result.instances["train"] == 3
    coco = annotations(tmp_path / "out")
    assert all("segmentation" not in a for a in coco["annotations"])
    assert coco["annotations"][0]["bbox"] == [10, 20, 30.5, 40] and coco["annotations"][0]["area"] == 1220
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")  # what apis data check reads
    assert [len(im.instances) for im in ds.images] == [1, 2]
    assert all(a.segmentation is None for im in ds.images for a in im.instances)
    w, h = Image.open(tmp_path / "src" / f"{keys[0]}.png").size
    boxes[keys[0]].append((w - 10.0, 10.0, 20.0, 5.0))  # reaches past the right edge
    with pytest.raises(ImportRefused, match=rf"reaches outside its {w}x{h} image"):
        import_dataset(tmp_path / "src", tmp_path / "out2", "boxes-test")
