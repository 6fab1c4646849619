"""A project that starts from images alone: people draw the boxes (``/boxes`` of ``apis serve``), then the boxes
become the pool and P0's point questions are posted, as ``apis init --people`` posts them for a json with boxes.

:func:`create` (``apis init PROJECT --images DIR``) writes

* ``PROJECT/data/images/``: a copy of every image of DIR, so the project does not change when DIR does and moves
  as one folder. A file a browser would not show as the loader reads it (TIFF, 16-bit, CMYK) is stored as the PNG
  the loader makes of it (EXIF orientation applied), so what people box is what the model sees.
* ``PROJECT/data/train.json``: COCO with those images (``file_name`` relative to it: ``images/NAME``), the
  categories and no annotation; ``config.yaml`` names it as ``data.train`` (and as ``data.val`` unless the given
  config names a validation json: people draw no masks, so the pool is the only set there is; mask AP needs masks).
* ``PROJECT/apis.sqlite``: the images as :mod:`apis.store.boxes` holds them, written last, so an init killed
  before it can simply run again.

:func:`finish` (``apis boxes finish``, or the server when the last image is marked done) freezes the boxes
(:meth:`apis.store.Store.freeze_boxes`), rewrites ``data/train.json`` with the pool's images (the done ones) and
one annotation per box (id = the box's id, ``bbox`` [x, y, w, h], ``area`` w·h, no segmentation), then stores the
instances and posts P0 (:meth:`apis.loop.ActiveRun.initial_points`). Every step reads the frozen boxes, so a
finish killed half-way and run again (or run by two processes at once) writes the same file and posts P0 once.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from apis.atomic import write_json_atomic
from apis.config import ConfigError, RunConfig, dump_config, load_config
from apis.data.coco import DatasetError, load_coco
from apis.data.folder import FolderImage, scan_images
from apis.data.images import load_rgb
from apis.store import DB_NAME, BoxPool, Store
from apis.store.boxes import FINISHED_PHASE

TRAIN_JSON = Path("data") / "train.json"
IMAGES = Path("data") / "images"
DEFAULT_CATEGORY = "object"


class BoxProjectError(ValueError):
    """A project that cannot be created or finished as asked; the message names what and the fix."""


@dataclass(frozen=True)
class Created:
    """What :func:`create` wrote: the train json, the config, how many images (converted to PNG among them)."""

    train_json: Path
    config: Path
    images: int
    converted: int
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    """The pool made of the boxes: the frozen :class:`BoxPool`, the train json, P0's questions waiting for people,
    and ``already``: an earlier call had finished it (nothing was done now)."""

    pool: BoxPool
    train_json: Path
    waiting: int
    already: bool


def parse_categories(text: str | None) -> list[str]:
    """``"cell,debris"`` → ``["cell", "debris"]`` (ids 1, 2, … in this order); None → ``["object"]``."""
    if text is None:
        return [DEFAULT_CATEGORY]
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise BoxProjectError(f"--categories {text!r}: a name is empty; write names separated by commas, e.g. "
                              "cell,debris")
    if len(set(names)) != len(names):
        raise BoxProjectError(f"--categories {text!r}: a name is given twice; give each category once")
    return names


def create(root: Path, folder: Path, categories: Sequence[str], cfg: RunConfig, seed: int,
           progress: Callable[[int, int], None] | None = None) -> Created:
    """Write the project (module doc) in ``root`` for the images of ``folder``; ``cfg`` is the run config to keep
    (its ``data.train`` must be empty); ``seed`` draws P0 once the boxes are the pool."""
    root = Path(root)
    if (root / DB_NAME).exists():
        raise BoxProjectError(f"{root} is a project already ({DB_NAME}); open its box page with `apis serve {root}`, "
                              "or choose a new folder")
    if cfg.data.train:
        raise BoxProjectError(f"the config names data.train {cfg.data.train}, but with --images the project writes its "
                              "own train json; leave data.train out of the config")
    cats = [(i, name) for i, name in enumerate(categories, 1)]
    train_json = (root / TRAIN_JSON).resolve()
    val = str(Path(cfg.data.val).resolve()) if cfg.data.val else str(train_json)  # absolute, as run_splits keeps
    if cfg.data.val:
        _check_val(Path(val), cats)
    images = scan_images(folder, progress)
    (root / IMAGES).mkdir(parents=True, exist_ok=True)
    for im in images:
        _store_image(im, root / IMAGES / im.stored_name)
    rows = [(k, f"images/{im.stored_name}", im.width, im.height) for k, im in enumerate(images, 1)]
    write_json_atomic(_coco(rows, cats, [], {"apis_source_folder": str(Path(folder).resolve())}), train_json)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=str(train_json), val=val))
    dump_config(cfg, root / "config.yaml")
    with Store.open(root / DB_NAME) as store:
        store.add_box_images(rows, cats, seed)
    return Created(train_json, root / "config.yaml", len(images), sum(im.convert for im in images),
                   tuple(categories))


def finish(root: Path, only_done: bool = False, report: Callable[[str], None] = print) -> Finished:
    """Make the drawn boxes the pool and post P0 for people (module doc); refused (:class:`BoxProjectError`) for a
    project that was given its boxes, and while images are not done unless ``only_done``."""
    from apis.loop import ActiveRun, WaitingForPeople
    from apis.splits import run_splits
    from apis.store import StoreError

    root = Path(root)
    if not (root / DB_NAME).exists():
        raise BoxProjectError(f"{root}: no {DB_NAME} here; create the project with `apis init {root} --images DIR`")
    try:
        cfg = load_config(root / "config.yaml")
    except ConfigError as err:
        raise BoxProjectError(str(err)) from None
    train_json = Path(cfg.data.train)
    with Store.open(root / DB_NAME) as store:
        meta = store.box_project()
        if meta is None:
            raise BoxProjectError(f"{root} was not started from images (`apis init --images`): its boxes come from "
                                  f"{train_json}; there is nothing to finish")
        done = store.boxes_finished()
        if done is not None:
            return Finished(store.box_pool(), train_json, int(done["waiting"]), True)
        try:
            pool = store.freeze_boxes(only_done)
        except StoreError as err:
            raise BoxProjectError(f"{root}: {str(err).replace('PROJECT', str(root))}") from None
        images = store.box_images(done=True)
    left_out = [] if not pool.left_out else [im.file_name for im in _images(root, pool.left_out)]
    rows = [(im.image_id, im.file_name, im.width, im.height) for im in images if im.image_id in pool.images]
    boxes = [b for im in images if im.image_id in pool.images for b in im.boxes]
    cats = [(int(i), str(n)) for i, n in meta["categories"]]
    write_json_atomic(_coco(rows, cats, boxes, {"apis_boxes": {"left_out": left_out}}), train_json)
    try:
        cfg, train_set, val_set = run_splits(cfg, root)
    except (ConfigError, DatasetError) as err:
        raise BoxProjectError(str(err)) from None
    run = ActiveRun(root, cfg, train_set, val_set, "random", int(meta["seed"]), None, None, report=report,
                    people=True)
    waiting = 0
    with Store.open(root / DB_NAME) as store:
        try:
            run.initial_points(store)
        except WaitingForPeople as err:
            waiting = err.open_questions
        except ValueError as err:  # e.g. loop.initial_points 2: people are asked one P0 point per object
            raise BoxProjectError(f"{root / 'config.yaml'}: {err}") from None
        store.mark_phase(FINISHED_PHASE, {"images": len(pool.images), "left_out": len(pool.left_out),
                                          "boxes": pool.boxes, "waiting": waiting})
    return Finished(pool, train_json, waiting, False)


def _coco(rows: Sequence[tuple[int, str, int, int]], cats: Sequence[tuple[int, str]], boxes, info: dict) -> dict:
    """COCO json: ``rows`` (id, file_name, width, height) and one box-only annotation per drawn box."""
    anns = []
    for b in boxes:
        x0, y0, x1, y1 = b.box
        anns.append({"id": b.id, "image_id": b.image_id, "category_id": b.category_id,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                     "apis_annotator": b.annotator})
    return {"info": {"description": "images for apis; boxes drawn by people on apis's box page", **info},
            "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in rows],
            "annotations": anns, "categories": [{"id": i, "name": n} for i, n in cats]}


def _store_image(im: FolderImage, dest: Path) -> None:
    """Copy (or convert, :attr:`FolderImage.convert`) ``im`` to ``dest`` through a temporary file, so a killed init
    never leaves half an image under the final name."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if im.convert:
            Image.fromarray(load_rgb(im.path)).save(tmp, format="PNG")
        else:
            shutil.copyfile(im.path, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_val(val: Path, cats: Sequence[tuple[int, str]]) -> None:
    try:
        ds = load_coco(val, check_images=False)
    except DatasetError as err:
        raise BoxProjectError(f"data.val of the config: {err}") from None
    theirs = [(c.id, c.name) for c in ds.categories]
    if theirs != list(cats):
        raise BoxProjectError(f"{val} has the categories {theirs}, the boxes would have {list(cats)}; give "
                              f"--categories {','.join(n for _, n in theirs)} (in this order), or leave data.val out "
                              "of the config")


def _images(root: Path, ids: Sequence[int]):
    with Store.open(root / DB_NAME) as store:
        return [store.box_image(i) for i in ids]
