"""Sources in other formats built at test time from the 20 DSB 2018 images (tests/data/dsb2018, CC0), and
readers of what ``apis data import`` wrote, for the importer's tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from apis.cli import console, main
from apis.data.coco import load_coco
from apis.data.records import decode_segmentation

DSB = Path(__file__).parent / "data" / "dsb2018" / "stage1_train"
KEYS = sorted(p.name for p in DSB.iterdir())


def image_path(key: str) -> Path:
    return next((DSB / key / "images").iterdir())


def masks(key: str) -> list[np.ndarray]:
    """The image's nucleus masks (H×W bool), in file order."""
    return [np.asarray(Image.open(p)) > 0 for p in sorted((DSB / key / "masks").iterdir())]


def labels(key: str, first: int = 1, dtype=np.uint16) -> np.ndarray:
    """The masks as one label image, object i (0-based, file order) at value ``first + i`` (DSB's masks do
    not overlap)."""
    ms = masks(key)
    out = np.zeros(ms[0].shape, dtype=dtype)
    for i, m in enumerate(ms):
        out[m] = first + i
    return out


def key_of(keys: list[str], n_masks: int | None = None, width: int | None = None) -> str:
    """The first key whose image has ``n_masks`` masks / is ``width`` wide."""
    for k in keys:
        shape = masks(k)[0].shape
        if (n_masks is None or len(masks(k)) == n_masks) and (width is None or shape[1] == width):
            return k
    raise LookupError


def copy_images(keys: list[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in keys:
        shutil.copyfile(image_path(k), folder / f"{k}.png")


def run(args: list[str], capsys) -> tuple[int, str]:
    """``apis ARGS`` → (exit code, stdout), printed without rich's wrapping at 140 columns (so that a message
    is one line here, as on a wide terminal)."""
    width = console.width
    console.width = 100_000
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        console.width = width
    return code, capsys.readouterr().out


def imported(out: Path, split: str = "train") -> dict[str, list[tuple[str, np.ndarray, bool]]]:
    """image stem → [(category, H×W bool mask, iscrowd)] of ``out/split``, checked by the COCO reader."""
    ds = load_coco(out / split / "annotations.json")
    names = ds.category_names
    got = {}
    for im in ds.images:
        got[Path(im.file_name).stem] = [
            (names[a.category_id], decode_segmentation(a.segmentation, im.height, im.width).astype(bool), a.iscrowd)
            for a in im.instances]
    return got


def same_masks(got: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    """The two lists hold the same masks, in any order."""
    if len(got) != len(expected):
        return False
    key = lambda m: np.packbits(m).tobytes()  # noqa: E731
    return sorted(map(key, got)) == sorted(map(key, expected))


def annotations(out: Path, split: str = "train") -> dict:
    return json.loads((out / split / "annotations.json").read_text())
