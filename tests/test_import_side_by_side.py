"""Images and labels side by side in one folder, told apart by a suffix (built from the DSB images)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from dsb_sources import KEYS, image_path, imported, labels, masks, run, same_masks
from PIL import Image

from apis.data.importers import import_dataset


def side_by_side(root: Path, keys: list[str], image: str = "_img", label: str = "_mask", extra: str | None = "_fg"
                 ) -> Path:
    root.mkdir(parents=True)
    for k in keys:
        shutil.copyfile(image_path(k), root / f"{k}{image}.png")
        lab = labels(k)
        Image.fromarray(lab).save(root / f"{k}{label}.png")
        if extra:  # a foreground mask per image: two values, neither image nor labels
            Image.fromarray((lab > 0).astype(np.uint8) * 255).save(root / f"{k}{extra}.png")
    return root


def test_suffixes_are_told_apart_by_their_pixels(tmp_path, capsys):
    keys = KEYS[:4]
    src = side_by_side(tmp_path / "src", keys)
    code, text = run(["data", "import", src, tmp_path / "out", "--val-fraction", "0"], capsys)
    assert code == 0, text
    assert "format: side-by-side" in text and "other per-image files ignored: 4 in 4 images" in text
    got = imported(tmp_path / "out")
    assert sorted(got) == keys
    assert all(same_masks([m for _, m, _ in got[k]], masks(k)) for k in keys)


def test_dash_suffixes_and_any_names_work(tmp_path):
    keys = KEYS[4:7]
    src = side_by_side(tmp_path / "src", keys, image="-raw", label="-labels", extra=None)
    result = import_dataset(src, tmp_path / "out", val_fraction=0)
    assert result.layout == "side-by-side" and result.images["train"] == 3
    assert all(same_masks([m for _, m, _ in imported(tmp_path / "out")[k]], masks(k)) for k in keys)


def test_two_label_suffixes_are_refused_until_patterns_are_given(tmp_path, capsys):
    keys = KEYS[:3]
    src = side_by_side(tmp_path / "src", keys, extra=None)
    for k in keys:  # a second label-like file per image: the same nuclei, numbered from 500
        Image.fromarray(labels(k, first=500)).save(src / f"{k}_old.png")
    code, text = run(["data", "import", src, tmp_path / "out"], capsys)
    assert code == 2 and "which suffix is which cannot be told" in text and "*_mask: labels" in text
    assert "*_old: labels" in text and "--image-pattern" in text and not (tmp_path / "out").exists()
    code, text = run(["data", "import", src, tmp_path / "out", "--image-pattern", "*_img.png", "--label-pattern",
                      "*_mask.png", "--val-fraction", "0"], capsys)
    assert code == 0, text
    assert "other per-image files ignored: 3 in 3 images" in text
    assert all(same_masks([m for _, m, _ in imported(tmp_path / "out")[k]], masks(k)) for k in keys)
    code, text = run(["data", "import", src, tmp_path / "out2", "--image-pattern", "*_img.png"], capsys)
    assert code == 2 and "--image-pattern and --label-pattern go together" in text
    code, text = run(["data", "import", src, tmp_path / "out2", "--image-pattern", "img.png",
                      "--label-pattern", "*_mask.png"], capsys)
    assert code == 2 and "needs exactly one *" in text


def test_an_image_without_its_label_is_named(tmp_path, capsys):
    keys = KEYS[:3]
    src = side_by_side(tmp_path / "src", keys)
    (src / f"{keys[1]}_mask.png").unlink()
    code, text = run(["data", "import", src, tmp_path / "out"], capsys)
    assert code == 2 and f"{keys[1]}_img.png: no label file of the stem" in text


def test_side_by_side_on_a_folder_without_suffixes_is_one_line(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    shutil.copyfile(image_path(KEYS[0]), tmp_path / "src" / "a.png")
    code, text = run(["data", "import", tmp_path / "src", tmp_path / "out", "--layout", "side-by-side"], capsys)
    assert code == 2 and "no files named like X_img.png and X_mask.png" in text and "Traceback" not in text
