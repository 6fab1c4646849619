"""The store of boxes people draw (apis.store.boxes, box_pool): every operation committed on its own, undo, retries
that change nothing, done images, and freezing the boxes into the pool."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from apis.store import (
    DB_NAME,
    SCHEMA_VERSION,
    BoxConflict,
    BoxNotFound,
    BoxRefused,
    BoxRequest,
    NothingToUndo,
    Store,
    UndoRefused,
)

IMAGES = [(1, "images/a.png", 320, 256), (2, "images/b.png", 256, 256), (3, "images/c.png", 256, 256)]


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path) as s:
        s.add_box_images(IMAGES, [(1, "cell"), (2, "debris")], seed=0)
        yield s


def add(store: Store, op: str, image: int, box, category: int = 1, who: str = "alice"):
    return store.box_op(BoxRequest(op, who, "add", image_id=image, box=box, category_id=category))


def change(store: Store, op: str, box_id: int, box, category: int = 1, who: str = "alice"):
    return store.box_op(BoxRequest(op, who, "change", box_id=box_id, box=box, category_id=category))


def boxes(store: Store, image: int) -> list[tuple]:
    return [(b.id, b.box, b.category_id) for b in store.box_image(image).boxes]


def test_every_operation_is_committed_before_it_returns(tmp_path: Path, store: Store) -> None:
    r = add(store, "op-add-1", 1, (10.5, 20.25, 60.0, 80.0))
    assert (r.kind, r.box_id, r.replayed, r.all_done) == ("add", 1, False, False)
    change(store, "op-move-1", 1, (12.5, 20.25, 62.0, 80.0), category=2)
    add(store, "op-add-2", 2, (0.0, 0.0, 256.0, 256.0))
    store.box_op(BoxRequest("op-del-2", "alice", "delete", box_id=2))
    # A second connection (another process) sees each of them: nothing waits in this one's memory.
    with sqlite3.connect(tmp_path / DB_NAME) as other:
        rows = other.execute("SELECT id, x0, y0, x1, y1, category_id, deleted FROM boxes ORDER BY id").fetchall()
        ops = other.execute("SELECT kind FROM box_ops ORDER BY seq").fetchall()
    assert rows == [(1, 12.5, 20.25, 62.0, 80.0, 2, 0), (2, 0.0, 0.0, 256.0, 256.0, 1, 1)]
    assert [k for (k,) in ops] == ["add", "change", "add", "delete"]
    assert boxes(store, 1) == [(1, (12.5, 20.25, 62.0, 80.0), 2)] and boxes(store, 2) == []


def test_a_retried_operation_is_stored_once_and_a_reused_id_is_refused(store: Store) -> None:
    first = add(store, "op-retry-1", 1, (10, 10, 30, 30))
    again = add(store, "op-retry-1", 1, (10, 10, 30, 30))
    assert again.replayed and again.box_id == first.box_id == 1 and again.seq == first.seq
    assert len(store.box_image(1).boxes) == 1
    with pytest.raises(BoxConflict, match="used before for another request"):
        add(store, "op-retry-1", 1, (11, 10, 30, 30))
    with pytest.raises(BoxConflict, match="used before"):
        add(store, "op-retry-1", 1, (10, 10, 30, 30), who="bob")
    done = store.box_op(BoxRequest("op-done-1", "alice", "done", image_id=1))
    assert store.box_op(BoxRequest("op-done-1", "alice", "done", image_id=1)).seq == done.seq
    undone = store.undo_box("alice", "op-undo-1")
    assert store.undo_box("alice", "op-undo-1").seq == undone.seq, "an undo sent twice undoes once"
    assert not store.box_image(1).done and len(store.box_image(1).boxes) == 1


def test_boxes_are_clipped_to_the_image_and_refused_under_one_pixel(store: Store) -> None:
    r = add(store, "op-clip-01", 1, (-5.0, 250.0, 400.0, 300.0))
    assert r.image.boxes[0].box == (0.0, 250.0, 320.0, 256.0)
    for bad in [(10, 10, 10.9, 40), (10, 10, 40, 10.5), (40, 10, 10, 40), (330, 10, 400, 40), (10, -20, 40, -1),
                (float("nan"), 0, 10, 10), (0, 0, float("inf"), 10), (0, 0, 10)]:
        with pytest.raises(BoxRefused, match="at least 1 px|4 finite numbers"):
            add(store, "op-bad-box", 1, bad)
    with pytest.raises(BoxRefused, match="not one of the project's categories"):
        add(store, "op-bad-cat", 1, (0, 0, 10, 10), category=3)
    with pytest.raises(BoxNotFound):
        add(store, "op-no-image", 9, (0, 0, 10, 10))
    with pytest.raises(BoxNotFound):
        change(store, "op-no-box", 99, (0, 0, 10, 10))
    assert len(store.box_image(1).boxes) == 1, "refused operations leave nothing behind"
    assert add(store, "op-bad-box", 1, (1, 1, 2, 2)).box_id == 2, "a refused op id can be used again"


def test_undo_walks_back_through_the_annotators_own_operations(store: Store) -> None:
    add(store, "a-1-xxxxx", 1, (10, 10, 30, 30))
    change(store, "a-2-xxxxx", 1, (15, 10, 35, 30), category=2)
    add(store, "b-1-xxxxx", 2, (5, 5, 9, 9), who="bob")
    store.box_op(BoxRequest("a-3-xxxxx", "alice", "delete", box_id=1))
    assert boxes(store, 1) == []
    r = store.undo_box("alice", "u-1-xxxxx")
    assert (r.kind, r.undid, r.image.image_id) == ("undo", 4, 1)
    assert boxes(store, 1) == [(1, (15.0, 10.0, 35.0, 30.0), 2)], "the delete is undone"
    store.undo_box("alice", "u-2-xxxxx")
    assert boxes(store, 1) == [(1, (10.0, 10.0, 30.0, 30.0), 1)], "the move and category change are undone"
    store.undo_box("alice", "u-3-xxxxx")
    assert boxes(store, 1) == [], "the drawing is undone"
    with pytest.raises(NothingToUndo):
        store.undo_box("alice", "u-4-xxxxx")
    assert boxes(store, 2) == [(2, (5.0, 5.0, 9.0, 9.0), 1)], "bob's box is not alice's to undo"
    assert store.drawn_boxes() == 1


def test_undo_is_refused_when_someone_changed_the_box_since(store: Store) -> None:
    add(store, "a-1-xxxxx", 1, (10, 10, 30, 30))
    change(store, "b-1-xxxxx", 1, (12, 10, 32, 30), who="bob")
    with pytest.raises(UndoRefused, match="changed by someone else"):
        store.undo_box("alice", "u-1-xxxxx")
    assert boxes(store, 1) == [(1, (12.0, 10.0, 32.0, 30.0), 1)]


def test_done_images_and_the_frozen_pool(store: Store) -> None:
    add(store, "a-1-xxxxx", 1, (10, 10, 30, 30))
    assert not store.box_op(BoxRequest("d-1-xxxxx", "alice", "done", image_id=1)).all_done
    with pytest.raises(BoxConflict, match="marked done by alice"):
        add(store, "a-2-xxxxx", 1, (40, 10, 60, 30))
    with pytest.raises(BoxConflict, match="marked done"):
        store.box_op(BoxRequest("d-2-xxxxx", "bob", "done", image_id=1))
    r = store.box_op(BoxRequest("d-3-xxxxx", "bob", "done", image_id=2))
    assert r.image.done and r.image.boxes == (), "an image with no object is a valid done image"
    p = store.box_progress()
    assert (p.images, p.done, p.empty_done, p.boxes, p.frozen) == (3, 2, 1, 1, False)
    with pytest.raises(BoxConflict, match="1 of 3 images are not done yet"):
        store.freeze_boxes()
    pool = store.freeze_boxes(only_done=True)
    assert (pool.images, pool.left_out, pool.boxes) == ((1, 2), (3,), 1)
    assert store.freeze_boxes().images == (1, 2), "a second freeze returns the first pool"
    for op in (lambda: add(store, "a-3-xxxxx", 3, (1, 1, 5, 5)), lambda: store.undo_box("alice", "u-1-xxxxx"),
               lambda: store.box_op(BoxRequest("d-4-xxxxx", "alice", "done", image_id=3))):
        with pytest.raises(BoxConflict, match="the boxes are the pool now"):
            op()
    assert store.box_progress().frozen and store.box_pool() == pool


def test_a_pool_needs_a_done_image_with_a_box(store: Store) -> None:
    with pytest.raises(BoxConflict, match="none of the 3 images is done"):
        store.freeze_boxes(only_done=True)
    for i in (1, 2, 3):
        r = store.box_op(BoxRequest(f"done-{i}-xxxx", "alice", "done", image_id=i))
    assert r.all_done
    with pytest.raises(BoxConflict, match="no box stands on the 3 done images"):
        store.freeze_boxes()
    assert store.box_pool() is None


def test_the_boxes_survive_a_reopened_store_and_a_version_3_file_is_migrated(tmp_path: Path) -> None:
    with Store.open(tmp_path) as s:
        s.add_box_images(IMAGES, [(1, "cell")], seed=4)
        add(s, "a-1-xxxxx", 1, (10, 10, 30, 30))
        assert s.add_box_images(IMAGES, [(1, "cell")], seed=4) == 0, "the same images again add nothing"
        with pytest.raises(Exception, match="another box project"):
            s.add_box_images(IMAGES, [(1, "dog")], seed=4)
    with Store.open(tmp_path) as s:
        assert boxes(s, 1) == [(1, (10.0, 10.0, 30.0, 30.0), 1)] and s.box_project()["seed"] == 4
    old = tmp_path / "old"
    old.mkdir()
    with Store.open(old):
        pass
    conn = sqlite3.connect(old / DB_NAME)
    conn.executescript("DROP TABLE box_ops; DROP TABLE boxes; DROP TABLE box_images; "
                       "UPDATE meta SET value = '3' WHERE key = 'schema_version';")
    conn.close()
    with Store.open(old) as s:
        assert s.box_project() is None and s.drawn_boxes() == 0
        s.add_box_images(IMAGES[:1], [(1, "cell")], seed=0)
        assert add(s, "a-1-xxxxx", 1, (1, 1, 3, 3)).box_id == 1
    conn = sqlite3.connect(old / DB_NAME)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()
