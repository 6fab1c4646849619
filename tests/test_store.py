"""The SQLite store: refusals write nothing, COCO round trips keep pixels, a killed writer loses no commit."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import apis
from apis.data.records import Category, CocoDataset, ImageRecord, Instance, encode_mask
from apis.geometry import xywh_to_xyxy
from apis.oracle import MaskOracle, Query, ask, initial_answers
from apis.store import DB_NAME, SCHEMA_VERSION, PointAnswer, Store, StoreError

W, H = 9, 6  # non-square, so x/y swaps show


def _masks() -> dict[int, np.ndarray]:
    a = np.zeros((H, W), dtype=np.uint8)
    a[1:4, 2:7] = 1
    a[1, 2] = 0  # asymmetric corners
    b = np.zeros((H, W), dtype=np.uint8)
    b[3:6, 0:3] = 1
    return {1: a, 2: b}


def _coco() -> dict:
    """A tiny COCO dict: image 1 with instances 1 and 2 and a crowd region 3; image 2 with instance 4."""
    masks = _masks()
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.0, 1.0, 5.0, 3.0], "area": 14.0, "iscrowd": 0,
         "segmentation": encode_mask(masks[1])},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0.0, 3.0, 3.0, 3.0], "area": 9.0, "iscrowd": 0,
         "segmentation": encode_mask(masks[2])},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 9.0, 6.0], "area": 54.0, "iscrowd": 1,
         "segmentation": encode_mask(np.ones((H, W), dtype=np.uint8))},
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [1.3, 0.7, 3.3, 2.5], "area": 6.0, "iscrowd": 0,
         "segmentation": [[1.3, 0.7, 4.6, 0.7, 4.6, 3.2, 1.3, 3.2]]},
    ]
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                   {"id": 2, "file_name": "b.png", "width": W, "height": H}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _records(coco: dict, json_path: Path) -> CocoDataset:
    """CocoDataset built by hand from a COCO dict (independent of the COCO reader)."""
    images = []
    for im in coco["images"]:
        insts = tuple(
            Instance(a["id"], a["image_id"], a["category_id"], xywh_to_xyxy(a["bbox"]), a["area"],
                     bool(a["iscrowd"]), a.get("segmentation"))
            for a in coco["annotations"] if a["image_id"] == im["id"]
        )
        images.append(ImageRecord(im["id"], im["file_name"], im["width"], im["height"], insts))
    cats = [Category(c["id"], c["name"]) for c in coco["categories"]]
    return CocoDataset(json_path, json_path.parent, images, cats)


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_coco()))
    return path


@pytest.fixture
def dataset(coco_file: Path) -> CocoDataset:
    return _records(_coco(), coco_file)


@pytest.fixture
def store(tmp_path: Path, dataset: CocoDataset) -> Iterator[Store]:
    with Store.open(tmp_path / "store.sqlite") as s:
        s.add_instances(dataset, "train")
        yield s


def _pixels(store: Store) -> set[tuple[int, int, int, int, int]]:
    return {(iid, p.x, p.y, p.label, p.step) for iid, pts in store.points().items() for p in pts}


# ---------------------------------------------------------------------- opening and instances


def test_open_creates_wal_database_in_project_directory(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    with Store.open(tmp_path / "proj") as s:
        assert s.path == tmp_path / "proj" / DB_NAME
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn = sqlite3.connect(tmp_path / "proj" / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"schema version 99, this apis reads version {SCHEMA_VERSION}"):
        Store.open(tmp_path / "proj")


def test_add_instances_stores_pool_only_and_is_idempotent(tmp_path: Path, dataset: CocoDataset) -> None:
    with Store.open(tmp_path / "s.sqlite") as s:
        assert s.add_instances(dataset, "train") == 3
        assert s.add_instances(dataset, "train") == 0
        stored = s.instances()
        assert [i.id for i in stored] == [1, 2, 4]  # crowd region 3 left out
        assert stored[0].box == (2.0, 1.0, 7.0, 4.0) and (stored[0].width, stored[0].height) == (W, H)
        assert s.instances("val") == [] and len(s.instances("train")) == 3


def test_add_instances_refuses_conflicting_record_and_writes_nothing(tmp_path: Path, coco_file: Path) -> None:
    coco = _coco()
    with Store.open(tmp_path / "s.sqlite") as s:
        s.add_instances(_records(coco, coco_file), "train")
        coco["annotations"][1]["bbox"] = [0.0, 3.0, 3.0, 2.0]  # instance 2, another box
        coco["annotations"].append({**coco["annotations"][0], "id": 5})  # a new instance in the same call
        conflict = r"instance 2 is already stored as .*box xyxy \(0.0, 3.0, 3.0, 6.0\)"
        with pytest.raises(StoreError, match=conflict):
            s.add_instances(_records(coco, coco_file), "train")
        assert [i.id for i in s.instances()] == [1, 2, 4]
        with pytest.raises(StoreError, match="instance 1 is already stored .*split 'train'.*split 'val'"):
            s.add_instances(_records(_coco(), coco_file), "val")


# ---------------------------------------------------------------------- refusals


def _good(step: int = 0) -> PointAnswer:
    return PointAnswer(1, 3, 2, 1, step, "random")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        # Instance 1's box is x in [2, 7), y in [1, 4): column 7 is outside.
        (PointAnswer(1, 7, 2, 1, 0, "random"), r"instance 1 pixel \(x=7, y=2\): outside the instance's Ω "
                                               r"\(columns 2\.\.6, rows 1\.\.3.*ask only about pixels in Ω"),
        # (x=2, y=5) is inside only if x and y were swapped.
        (PointAnswer(1, 2, 5, 1, 0, "random"), r"instance 1 pixel \(x=2, y=5\): outside the instance's Ω"),
        (PointAnswer(1, 4, 2, 2, 0, "random"), r"instance 1 pixel \(x=4, y=2\): label 2 is not 0 or 1; "
                                               r"answer 1 for on"),
        (PointAnswer(77, 4, 2, 1, 0, "random"), r"instance 77 pixel \(x=4, y=2\): unknown instance; add its "
                                                r"dataset with Store.add_instances"),
        (PointAnswer(1, 4, 2, 1, -1, "random"), r"instance 1 pixel \(x=4, y=2\): step -1 is negative"),
        (PointAnswer(1, 4.0, 2, 1, 0, "random"), r"instance 1 pixel \(x=4.0, y=2\): .*must be integers"),
        (PointAnswer(3, 4, 2, 1, 0, "random"), r"instance 3 pixel \(x=4, y=2\): unknown instance"),  # crowd
    ],
)
def test_refused_answer_refuses_whole_batch(store: Store, bad: PointAnswer, message: str) -> None:
    store.add_points([PointAnswer(2, 1, 4, 1, 0, "random")])
    prefix = "refused the whole batch of 2 answers, nothing was written: "
    with pytest.raises(StoreError, match=prefix + message):
        store.add_points([_good(), bad])
    assert _pixels(store) == {(2, 1, 4, 1, 0)}


def test_refuses_pixel_already_answered_in_the_store(store: Store) -> None:
    store.add_points([_good(step=0)])
    again = replace(_good(step=1), label=0)
    with pytest.raises(StoreError, match=r"instance 1 pixel \(x=3, y=2\): already answered at step 0; ask"):
        store.add_points([PointAnswer(2, 0, 5, 1, 1, "entropy"), again])
    assert _pixels(store) == {(1, 3, 2, 1, 0)}


def test_refuses_pixel_answered_twice_in_one_batch(store: Store) -> None:
    with pytest.raises(StoreError, match=r"instance 1 pixel \(x=3, y=2\): answered twice in this batch"):
        store.add_points([_good(), PointAnswer(2, 0, 5, 1, 0, "random"), replace(_good(), label=0)])
    assert store.point_count() == 0 and store.steps() == []


def test_refusal_lists_several_problems(store: Store) -> None:
    batch = [PointAnswer(1, 100 + i, 2, 1, 0, "random") for i in range(12)]
    with pytest.raises(StoreError, match=r"x=100.*x=109, y=2.*; and 2 more$"):
        store.add_points(batch)


def test_points_are_grouped_and_ordered_by_step_then_insertion(store: Store) -> None:
    step1 = [PointAnswer(1, 5, 3, 0, 1, "entropy"), PointAnswer(2, 0, 5, 1, 1, "entropy")]
    assert store.add_points(step1) == 2
    assert store.add_points([PointAnswer(1, 3, 2, 1, 0, "random", answered_at=12.5),
                             PointAnswer(1, 2, 1, 0, 0, "random")]) == 2
    pts = store.points()
    assert [(p.x, p.y, p.step) for p in pts[1]] == [(3, 2, 0), (2, 1, 0), (5, 3, 1)]
    assert pts[1][0].answered_at == 12.5 and pts[1][0].annotator == "oracle"
    assert [(p.x, p.y) for p in store.points(max_step=0)[1]] == [(3, 2), (2, 1)]
    assert 2 not in store.points(max_step=0)
    assert store.point_count() == 4 and store.point_count(max_step=0) == 2
    assert store.steps() == [0, 1]


def test_numpy_integers_are_accepted(store: Store) -> None:
    store.add_points([PointAnswer(np.int64(1), np.int64(3), np.int32(2), np.uint8(1), np.int64(0), "random")])
    (p,) = store.points()[1]
    assert (p.instance_id, p.x, p.y, p.label) == (1, 3, 2, 1) and type(p.x) is int


# ---------------------------------------------------------------------- phases


def test_phases_round_trip_and_survive_reopen(tmp_path: Path, dataset: CocoDataset) -> None:
    path = tmp_path / "s.sqlite"
    with Store.open(path) as s:
        assert s.phase("p0") is None
        s.mark_phase("p0", {"points": 3, "seed": 0})
        s.mark_phase("train_0", {"checkpoint": "ckpt/m0.pt"})
        with pytest.raises(StoreError, match="phase 'bad': payload is not plain json"):
            s.mark_phase("bad", {"path": Path("x")})
        with pytest.raises(StoreError, match="phase 'nan': payload is not plain json"):
            s.mark_phase("nan", {"ap": float("nan")})
    with Store.open(path) as s:
        assert s.phase("p0") == {"points": 3, "seed": 0}
        assert s.phase("bad") is None and s.phase("nan") is None
        assert s.phase_names() == ["p0", "train_0"]


def test_phase_marked_with_points_in_one_transaction(store: Store) -> None:
    with pytest.raises(StoreError):
        store.add_points([_good(), replace(_good(), x=99)], phase="answer_0", phase_payload={"n": 2})
    assert store.phase("answer_0") is None and store.point_count() == 0
    store.add_points([_good()], phase="answer_0", phase_payload={"n": 1})
    assert store.phase("answer_0") == {"n": 1} and store.point_count() == 1


# ---------------------------------------------------------------------- COCO exchange


def test_export_import_round_trip_keeps_pixels_labels_and_mask_reading(
    tmp_path: Path, store: Store, dataset: CocoDataset, coco_file: Path
) -> None:
    oracle = MaskOracle(dataset)
    store.add_points(initial_answers(dataset, oracle, seed=0, k=3))
    asked = {(iid, p.x, p.y) for iid, pts in store.points().items() for p in pts}
    candidates = [Query(1, 1, 6, 3), Query(1, 1, 2, 1), Query(2, 1, 0, 5)]
    extra = [q for q in candidates if (q.instance_id, q.x, q.y) not in asked]
    store.add_points(ask(oracle, extra, step=1, strategy="entropy"))
    before = _pixels(store)

    out = tmp_path / "exported" / "points.json"
    assert store.export_coco(coco_file, out) == len(before)
    assert [p.name for p in out.parent.iterdir()] == ["points.json"]  # no temporary file left behind
    written = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
    assert "point_coords" not in written[3]  # the crowd region is not ours to annotate
    assert written[1]["bbox"] == _coco()["annotations"][0]["bbox"]  # the rest of the file is unchanged
    masks = _masks()
    for aid in (1, 2):
        coords, labels = written[aid]["point_coords"], written[aid]["point_labels"]
        assert len(coords) == len(labels) == len(store.points()[aid])
        # x = column, y = row: the label is the mask at [y, x].
        assert labels == [int(masks[aid][y, x]) for x, y in coords]

    with Store.open(tmp_path / "other.sqlite") as fresh:
        fresh.add_instances(dataset, "train")
        assert fresh.import_coco(out, step=0) == len(before)
        after = _pixels(fresh)
        assert {(i, x, y, lab) for i, x, y, lab, _ in after} == {(i, x, y, lab) for i, x, y, lab, _ in before}
        for iid, pts in fresh.points().items():
            assert all(p.strategy == "imported" and p.annotator == "import" for p in pts)
            answers = oracle.answer([Query(iid, 1 if iid < 4 else 2, p.x, p.y) for p in pts])
            assert answers == [p.label for p in pts]


def test_export_up_to_a_step(tmp_path: Path, store: Store, coco_file: Path) -> None:
    store.add_points([_good(0)])
    store.add_points([PointAnswer(1, 4, 2, 1, 1, "entropy")])
    out = tmp_path / "p0.json"
    assert store.export_coco(coco_file, out, max_step=0) == 1
    anns = {a["id"]: a for a in json.loads(out.read_text())["annotations"]}
    assert anns[1]["point_coords"] == [[3, 2]] and anns[1]["point_labels"] == [1]
    assert anns[2]["point_coords"] == [] and anns[4]["point_labels"] == []


def test_export_refuses_a_file_that_does_not_hold_the_instances(tmp_path: Path, store: Store) -> None:
    store.add_points([_good()])
    coco = _coco()
    coco["annotations"][0]["image_id"] = 2
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(coco))
    with pytest.raises(StoreError, match=r"wrong.json: annotation 1 is on image 2 but the store has it on"):
        store.export_coco(wrong, tmp_path / "out.json")
    coco["annotations"] = coco["annotations"][1:]
    wrong.write_text(json.dumps(coco))
    with pytest.raises(StoreError, match=r"wrong.json lacks annotations \[1\] that have stored points"):
        store.export_coco(wrong, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def _with_points(tmp_path: Path, points: dict[int, tuple[list, list]]) -> Path:
    coco = _coco()
    for ann in coco["annotations"]:
        if ann["id"] in points:
            ann["point_coords"], ann["point_labels"] = points[ann["id"]]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ({1: ([[3, 2]], [1]), 2: ([[1.5, 4]], [1])},
         r"in.json: annotation 2: point \[1.5, 4\] is not an \[x, y\] pair of integer pixels"),
        ({1: ([[3, 2], [4, 2]], [1])}, r"in.json: annotation 1: point_coords and point_labels must be lists"),
        ({1: ([[3, 2]], [1]), 2: ([[5, 4]], [0])},
         r"in.json: refused the whole batch of 2 answers.*instance 2 pixel \(x=5, y=4\): outside"),
        ({1: ([[3, 2], [3, 2]], [1, 1])}, r"in.json: .*instance 1 pixel \(x=3, y=2\): answered twice"),
        ({1: ([[3, 2]], [3])}, r"in.json: .*\(x=3, y=2\): label 3 is not 0 or 1.*file.s annotation ids"),
    ],
)
def test_import_refuses_bad_files_and_writes_nothing(
    tmp_path: Path, store: Store, points: dict, message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        store.import_coco(_with_points(tmp_path, points), step=0)
    assert store.point_count() == 0


def test_import_accepts_whole_number_floats(tmp_path: Path, store: Store) -> None:
    assert store.import_coco(_with_points(tmp_path, {1: ([[3.0, 2.0]], [1.0])}), step=2, strategy="d2") == 1
    (p,) = store.points()[1]
    assert (p.x, p.y, p.label, p.step, p.strategy) == (3, 2, 1, 2, "d2")


# ---------------------------------------------------------------------- durability

_WRITER = r"""
import sys, time
from apis.store import PointAnswer, Store

