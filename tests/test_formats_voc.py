"""voc-seg (apis.data.formats.voc_seg): CVAT "Segmentation mask" exports (a zip with labelmap.txt) and Pascal VOC
folders, written from the DSB 2018 masks at test time."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from format_samples import N_IMAGES, N_NUCLEI, NAMES, decode, dsb, one_line_naming, read_all, write_voc
from PIL import Image

from apis.cli import main
from apis.data.archive import unpacked_source
from apis.data.coco import load_coco
from apis.data.formats import voc_seg
from apis.data.importing.options import ImportOptions
from apis.data.records import decode_segmentation


def zipped(folder: Path, path: Path) -> Path:
    """A zip of ``folder``'s contents at its root, as CVAT exports."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return path


def assert_exact(r, categories=lambda c: c):
    """Every DSB nucleus read back pixel for pixel, in order, with its category."""
    assert r.scan_problems == [] and r.read_problems == []
    assert len(r.items) == N_IMAGES
    n = 0
    for d in dsb():
        objs = r.objects[d.key]
        assert [o.category for o in objs] == [categories(c) for c in d.categories]
        for o, m in zip(objs, d.masks, strict=True):
            assert np.array_equal(decode(o), m)
            n += 1
    assert n == N_NUCLEI


def test_voc_colours_are_pascal_vocs():
    assert [voc_seg.voc_colour(i) for i in (0, 1, 2, 8, 12, 15, 20)] == [
        (0, 0, 0), (128, 0, 0), (0, 128, 0), (64, 0, 0), (64, 0, 128), (192, 128, 128), (0, 64, 128)]
    assert voc_seg.VOC_NAMES[8] == "cat" and voc_seg.VOC_NAMES[12] == "dog" and len(voc_seg.VOC_NAMES) == 21


def test_a_cvat_zip_reads_pixel_exact_with_labelmap_names_and_void_left_out(tmp_path):
    z = zipped(write_voc(tmp_path / "cvat"), tmp_path / "task.zip")
    with unpacked_source(z, tmp_dir=tmp_path) as src:
        assert (src / "labelmap.txt").is_file() and voc_seg.detect(src)
        options = ImportOptions(root=src)
        r = read_all(voc_seg.FORMAT, src, options)
        assert_exact(r)
        void = sum(n for (_, what), n in options.tally.items() if what == "void pixels")
        assert void > 0  # the band around every object: counted, in no mask (the masks above are exact)


def test_pascal_voc_without_labelmap_uses_the_21_classes_and_palette_objects(tmp_path):
    root = write_voc(tmp_path / "voc", rgb_objects=False, voc_names=("cat", "dog"))
    assert not (root / "labelmap.txt").exists()
    assert Image.open(root / "SegmentationObject" / f"{dsb()[0].key}.png").mode == "P"
    assert_exact(read_all(voc_seg.FORMAT, root), {"nucleus": "cat", "cell": "dog"}.get)


def test_an_object_of_two_classes_is_refused_naming_it(tmp_path):
    d = dsb()[2]
    root = write_voc(tmp_path / "two", [d])
    cls_path = root / "SegmentationClass" / f"{d.key}.png"
    cls = Image.open(cls_path)
    pixels = np.asarray(cls).copy()
    ys, xs = np.nonzero(d.masks[0])
    pixels[ys[0], xs[0]] = 3 - pixels[ys[0], xs[0]]  # one pixel of object 1 painted as the other class
    out = Image.fromarray(pixels, mode="P")
    out.putpalette(cls.getpalette())
    out.save(cls_path)
    r = read_all(voc_seg.FORMAT, root)
    obj_path = root / "SegmentationObject" / f"{d.key}.png"
    assert len(r.read_problems) == 1 and one_line_naming(r.read_problems, obj_path)
    assert "object colour (16, 0, 1) has pixels of 2 classes" in r.read_problems[0]
    assert "(0, 128, 0), (128, 0, 0)" in r.read_problems[0] and str(cls_path) in r.read_problems[0]


