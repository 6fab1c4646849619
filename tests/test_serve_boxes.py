"""The box page's API (apis.serve.boxes) through FastAPI's TestClient, and the real server killed with SIGKILL while
people draw: every acknowledged box is there after a restart, and nothing sent again is stored twice."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import httpx
import pytest
from boxes_project import box_project
from fastapi.testclient import TestClient
from serve_project import ALICE, BOB, TOKENS, Clock, Server

from apis.serve.app import create_app
from apis.serve.auth import Annotators
from apis.serve.project import Project
from apis.store import DB_NAME, Store


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return box_project(tmp_path, n=3, categories=("cell", "debris"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(project: Path, clock: Clock) -> TestClient:
    return TestClient(create_app(Project.load(project), Annotators(TOKENS), lease_s=120, clock=clock))


def op(client: TestClient, kind: str, who: dict, op_id: str, **body):
    return client.post(f"/api/boxes/{kind}", json={"op_id": op_id, **body}, headers=who)


def test_every_box_route_needs_the_token_and_the_root_opens_the_box_page(client: TestClient) -> None:
    routes = [("get", "/api/boxes/next", None), ("get", "/api/boxes/progress", None),
              ("get", "/api/boxes/images/1", None),
              ("post", "/api/boxes/add", {"op_id": "op-000001", "image_id": 1, "box": [1, 1, 9, 9], "category_id": 1}),
              ("post", "/api/boxes/change", {"op_id": "op-000002", "box_id": 1, "box": [1, 1, 9, 9], "category_id": 1}),
              ("post", "/api/boxes/delete", {"op_id": "op-000003", "box_id": 1}),
              ("post", "/api/boxes/done", {"op_id": "op-000004", "image_id": 1}),
              ("post", "/api/boxes/undo", {"op_id": "op-000005"}), ("post", "/api/boxes/release", {"image_ids": [1]})]
    for method, path, body in routes:
        kwargs = {} if body is None else {"json": body}
        assert getattr(client, method)(path, **kwargs).status_code == 401, path
        wrong = {"Authorization": "Bearer not-the-token-0000"}
        assert getattr(client, method)(path, headers=wrong, **kwargs).status_code == 401, path
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/boxes", "waiting for boxes: / opens the box page"
    page = client.get("/boxes")
    assert page.status_code == 200 and "Enter" in page.text and "an image with no object is a valid done" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/static/boxes.js").status_code == 200
    r = client.get("/login?token=tok-bob-0123456789ab&page=boxes", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/boxes"


def test_bad_boxes_and_bodies_are_422_and_unknown_ids_404(client: TestClient, project: Path) -> None:
    client.get("/api/boxes/next?n=1", headers=ALICE)
    good = {"image_id": 1, "box": [10, 10, 40, 40], "category_id": 1}
    for bad in ({"box": [10, 10, 10.5, 40]}, {"box": [40, 10, 10, 40]}, {"box": [400, 10, 500, 40]},
                {"box": [10, 10, 40]}, {"box": [10, 10, 40, "x"]}, {"category_id": 9}, {"category_id": "1"},
                {"extra": 1}, {"image_id": -1}):
        r = op(client, "add", ALICE, "op-bad-0001", **{**good, **bad})
        assert r.status_code == 422, (bad, r.text)
    r = client.post("/api/boxes/add", content=json.dumps({"op_id": "op-nan-0001", **good, "box": [math.nan, 1, 5, 5]}),
                    headers={**ALICE, "Content-Type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["detail"]
    assert op(client, "add", ALICE, "short", **good).status_code == 422
    assert op(client, "add", ALICE, "op id with spaces", **good).status_code == 422
    assert op(client, "add", ALICE, "op-no-image", **{**good, "image_id": 99}).status_code == 404
    assert op(client, "change", ALICE, "op-no-box-1", box_id=99, box=[1, 1, 5, 5], category_id=1).status_code == 404
    assert op(client, "delete", ALICE, "op-no-box-2", box_id=99).status_code == 404
    assert op(client, "done", ALICE, "op-no-image-2", image_id=99).status_code == 404
    assert client.get("/api/boxes/images/99", headers=ALICE).status_code == 404
    r = op(client, "add", ALICE, "op-clipped-1", **{**good, "box": [-10, -10, 40, 40]})
    assert r.status_code == 200 and r.json()["image"]["boxes"][0]["box"] == [0, 0, 40, 40]
    with Store.open(project / DB_NAME) as store:
        assert store.drawn_boxes() == 1, "no refused request left a box behind"


def test_images_are_leased_to_one_annotator_at_a_time(client: TestClient, clock: Clock) -> None:
    mine = [im["image_id"] for im in client.get("/api/boxes/next?n=2", headers=ALICE).json()["images"]]
    assert mine == [1, 2]
    theirs = client.get("/api/boxes/next?n=2", headers=BOB).json()
    assert [im["image_id"] for im in theirs["images"]] == [3]
    assert theirs["categories"] == [{"id": 1, "name": "cell"}, {"id": 2, "name": "debris"}]
    r = op(client, "add", BOB, "op-bob-0001", image_id=1, box=[1, 1, 9, 9], category_id=1)
    assert r.status_code == 409 and "being boxed by alice" in r.json()["detail"]
    assert op(client, "add", ALICE, "op-alice-01", image_id=1, box=[1, 1, 9, 9], category_id=1).status_code == 200
    clock.now += 121  # every lease lapses; a write takes the image's lease, as /next does
    assert op(client, "add", BOB, "op-bob-0002", image_id=2, box=[1, 1, 9, 9], category_id=2).status_code == 200
    assert [im["image_id"] for im in client.get("/api/boxes/next?n=3", headers=ALICE).json()["images"]] == [1, 3]
    assert client.post("/api/boxes/release", json={"image_ids": [1]}, headers=ALICE).json() == {"released": 1}
    assert 1 in [im["image_id"] for im in client.get("/api/boxes/next?n=3", headers=BOB).json()["images"]]


def test_operations_retried_undone_and_the_last_done_image_makes_the_pool(client: TestClient, project: Path) -> None:
    client.get("/api/boxes/next?n=3", headers=ALICE)
    first = op(client, "add", ALICE, "op-add-00001", image_id=1, box=[10, 10, 40, 40], category_id=1).json()
    again = op(client, "add", ALICE, "op-add-00001", image_id=1, box=[10, 10, 40, 40], category_id=1).json()
    assert again["op"]["replayed"] and again["op"]["box_id"] == first["op"]["box_id"] == 1
    assert len(again["image"]["boxes"]) == 1
    r = op(client, "add", ALICE, "op-add-00001", image_id=1, box=[11, 10, 40, 40], category_id=1)
    assert r.status_code == 409 and "used before" in r.json()["detail"]
    op(client, "change", ALICE, "op-move-0001", box_id=1, box=[20, 10, 50, 40], category_id=2)
    op(client, "add", ALICE, "op-add-00002", image_id=1, box=[60, 60, 90, 90], category_id=1)
    op(client, "delete", ALICE, "op-del-00002", box_id=2)
    undone = op(client, "undo", ALICE, "op-undo-0001").json()
    assert undone["op"]["kind"] == "undo" and [b["id"] for b in undone["image"]["boxes"]] == [1, 2]
    op(client, "undo", ALICE, "op-undo-0002")
    image = client.get("/api/boxes/images/1", headers=ALICE).json()
    assert [(b["id"], b["box"], b["category_id"]) for b in image["boxes"]] == [(1, [20, 10, 50, 40], 2)]
    assert op(client, "undo", BOB, "op-undo-bob1").status_code == 404, "bob has nothing to undo"
    progress = client.get("/api/boxes/progress", headers=ALICE).json()
    assert (progress["images"], progress["done"], progress["boxes"], progress["box_hours"]) == (3, 0, 1, 0.0019)
    assert op(client, "done", ALICE, "op-done-0001", image_id=1).json().get("finished") is None
    assert op(client, "done", ALICE, "op-done-0002", image_id=2).status_code == 200, "no object: a valid done image"
    assert client.get("/api/boxes/images/2", headers=ALICE).json()["done_by"] == "alice"
    last = op(client, "done", ALICE, "op-done-0003", image_id=3).json()
    assert last["finished"] == {"images": 3, "boxes": 1, "questions": 1, "lines": ["P0: 1 questions posted for people"]}
    assert client.get("/", follow_redirects=False).status_code == 200, "/ is the question page again"
    questions = client.get("/api/next?n=5", headers=BOB).json()["questions"]
    assert [(q["instance_id"], q["box"], q["category"], q["step"]) for q in questions] == [
        (1, [20, 10, 50, 40], "debris", 0)]
    r = op(client, "add", ALICE, "op-add-00003", image_id=1, box=[1, 1, 5, 5], category_id=1)
    assert r.status_code == 409 and "the boxes are the pool now" in r.json()["detail"]
    assert client.get("/api/boxes/next", headers=ALICE).json()["images"] == []
    train = json.loads((project / "data" / "train.json").read_text())
    assert [(a["id"], a["bbox"]) for a in train["annotations"]] == [(1, [20.0, 10.0, 30.0, 30.0])]


# ------------------------------------------------------------------------------------------ SIGKILL


def test_a_server_killed_with_sigkill_keeps_every_acknowledged_box(tmp_path: Path) -> None:
    project = box_project(tmp_path, n=2)
    server = Server(project, TOKENS)
    acked: dict[str, dict] = {}   # op id -> reply (acknowledged: the server answered 200)
    sent: dict[str, dict] = {}    # op id -> body, every request started
    stop = threading.Event()
    errors: list[str] = []

    # Leased one after the other, so alice holds image 1 and bob image 2 (two threads asking at once would race).
    with httpx.Client(base_url=server.url, timeout=10) as c:
        for headers, image in ((ALICE, 1), (BOB, 2)):
            held = c.get("/api/boxes/next", params={"n": 1}, headers=headers).json()["images"]
            assert [im["image_id"] for im in held] == [image]

    def annotator(headers: dict, image: int, prefix: str) -> None:
        try:
            with httpx.Client(base_url=server.url, headers=headers, timeout=10) as c:
                for k in range(10_000):
                    if stop.is_set():
                        return
                    x = (k * 7) % 200
                    body = {"op_id": f"{prefix}-{k:06d}", "image_id": image, "box": [x, 5.5, x + 20.25, 40],
                            "category_id": 1}
                    sent[body["op_id"]] = body
                    r = c.post("/api/boxes/add", json=body)
                    if r.status_code != 200:
                        errors.append(r.text)
                        return
                    acked[body["op_id"]] = r.json()
        except httpx.HTTPError:
            return  # the server was killed under this request

    threads = [threading.Thread(target=annotator, args=(ALICE, 1, "alice")),
               threading.Thread(target=annotator, args=(BOB, 2, "bob"))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL while both annotators are sending
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:3]
    assert len(acked) >= 60
    with Store.open(project / DB_NAME) as store:
        stored = {b.id: b for im in store.box_images() for b in im.boxes}
    for op_id, reply in acked.items():
        b = stored.get(reply["op"]["box_id"])
        assert b is not None, f"acknowledged {op_id} is lost"
        assert list(b.box) == sent[op_id]["box"] and b.image_id == sent[op_id]["image_id"]
    assert len(stored) <= len(sent), "every box comes from one request"
    # Restarted, the server has them all; every request sent again (the acknowledged ones and the ones the kill cut
    # off, whose fate the client never learnt) is stored once.
    server = Server(project, TOKENS)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for headers, image in ((ALICE, 1), (BOB, 2)):
                held = c.get("/api/boxes/next", params={"n": 1}, headers=headers).json()["images"]
                assert [im["image_id"] for im in held] == [image]
            replies = {}
            for op_id, body in sent.items():
                headers = ALICE if op_id.startswith("alice") else BOB
                r = c.post("/api/boxes/add", json=body, headers=headers)
                assert r.status_code == 200, r.text
                replies[op_id] = r.json()
            images = [c.get(f"/api/boxes/images/{i}", headers=ALICE).json() for i in (1, 2)]
    finally:
        server.stop()
    assert all(replies[o]["op"]["replayed"] and replies[o]["op"]["box_id"] == acked[o]["op"]["box_id"] for o in acked)
    ids = [b["id"] for im in images for b in im["boxes"]]
    assert len(ids) == len(set(ids)) == len(sent), "one box per operation sent, however often it was sent"
    with Store.open(project / DB_NAME) as store:
        assert store.drawn_boxes() == len(sent)


def test_a_project_given_its_boxes_has_nothing_to_draw(tmp_path: Path) -> None:
    from serve_project import make_project

    given = make_project(tmp_path)
    c = TestClient(create_app(Project.load(given), Annotators(TOKENS)))
    assert c.get("/", follow_redirects=False).status_code == 200, "/ stays the question page"
    r = c.get("/api/boxes/next", headers=ALICE).json()
    assert r["images"] == [] and r["categories"] == [] and r["progress"]["drawn_here"] is False
    r = op(c, "add", ALICE, "op-given-01", image_id=1, box=[1, 1, 5, 5], category_id=1)
    assert r.status_code == 404 and "no image 1" in r.json()["detail"]
