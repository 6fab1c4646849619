"""A folder built beside its destination and renamed into place, so it appears whole or not at all.

A partial folder is ``.OUT.partial-PID-TOKEN`` beside OUT, holding its writer's pid in :data:`PID_FILE`; one
whose writer is gone (a ``kill -9``, a power cut) is removed by the next writer of OUT. Folders and files are
created with the user's umask (``mkdir`` and ``open``), not tempfile's private 0700. Used by ``apis data
import`` (:mod:`apis.data.importing.output`) and by the mask export's writers (:mod:`apis.data.writers`).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

PID_FILE = ".apis-import-pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clear_stale_partials(out: Path) -> list[Path]:
    """Remove the partial folders of ``out`` whose writer process is gone; returns them. Folders without a
    pid file (written by an older apis, or not ours) are left alone."""
    removed = []
    parent = Path(out).parent
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".{Path(out).name}.partial-*"):
        try:
            pid = int((p / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def partial_folder(out: Path) -> Path:
    """A new partial folder beside ``out`` holding this process's pid (take it out before publishing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    (tmp / PID_FILE).write_text(f"{os.getpid()}\n")
    return tmp
