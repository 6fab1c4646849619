"""apis.data.archive.unpacked_source: a .zip source unpacked into a temporary folder, or refused before
anything is written when it could write outside it or is too large."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from apis.data.archive import ArchiveError, unpacked_source


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_zip_with_one_top_folder_yields_that_folder_and_is_removed_after(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    z = make_zip(tmp_path / "export.zip", {"task_1/labelmap.txt": b"# label\n", "task_1/SegmentationObject/a.png": b"x",
                                           "__MACOSX/task_1/._labelmap.txt": b"fork"})
    with unpacked_source(z, tmp_dir=work) as src:
        assert src.name == "task_1" and src.parent.parent == work
        assert (src / "labelmap.txt").read_bytes() == b"# label\n" and (src / "SegmentationObject" / "a.png").is_file()
        assert not (src.parent / "__MACOSX").exists()
    assert list(work.iterdir()) == []


def test_a_zip_of_loose_files_yields_the_temporary_folder(tmp_path):
    z = make_zip(tmp_path / "cvat.zip", {"labelmap.txt": b"l", "SegmentationClass/a.png": b"c"})
    with unpacked_source(z, tmp_dir=tmp_path) as src:
        assert sorted(p.name for p in src.iterdir()) == ["SegmentationClass", "labelmap.txt"]


def test_a_folder_or_a_json_passes_unchanged(tmp_path):
    for src in (tmp_path, tmp_path / "instances.json"):
        with unpacked_source(src) as got:
            assert got == src


def _symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        link = zipfile.ZipInfo("data/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return path


def _encrypted_zip(path: Path) -> Path:
    """A member flagged encrypted (bit 0 of its flags, in its local and central headers; zipfile writes none)."""
    make_zip(path, {"secret.txt": b"not really encrypted"})
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        raw[raw.index(signature) + offset] |= 0x1
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("build, says", [
    (lambda p: make_zip(p, {"ok.txt": b"1", "../evil.txt": b"pwned"}), "climbs out of the folder it unpacks to"),
    (lambda p: make_zip(p, {"sub/../../evil.txt": b"pwned"}), "climbs out of the folder it unpacks to"),
    (lambda p: make_zip(p, {"/tmp/apis-evil-absolute.txt": b"pwned"}), "has an absolute path"),
    (lambda p: make_zip(p, {"C:/evil.txt": b"pwned"}), "has an absolute path"),
    (_symlink_zip, "is a symbolic link"),
    (_encrypted_zip, "is encrypted"),
    (lambda p: make_zip(p, {"zeros.bin": bytes(3 << 20)}), "unpacks to more than 1 MiB (a zip bomb"),
    (lambda p: p.write_bytes(b"PK\x03\x04 this is not really a zip") and p, "not a readable zip archive"),
])
def test_a_malicious_or_broken_zip_is_refused_in_one_line_and_writes_nothing(tmp_path, build, says):
    work = tmp_path / "work"
    work.mkdir()
    z = build(tmp_path / "bad.zip")
    with pytest.raises(ArchiveError) as e:
        with unpacked_source(z, max_bytes=1 << 20, tmp_dir=work):
            pytest.fail("a refused archive must not be yielded")
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{z}: ") and says in text and "Fix:" in text
    assert list(work.iterdir()) == []  # the temporary folder is gone, with anything written to it
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/apis-evil-absolute.txt").exists()
    assert not (work.parent / "evil.txt").exists()


def test_a_small_zip_with_a_large_bound_unpacks(tmp_path):
    z = make_zip(tmp_path / "zeros.zip", {"zeros.bin": bytes(3 << 20)})
    with unpacked_source(z, max_bytes=4 << 20, tmp_dir=tmp_path) as src:
        assert (src / "zeros.bin").stat().st_size == 3 << 20
