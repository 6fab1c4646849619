"""cellpose (apis.data.formats.cellpose): X.png beside X_seg.npy (pickled dicts, read without running pickled
code) or X_masks.png, written from the DSB 2018 masks at test time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from format_samples import N_IMAGES, N_NUCLEI, decode, dsb, one_line_naming, read_all, write_cellpose
from PIL import Image

from apis.cli import main
from apis.data.coco import load_coco
from apis.data.formats import cellpose
from apis.data.formats.npy import ForbiddenPickle, load_npy
from apis.data.importing.options import ImportOptions
from apis.data.records import decode_segmentation
from apis.data.sources import ReadOptions, orient_array


class Opens:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Getcwd:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_cellpose(tmp_path_factory.mktemp("cp") / "cellpose", png_for=(1, 5))


def test_seg_npy_and_masks_png_read_pixel_exact(sample):
    r = read_all(cellpose.FORMAT, sample, ReadOptions(category="nucleus"))
    assert r.scan_problems == [] and r.read_problems == [] and len(r.items) == N_IMAGES
    assert sum(it.label is not None for it in r.items) == 2 and sum(it.annotation is not None for it in r.items) == 18
    n = 0
    for d in dsb():
        objs = r.objects[d.key]
        assert [o.category for o in objs] == ["nucleus"] * len(d.masks)
        for o, m in zip(objs, d.masks, strict=True):
            assert np.array_equal(decode(o), m)
            n += 1
    assert n == N_NUCLEI


def test_categories_by_glob_over_the_annotation_files(sample):
    options = ImportOptions(root=sample, categories={"*_masks.png": "from png", "*_seg.npy": "from npy"})
    r = read_all(cellpose.FORMAT, sample, options)
    cats = {it.key: {o.category for o in r.objects[it.key]} for it in r.items}
    assert {k for k, c in cats.items() if c == {"from png"}} == {dsb()[1].key, dsb()[5].key}
    assert sum(c == {"from npy"} for c in cats.values()) == 18


def test_the_seg_npy_dict_is_read_without_pickle_running(sample):
    content = load_npy(sample / f"{dsb()[0].key}_seg.npy")
    assert isinstance(content, dict) and content["masks"].dtype == np.uint16
    assert content["filename"].endswith(".png") and content["diameter"] == 17.0 and content["chan_choose"] == [0, 0]


@pytest.mark.parametrize("evil, type_name", [(Opens, f"{open.__module__}.open"),
                                             (Getcwd, f"{os.getcwd.__module__}.getcwd")])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, evil, type_name):
    d = dsb()[2]
    root = write_cellpose(tmp_path / "evil", [d])
    marker = tmp_path / "pwned"
    payload = evil(str(marker)) if evil is Opens else evil()
    seg = root / f"{d.key}_seg.npy"
    np.save(seg, {"masks": d.labels(), "note": payload}, allow_pickle=True)
    with pytest.raises(ForbiddenPickle) as e:
        load_npy(seg)
    assert e.value.type_name == type_name
    r = read_all(cellpose.FORMAT, root)
    assert not marker.exists()
    assert len(r.read_problems) == 1 and one_line_naming(r.read_problems, seg)
    said = r.read_problems[0]
    assert f"holds a pickled object of type {type_name}; apis reads only arrays from it" in said
    assert f"save the masks as {d.key}_masks.png with cellpose --save_png" in said
    # The file really is hostile: numpy's own loader runs it.
    if evil is Opens:
        np.load(seg, allow_pickle=True).item()
        assert marker.exists()


def test_a_stale_masks_png_beside_the_npy_is_refused_naming_both(tmp_path):
    d = dsb()[3]
    root = write_cellpose(tmp_path / "stale", [d])
    labels = d.labels()
    labels[labels == 2] = 0  # the GUI's correction (an object deleted) reached the npy only
    Image.fromarray(labels).save(root / f"{d.key}_masks.png")
    r = read_all(cellpose.FORMAT, root)
    assert len(r.read_problems) == 1 and one_line_naming(r.read_problems, root / f"{d.key}_masks.png")
    assert f"differs on {int(d.masks[1].sum())} pixels from {root / f'{d.key}_seg.npy'}" in r.read_problems[0]
    Image.fromarray(d.labels()).save(root / f"{d.key}_masks.png")  # agreeing files are read once
    assert len(read_all(cellpose.FORMAT, root).objects[d.key]) == len(d.masks)


def test_scan_names_unpaired_and_ambiguous_files(tmp_path):
    root = write_cellpose(tmp_path / "scan", dsb()[:4])
    keys = [d.key for d in dsb()[:4]]
    (root / f"{keys[0]}_seg.npy").unlink()  # an image never annotated
    (root / f"{keys[1]}.png").unlink()  # an annotation without its image
    Image.open(dsb()[2].image).save(root / f"{keys[2]}.tif")  # two images of one stem
    items, problems = cellpose.FORMAT.scan(root, ReadOptions())
    assert [it.key for it in items] == [keys[3]]
    assert len(problems) == 3 and all("\n" not in p and "Fix:" in p for p in problems)
    said = " ".join(problems)
    assert f"{root / keys[0]}.png: no {keys[0]}_seg.npy or {keys[0]}_masks.png beside it" in said
    assert f"{root / keys[1]}_seg.npy: no image {keys[1]}.*" in said
    assert f"{root / keys[2]}.png and {root / keys[2]}.tif: 2 image files of one name" in said


def test_labels_of_an_image_with_exif_orientation(tmp_path):
    """Labels drawn on the stored pixels of a non-square image turned by EXIF come out in the shown frame; on a
    square one the frame cannot be told and the import asks for --exif."""
    wide = next(d for d in dsb() if d.width == 320)
    square = next(d for d in dsb() if d.width == d.height)
    root = tmp_path / "exif"
    root.mkdir()
    for name, d in (("wide", wide), ("square", square)):
        im = Image.open(d.image).convert("RGB")
        exif = im.getexif()
        exif[0x0112] = 6
        im.save(root / f"{name}.png", exif=exif.tobytes())
        np.save(root / f"{name}_seg.npy", {"masks": d.labels()}, allow_pickle=True)
    r = read_all(cellpose.FORMAT, root)
    shown = [orient_array(m, 6) for m in wide.masks]
    assert [np.array_equal(decode(o), m) for o, m in zip(r.objects["wide"], shown, strict=True)] == [True] * len(shown)
    assert len(r.read_problems) == 1 and one_line_naming(r.read_problems, root / "square_seg.npy")
    assert "--exif stored or --exif shown" in r.read_problems[0]
    stored = read_all(cellpose.FORMAT, root, ReadOptions(exif="stored"))
    assert stored.read_problems == [] and len(stored.objects["square"]) == len(square.masks)


def test_a_plain_label_array_npy_and_bad_arrays(tmp_path):
    d = dsb()[4]
    root = write_cellpose(tmp_path / "arr", [d])
    seg = root / f"{d.key}_seg.npy"
    np.save(seg, d.labels().astype(np.int32))  # not pickled: the array itself
    assert len(read_all(cellpose.FORMAT, root).objects[d.key]) == len(d.masks)
    np.save(seg, {"masks": np.stack([d.labels()] * 2)}, allow_pickle=True)
    assert "labels of shape (2, 256, 256), not H×W" in read_all(cellpose.FORMAT, root).read_problems[0]
    np.save(seg, {"outlines": d.labels()}, allow_pickle=True)
    r = read_all(cellpose.FORMAT, root)
    assert one_line_naming(r.read_problems, seg) and "holds no 'masks' entry" in r.read_problems[0]
    seg.write_bytes(b"\x93NUMPY broken")
    assert one_line_naming(read_all(cellpose.FORMAT, root).read_problems, seg)


def test_detect_needs_an_image_beside_its_annotation(tmp_path, sample):
    assert cellpose.detect(sample)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copyfile(next(sample.glob("*_seg.npy")), lone / "x_seg.npy")
    assert not cellpose.detect(lone)
    assert not cellpose.detect(Path(dsb()[0].image).parent.parent.parent)  # DSB's mask folders


def test_apis_data_import_reads_cellpose_end_to_end(sample, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "import", str(sample), str(tmp_path / "out"), "--val-fraction", "0", "--category", "nucleus"])
    assert e.value.code == 0
    assert "format: cellpose" in capsys.readouterr().out
    ds = load_coco(tmp_path / "out" / "train" / "annotations.json")
    assert [c.name for c in ds.categories] == ["nucleus"]
    by_key = {d.key: d for d in dsb()}
    n = 0
    for im in ds.images:
        for a, m in zip(im.instances, by_key[Path(im.file_name).stem].masks, strict=True):
            assert np.array_equal(decode_segmentation(a.segmentation, im.height, im.width).astype(bool), m)
            n += 1
    assert n == N_NUCLEI
