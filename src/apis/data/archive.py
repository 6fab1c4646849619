"""A dataset that arrives as a ``.zip`` (CVAT, Roboflow and Label Studio export archives), unpacked safely.

:func:`unpacked_source` unpacks into a temporary folder that is removed afterwards, refusing, before writing
anything, an archive that could write outside that folder (an absolute member path, a ``..`` part, a
symbolic link or other special file), an encrypted one, or one whose members add up to more than a bound or
than the free disk space (a zip bomb declares petabytes); while unpacking it counts the bytes really written,
since declared sizes can lie. macOS's ``__MACOSX/`` resource forks are left out.
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

#: The most bytes an archive may unpack to (members' sizes added up).
MAX_UNPACKED_BYTES = 64 * 2**30
MAX_MEMBERS = 2_000_000
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive apis will not unpack, or could not; the message is one line naming it and the fix."""


def _size(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def _refuse(src: Path, what: str, fix: str = "unpack it yourself, check its contents, and pass the folder") -> None:
    raise ArchiveError(f"{src}: {what}. Fix: {fix}")


def _members(zf: zipfile.ZipFile, src: Path, max_bytes: int, free: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members to unpack with their relative paths; refuses the archive at its first unsafe member."""
    out, total = [], 0
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        _refuse(src, f"holds {len(infos)} members, more than {MAX_MEMBERS}")
    for info in infos:
        name = info.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            _refuse(src, f"member {info.filename!r} has an absolute path and would be written outside the folder it "
                    "unpacks to")
        if ".." in path.parts:
            _refuse(src, f"member {info.filename!r} climbs out of the folder it unpacks to ('..')")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            _refuse(src, f"member {info.filename!r} is a symbolic link (it could point anywhere)")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            _refuse(src, f"member {info.filename!r} is not a file or folder")
        if info.flag_bits & 0x1:
            _refuse(src, f"member {info.filename!r} is encrypted", "unpack it with its password, pass the folder")
        if not path.parts or path.parts[0] == "__MACOSX":
            continue
        total += info.file_size
        if total > max_bytes:
            _refuse(src, f"unpacks to more than {_size(max_bytes)} (a zip bomb, or a dataset past apis' bound)")
        out.append((info, path))
    if total > free:
        _refuse(src, f"unpacks to {_size(total)}, more than the {_size(free)} free for it",
                "free disk space, or unpack it yourself onto a larger disk and pass the folder")
    return out


def _extract(zf: zipfile.ZipFile, members: list, dest: Path, src: Path, max_bytes: int) -> None:
    written = 0
    for info, path in members:
        target = dest.joinpath(*path.parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as fin, open(target, "xb") as fout:
            while chunk := fin.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    _refuse(src, f"unpacks to more than {_size(max_bytes)}, beyond its members' declared sizes (a "
                            "zip bomb)")
                fout.write(chunk)


def _top(folder: Path) -> Path:
    """The single folder the archive holds, when it holds exactly one and nothing beside it."""
    entries = list(folder.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


@contextmanager
def unpacked_source(src: Path, *, max_bytes: int = MAX_UNPACKED_BYTES, tmp_dir: Path | None = None) -> Iterator[Path]:
    """For a ``.zip`` ``src``: unpack it into a new temporary folder (in ``tmp_dir``, default the system's) and
    yield the folder to read: the archive's single top folder if it has one, else the temporary folder, removed
    on exit. Any other ``src`` is yielded unchanged. Raises :class:`ArchiveError` (module doc)."""
    src = Path(src)
    if not (src.suffix.lower() == ".zip" and src.is_file()):
        yield src
        return
    tmp = Path(tempfile.mkdtemp(prefix="apis-unzip-", dir=tmp_dir))
    try:
        try:
            with zipfile.ZipFile(src) as zf:
                members = _members(zf, src, max_bytes, shutil.disk_usage(tmp).free)
                _extract(zf, members, tmp, src, max_bytes)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            _refuse(src, f"not a readable zip archive ({e})", "download or export it again")
        except NotImplementedError as e:
            _refuse(src, f"uses a compression apis cannot unpack ({e})")
        except OSError as e:
            _refuse(src, f"cannot be unpacked into {tmp} ({e.strerror or e})",
                    "free disk space there, or unpack it yourself and pass the folder")
        yield _top(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