store = Store.open(sys.argv[1])
(inst,) = store.instances()
w = inst.omega
pixels = [(x, y) for y in range(w.y0, w.y1) for x in range(w.x0, w.x1)]
store.add_points([PointAnswer(inst.id, x, y, 1, 0, "random") for x, y in pixels[:10]])
store.add_points([PointAnswer(inst.id, x, y, 0, 1, "entropy") for x, y in pixels[10:30]],
                 phase="answer_1", phase_payload={"n": 20})
print("committed", flush=True)
big = [PointAnswer(inst.id, x, y, 1, 2, "entropy") for x, y in pixels[30:]]
inserted = 0

def pause_near_the_end(statement):
    # Called by SQLite before each row's INSERT: stop when nearly the whole batch is written, uncommitted.
    global inserted
    if statement.startswith("INSERT INTO points"):
        inserted += 1
        if inserted == len(big) - 5:
            print("inside", flush=True)
            time.sleep(120)

store._conn.set_trace_callback(pause_near_the_end)
store.add_points(big, phase="answer_2", phase_payload={"n": len(big)})
print("finished", flush=True)
"""


def test_killed_writer_leaves_exactly_the_committed_batches(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    big_box = Instance(1, 1, 1, (0.0, 0.0, 400.0, 300.0), 1.2e5)
    with Store.open(db) as s:
        image = ImageRecord(1, "a.png", 400, 300, (big_box,))
        s.add_instances(CocoDataset(db, tmp_path, [image], []), "train")
    src = Path(apis.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    watchdog = threading.Timer(120, child.kill)  # never hang the suite if the child misbehaves
    watchdog.start()
    try:
        assert child.stdout.readline().strip() == "committed", child.stderr.read()
        wal = Path(f"{db}-wal")
        committed_wal = wal.stat().st_size
        assert child.stdout.readline().strip() == "inside", child.stderr.read()
        # Uncommitted pages of the big batch have spilled into the WAL: the kill hits a half-written file.
        assert wal.stat().st_size > committed_wal
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        watchdog.cancel()
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()

    with Store.open(db) as s:
        pts = s.points()[1]
        assert [(p.step, p.label) for p in pts] == [(0, 1)] * 10 + [(1, 0)] * 20
        assert s.steps() == [0, 1] and s.point_count() == 30
        assert s.phase("answer_1") == {"n": 20} and s.phase("answer_2") is None
        # The store is usable again and the lost batch can be written afresh.
        redo = [PointAnswer(1, 399, 299, 1, 2, "entropy")]
        assert s.add_points(redo, phase="answer_2", phase_payload={"n": 1}) == 1
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_random_answers_keep_only_points_drawn_at_random(store: Store) -> None:
    """Only answers of strategy "random" (P0's, a Random arm's) may judge a mask source over its boxes; an
    instance asked only elsewhere is left out, and ``max_step`` cuts as for every read."""
    store.add_points([PointAnswer(1, 3, 2, 1, 0, "random"), PointAnswer(2, 1, 4, 0, 0, "random")])
    store.add_points([PointAnswer(1, 4, 2, 0, 1, "entropy"), PointAnswer(4, 2, 1, 1, 1, "entropy")])
    store.add_points([PointAnswer(1, 5, 3, 1, 2, "random"), PointAnswer(2, 2, 5, 1, 2, "entropy")])
    assert store.random_answers() == {1: [(3, 2, 1), (5, 3, 1)], 2: [(1, 4, 0)]}
    assert store.random_answers(max_step=1) == {1: [(3, 2, 1)], 2: [(1, 4, 0)]}
    assert sum(len(v) for v in store.points().values()) == 6  # nothing is dropped from the store
