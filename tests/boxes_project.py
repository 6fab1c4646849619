"""Box projects for the tests: a folder of CC0 DSB 2018 images (tests/data/dsb2018) copied at test time, and a
project made of it as ``apis init PROJECT --images DIR`` makes one."""

from __future__ import annotations

import shutil
from pathlib import Path

from apis.config import load_config
from apis.serve.box_project import create

DSB = Path(__file__).parent / "data" / "dsb2018" / "stage1_train"


def dsb_images(dest: Path, n: int = 2, first: int = 0) -> list[Path]:
    """Copy ``n`` DSB images (sorted by id, from the ``first``) into ``dest``; their new paths, by name."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(DSB.iterdir())[first : first + n]
    return sorted(Path(shutil.copy(d / "images" / f"{d.name}.png", dest / f"{d.name[:8]}.png")) for d in sources)


def box_project(root: Path, n: int = 2, categories: tuple[str, ...] = ("cell",), seed: int = 0,
                config: dict | None = None) -> Path:
    """``root/project``, started from ``n`` DSB images (copied to ``root/images``) with ``categories``."""
    folder = root / "images"
    dsb_images(folder, n)
    project = root / "project"
    create(project, folder, list(categories), load_config(None, config), seed)
    return project
