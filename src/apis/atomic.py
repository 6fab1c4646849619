"""Atomic file writes: a reader, or a crash, sees the old file or the new one, never part of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    The file keeps the mode of the one it replaces (0644 when new; mkstemp alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json_atomic(data: Any, path: str | os.PathLike, indent: int | None = None) -> Path:
    """``data`` as json, atomically. NaN and infinities are refused (ValueError): other tools cannot read them."""
    return write_text_atomic(json.dumps(data, indent=indent, allow_nan=False), path)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every platform lets a folder be opened, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