def test_an_object_on_background_or_an_unknown_class_is_refused(tmp_path):
    d = dsb()[2]
    root = write_voc(tmp_path / "bg", [d])
    (root / "labelmap.txt").write_text("background:0,0,0::\nnucleus:128,0,0::\n")  # 'cell' missing
    cls_path = root / "SegmentationClass" / f"{d.key}.png"
    cls = Image.open(cls_path)
    pixels = np.asarray(cls).copy()
    pixels[d.masks[0]] = 0
    out = Image.fromarray(pixels, mode="P")
    out.putpalette(cls.getpalette())
    out.save(cls_path)
    r = read_all(voc_seg.FORMAT, root)
    obj_path = root / "SegmentationObject" / f"{d.key}.png"
    assert one_line_naming(r.read_problems, obj_path)
    said = " ".join(r.read_problems)
    assert "object colour (16, 0, 1): its class colour (0, 0, 0)" in said and "is background" in said
    assert f"object colour (16, 0, 2): its class colour (0, 128, 0) in {cls_path} is not in {root / 'labelmap.txt'}" \
        in said
    assert len(r.read_problems) == 1 + sum(c == "cell" for c in d.categories)


def test_scan_names_missing_and_unlisted_files(tmp_path):
    root = write_voc(tmp_path / "scan", dsb()[:4])
    keys = [d.key for d in dsb()[:4]]
    (root / "SegmentationClass" / f"{keys[0]}.png").unlink()
    (root / "JPEGImages" / f"{keys[1]}.png").unlink()
    shutil.copyfile(root / "SegmentationObject" / f"{keys[2]}.png", root / "SegmentationObject" / "extra.png")
    items, problems = voc_seg.FORMAT.scan(root, ImportOptions(root=root))
    assert [it.key for it in items] == keys[2:]
    assert len(problems) == 3 and all("\n" not in p and "Fix:" in p for p in problems)
    said = " ".join(problems)
    assert f"{keys[0]} has no SegmentationClass/{keys[0]}.png" in said
    assert f"{keys[1]} has no JPEGImages/{keys[1]}.*" in said
    assert f"{root / 'SegmentationObject' / 'extra.png'}: not named in any ImageSets/Segmentation/*.txt" in said


def test_an_export_without_images_says_so_once(tmp_path):
    root = write_voc(tmp_path / "noimg", dsb()[:3])
    shutil.rmtree(root / "JPEGImages")
    items, problems = voc_seg.FORMAT.scan(root, ImportOptions(root=root))
    assert items == [] and len(problems) == 1 and "no JPEGImages/ folder" in problems[0]
    assert "'Save images' was off" in problems[0] and "Fix:" in problems[0]


def test_a_broken_labelmap_line_is_refused_naming_it(tmp_path):
    root = write_voc(tmp_path / "lm", dsb()[:1])
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\nnucleus:128,0::\n")
    items, problems = voc_seg.FORMAT.scan(root, ImportOptions(root=root))
    assert items == [] and one_line_naming(problems, f"{root / 'labelmap.txt'}:3")


def test_apis_data_import_reads_a_cvat_export_end_to_end(tmp_path, capsys):
    root = write_voc(tmp_path / "cvat")
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(root), str(tmp_path / "out"), "--val-fraction", "0"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "format: voc-seg" in text and "void pixels:" in text
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")
    names = ds.category_names
    assert sorted(names.values()) == sorted(NAMES)
    by_key = {d.key: d for d in dsb()}
    n = 0
    for im in ds.images:
        d = by_key[Path(im.file_name).stem]
        assert [names[a.category_id] for a in im.instances] == d.categories
        for a, m in zip(im.instances, d.masks, strict=True):
            assert np.array_equal(decode_segmentation(a.segmentation, im.height, im.width).astype(bool), m)
            n += 1
    assert n == N_NUCLEI


def test_apis_data_import_reads_the_cvat_zip_itself(tmp_path, capsys):
    z = zipped(write_voc(tmp_path / "cvat", dsb()[:4]), tmp_path / "task.zip")
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(z), str(tmp_path / "out"), "--val-fraction", "0"])
    assert e.value.code == 0 and "format: voc-seg" in capsys.readouterr().out
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")
    assert sum(len(im.instances) for im in ds.images) == sum(len(d.masks) for d in dsb()[:4])
