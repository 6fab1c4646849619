"""A .zip SRC (labelling tools export archives) is read as the folder inside it (apis.data.archive)."""

from __future__ import annotations

import zipfile

from dsb_sources import DSB, KEYS, imported, masks, run, same_masks


def test_a_zip_is_imported_as_the_folder_inside_it(tmp_path, capsys):
    keys = KEYS[:3]
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as zf:
        for k in keys:
            for f in sorted((DSB / k).rglob("*.png")):
                zf.write(f, f"stage1_train/{f.relative_to(DSB)}")
    code, text = run(["data", "import", tmp_path / "export.zip", tmp_path / "out", "--val-fraction", "0"], capsys)
    assert code == 0, text
    got = imported(tmp_path / "out")
    assert sorted(got) == keys and all(same_masks([m for _, m, _ in got[k]], masks(k)) for k in keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.zip", "out"]


def test_an_unsafe_zip_is_refused_in_one_line(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../outside.png", b"x")
    code, text = run(["data", "import", tmp_path / "evil.zip", tmp_path / "out"], capsys)
    assert code == 2 and "climbs out of the folder" in text and "Traceback" not in text
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "outside.png").exists()
