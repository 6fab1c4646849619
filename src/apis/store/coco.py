"""COCO exchange: stored answers written into a COCO file, and answers read from one.

The format is detectron2 PointSup's: each annotation carries ``point_coords`` ``[[x, y], ...]`` (integer
pixels, x = column, y = row of the original image) and ``point_labels`` ``[0/1, ...]``; the annotation
id is the instance id. Reading only turns a file into :class:`~apis.store.points.PointAnswer` objects;
storing them is :meth:`apis.store.Store.add_points`, with its checks and its one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from apis.atomic import write_json_atomic
from apis.store.errors import MAX_LISTED, StoreError
from apis.store.points import PointAnswer, read_instances, read_points


def export_points(conn: sqlite3.Connection, dataset_json: Path, out: Path, max_step: int | None) -> int:
    """Write ``dataset_json`` to ``out`` with the stored answers (see :meth:`apis.store.Store.export_coco`)."""
    coco = _read_json(dataset_json)
    stored = {inst.id: inst for inst in read_instances(conn)}
    points = read_points(conn, max_step)
    written = 0
    found: set[int] = set()
    for ann in coco.get("annotations", []):
        inst = stored.get(ann.get("id"))
        if inst is None:
            continue
        if ann.get("image_id") != inst.image_id:
            raise StoreError(
                f"{dataset_json}: annotation {inst.id} is on image {ann.get('image_id')} but the store "
                f"has it on image {inst.image_id}; export to the COCO file the instances were added from"
            )
        found.add(inst.id)
        mine = points.get(inst.id, [])
        ann["point_coords"] = [[p.x, p.y] for p in mine]
        ann["point_labels"] = [p.label for p in mine]
        written += len(mine)
    missing = sorted(set(points) - found)
    if missing:
        raise StoreError(
            f"{dataset_json} lacks annotations {missing[:MAX_LISTED]} that have stored points; "
            "export to the COCO file the instances were added from"
        )
    write_json_atomic(coco, out)
    return written


def read_answers(path: Path, step: int, strategy: str, annotator: str) -> list[PointAnswer]:
    """The ``point_coords``/``point_labels`` of the COCO file at ``path`` as answers of ``step``, unchecked.

    Raises :class:`StoreError` naming the file and the annotation id for a file that is not COCO json or a
    point that is not an ``[x, y]`` pair of whole numbers; whether the answers may be stored is
    :meth:`apis.store.Store.add_points`'s to decide.
    """
    coco = _read_json(path)
    answers: list[PointAnswer] = []
    for ann in coco.get("annotations", []):
        if "point_coords" in ann or "point_labels" in ann:
            answers.extend(_answers_from_annotation(path, ann, step, strategy, annotator))
    return answers


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: cannot read COCO json ({err})") from err
    if not isinstance(data, dict):
        raise StoreError(f"{path}: a COCO file holds a json object at top level")
    return data


def _integral(value: Any) -> int | None:
    """A json number that is a whole number, as int; None otherwise (e.g. 12.5 or "3")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if float(value).is_integer() else None


def _answers_from_annotation(
    path: Path, ann: dict, step: int, strategy: str, annotator: str
) -> list[PointAnswer]:
    aid = ann.get("id")
    coords, labels = ann.get("point_coords"), ann.get("point_labels")
    if not isinstance(coords, list) or not isinstance(labels, list) or len(coords) != len(labels):
        raise StoreError(
            f"{path}: annotation {aid}: point_coords and point_labels must be lists of the same length; "
            "write one [x, y] per label"
        )
    answers = []
    for xy, label in zip(coords, labels, strict=True):
        x, y = (_integral(v) for v in xy) if isinstance(xy, list) and len(xy) == 2 else (None, None)
        if x is None or y is None:
            raise StoreError(
                f"{path}: annotation {aid}: point {xy!r} is not an [x, y] pair of integer pixels "
                "(x = column, y = row of the original image)"
            )
        lab = _integral(label)
        answers.append(PointAnswer(aid, x, y, label if lab is None else lab, step, strategy, annotator))
    return answers
