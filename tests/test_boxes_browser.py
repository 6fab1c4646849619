"""The box page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright), as a person uses it:
boxes dragged on two DSB images (copied at test time), one moved, one resized, one deleted, one undone, both images
done, then P0's point questions answered on the question page; the pool holds exactly those boxes and answers.

A screenshot of the box page goes to /tmp/boxes-page.png (and to ``$APIS_SCREENSHOTS/boxes-page.png`` when set).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from boxes_project import DSB, box_project
from conftest import CHROMIUM
from test_serve_browser import ALICE_TOKEN, ThreadServer

from apis.data.coco import load_coco
from apis.data.images import load_rgb
from apis.store import DB_NAME, Store

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing; install Debian's chromium (apt-get install -y chromium) to run the browser tests",
)
PAD = 16  # CSS px of margin around the image on the stage (common.js drawCrop)
SCREENSHOT = Path("/tmp/boxes-page.png")


class Stage:
    """Screen position of image pixels on the page's canvas, worked out from the canvas's place on the screen and the
    image's size alone: the image is scaled to fit inside the canvas less PAD on each side, and centred."""

    def __init__(self, page, width: int, height: int) -> None:
        r = page.locator("#view").bounding_box()
        self.width, self.height = width, height
        self.left, self.top = r["x"], r["y"]
        self.s = min((r["width"] - 2 * PAD) / width, (r["height"] - 2 * PAD) / height)
        self.ox = (r["width"] - width * self.s) / 2
        self.oy = (r["height"] - height * self.s) / 2

    def screen(self, x: float, y: float) -> tuple[float, float]:
        """Where image point (x, y) (continuous image pixels, [0, width] × [0, height]) is on the screen."""
        return self.left + self.ox + x * self.s, self.top + self.oy + y * self.s


def nuclei(index: int) -> list[tuple[int, int, int, int]]:
    """The boxes (xyxy, pixel edges) of the nuclei of the ``index``-th DSB image, largest first: what a person would
    box there."""
    folder = sorted(DSB.iterdir())[index] / "masks"
    out = []
    for path in sorted(folder.glob("*.png")):
        ys, xs = np.nonzero(load_rgb(path)[..., 0] > 127)
        out.append((len(xs), (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return [box for _, box in sorted(out, reverse=True)]


def _drag(page, stage: Stage, a: tuple[float, float], b: tuple[float, float]) -> None:
    stage = Stage(page, stage.width, stage.height)  # where the image is now, as a person would look
    page.mouse.move(*stage.screen(*a))
    page.mouse.down()
    for t in (0.25, 0.5, 0.75, 1.0):  # a person's drag passes through the points between
        page.mouse.move(*stage.screen(a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
    page.mouse.up()


def _settle(page) -> None:
    page.wait_for_function("window.__apisBoxes.saved() && window.__apisBoxes.current !== null", timeout=15_000)


def _boxes(page) -> list[dict]:
    return page.evaluate("[...window.__apisBoxes.images.get(window.__apisBoxes.current).boxes]"
                         ".filter(b => !b.gone).map(b => ({id: b.id, box: b.box, category_id: b.category_id,"
                         " pending: b.pending}))")


def _near(got, want) -> bool:
    return all(abs(g - w) <= 1.0 for g, w in zip(got, want, strict=True))


def test_a_person_draws_the_boxes_then_answers_p0(browser, tmp_path: Path) -> None:
    project = box_project(tmp_path, n=2, categories=("cell", "debris"))
    server = ThreadServer(project)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/login?token={ALICE_TOKEN}")
        page.wait_for_function("window.__apisBoxes && window.__apisBoxes.layout && window.__apisBoxes.current === 1",
                               timeout=15_000)
        assert page.url.endswith("/boxes"), "the login link opens the box page while boxes are drawn"
        assert "an image with no object is a valid done image" in page.inner_text(".note")
        assert "Enter" in page.inner_text(".keys") and "undo" in page.inner_text(".keys")
        one = page.evaluate("window.__apisBoxes.images.get(1).view")
        stage = Stage(page, one["width"], one["height"])

        n1, n2, n3, n4, n5 = nuclei(0)[:5]
        # A, drawn 15 px left of and 20 px above the first nucleus while the server holds back its reply: shown as
        # not saved until the acknowledgement comes; then moved onto the nucleus.
        held = []
        page.route("**/api/boxes/add", lambda route: held.append(route))
        a_drawn = (n1[0] - 15, n1[1] - 20, n1[2] - 15, n1[3] - 20)
        _drag(page, stage, a_drawn[:2], a_drawn[2:])
        page.wait_for_function("window.__apisBoxes.ops.length === 1")
        page.wait_for_timeout(100)
        assert [b["pending"] for b in _boxes(page)] == [1] and _boxes(page)[0]["id"] is None
        assert "saving 1 change" in page.inner_text("#save-state")
        while not held:
            page.wait_for_timeout(20)
        held[0].continue_()
        page.unroute("**/api/boxes/add")
        _settle(page)
        assert "every change saved" in page.inner_text("#save-state")
        (a,) = _boxes(page)
        assert a["pending"] == 0 and a["id"] is not None and _near(a["box"], a_drawn)

        _drag(page, stage, n4[:2], n4[2:])              # B, then its category by key: debris (B is selected)
        page.keyboard.press("2")
        _settle(page)
        _drag(page, stage, n2[:2], n2[2:])              # C: a debris box too (the category now chosen)
        _settle(page)
        page.keyboard.press("Escape")                   # select none, so that 1 sets the category of the next
        page.keyboard.press("1")                        # boxes only: cell
        centre = ((a_drawn[0] + a_drawn[2]) / 2, (a_drawn[1] + a_drawn[3]) / 2)
        _drag(page, stage, centre, (centre[0] + 15, centre[1] + 20))   # A moved onto the nucleus
        _settle(page)
        page.mouse.click(*Stage(page, one["width"], one["height"]).screen((n4[0] + n4[2]) / 2, (n4[1] + n4[3]) / 2))
        page.keyboard.press("Delete")                   # B selected by a click, and deleted
        _settle(page)
        _drag(page, stage, n5[:2], n5[2:])              # D, then undone
        _settle(page)
        assert len(_boxes(page)) == 3
        page.keyboard.press("z")
        page.wait_for_function("window.__apisBoxes.saved() && window.__apisBoxes.images.get(1).boxes"
                               ".filter(b => !b.gone).length === 2", timeout=15_000)
        page.keyboard.press("Tab")                      # select a box (nothing is sent): its corners show
        page.wait_for_function("document.getElementById('stats').textContent.includes('2 boxes')", timeout=5_000)
        page.wait_for_timeout(200)
        page.screenshot(path=str(SCREENSHOT))
        if os.environ.get("APIS_SCREENSHOTS"):
            Path(os.environ["APIS_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(SCREENSHOT, Path(os.environ["APIS_SCREENSHOTS"]) / "boxes-page.png")
        on_one = sorted((b["box"], b["category_id"]) for b in _boxes(page))
        page.keyboard.press("Enter")                    # image 1 done

        page.wait_for_function("window.__apisBoxes.current === 2 && window.__apisBoxes.layout", timeout=15_000)
        two = page.evaluate("window.__apisBoxes.images.get(2).view")
        stage = Stage(page, two["width"], two["height"])
        m = nuclei(1)[1]
        _drag(page, stage, m[:2], (m[2] - 20, m[3] - 12))   # E, short of the nucleus: resized by its corner
        _settle(page)
        _drag(page, stage, (m[2] - 20, m[3] - 12), m[2:])
        _settle(page)
        (e,) = _boxes(page)
        assert _near(e["box"], m) and e["category_id"] == 1
        page.keyboard.press("n")                        # image 2 done: the last, so the boxes become the pool
        page.wait_for_selector("#to-questions:not([hidden])", timeout=30_000)
        assert "The boxes are the pool: 3 boxes on 2 images" in page.inner_text("#empty")
        assert not errors, errors

        # The pool: exactly the boxes left standing, where they were dragged.
        want = {1: [(n1, 1), (n2, 2)], 2: [(m, 1)]}
        with Store.open(project / DB_NAME) as store:
            stored = store.instances("train")
            pool = {i: sorted((s.box, s.category_id) for s in stored if s.image_id == i) for i in (1, 2)}
            assert store.drawn_boxes() == 3
        for image, boxes in want.items():
            assert len(pool[image]) == len(boxes), pool
            for (got, got_cat), (box, cat) in zip(pool[image], sorted(boxes), strict=True):
                assert _near(got, box) and got_cat == cat, (image, got, box)
        train = load_coco(project / "data" / "train.json")
        in_json = sorted((a.box, a.category_id) for a in train.instances())
        assert in_json == sorted(p for ps in pool.values() for p in ps)
        assert all(a.segmentation is None for a in train.instances())
        assert sorted(tuple(b) for b, _ in on_one) == [s for s, _ in pool[1]]

        # P0 on the question page: one question per box, answered with the keys.
        page.click("#to-questions")
        page.wait_for_function("window.__apis && window.__apis.current && !document.getElementById('btn-yes').disabled",
                               timeout=15_000)
        answers = {}
        for key, answer in (("y", "yes"), ("n", "no"), ("y", "yes")):
            page.wait_for_function("window.__apis.current && !document.getElementById('btn-yes').disabled",
                                   timeout=15_000)
            answers[page.evaluate("window.__apis.current.query_id")] = answer
            page.keyboard.press(key)
        page.wait_for_function("window.__apis.inflight.size === 0", timeout=15_000)
        page.wait_for_selector("#empty:not([hidden])", timeout=15_000)
        with Store.open(project / DB_NAME) as store:
            queries = store.queries(step=0)
            points = store.points()
            instances = {i.id: i for i in store.instances()}
        assert sorted(q.id for q in queries) == sorted(answers) and len(queries) == 3
        assert sorted(q.instance_id for q in queries) == sorted(instances)
        for q in queries:
            assert (q.answer, q.annotator) == (answers[q.id], "alice")
            (point,) = points[q.instance_id]
            assert (point.x, point.y, point.label, point.step) == (q.x, q.y, int(answers[q.id] == "yes"), 0)
            w = instances[q.instance_id].omega
            assert w.x0 <= q.x < w.x1 and w.y0 <= q.y < w.y1, "P0 asks about a pixel inside the drawn box"
        assert json.loads((project / "data" / "train.json").read_text())["images"][0]["id"] == 1
        assert not errors, errors
    finally:
        server.stop()
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_lost_reply_is_sent_again_and_stored_once_and_a_pool_finished_elsewhere_ends_the_page(
        browser, tmp_path: Path) -> None:
    from apis.serve.box_project import finish
    from apis.store import BoxRequest

    project = box_project(tmp_path, n=2)
    server = ThreadServer(project)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        page.goto(f"{server.url}/login?token={ALICE_TOKEN}")
        page.wait_for_function("window.__apisBoxes && window.__apisBoxes.layout && window.__apisBoxes.current === 1",
                               timeout=15_000)
        one = page.evaluate("window.__apisBoxes.images.get(1).view")
        stage = Stage(page, one["width"], one["height"])
        # The first add reaches the server and is stored, but its reply is lost on the way back.
        lost = []

        def lose_reply(route) -> None:
            if not lost:
                lost.append(route.fetch().json())
                route.abort()
            else:
                route.continue_()

        page.route("**/api/boxes/add", lose_reply)
        n = nuclei(0)[0]
        _drag(page, stage, n[:2], n[2:])
        page.wait_for_function("window.__apisBoxes.retrying || window.__apisBoxes.saved()", timeout=15_000)
        _settle(page)
        page.unroute("**/api/boxes/add")
        (box,) = _boxes(page)
        assert lost and lost[0]["op"]["box_id"] == box["id"], "the retry got the stored box back"
        with Store.open(project / DB_NAME) as store:
            assert [b.id for b in store.box_image(1).boxes] == [box["id"]], "stored once"
        with sqlite3.connect(project / DB_NAME) as conn:
            assert [k for (k,) in conn.execute("SELECT kind FROM box_ops")] == ["add"], "one operation, not two"
        with Store.open(project / DB_NAME) as store:
            # Meanwhile the operator ends the box round with the images done: bob's image 2.
            store.box_op(BoxRequest("bob-add-0001", "bob", "add", image_id=2, box=(1, 1, 30, 30), category_id=1))
            store.box_op(BoxRequest("bob-done-001", "bob", "done", image_id=2))
        finish(project, only_done=True, report=lambda s: None)
        _drag(page, stage, (200, 150), (240, 200))
        page.wait_for_selector("#to-questions:not([hidden])", timeout=15_000)
        assert "The boxes are the pool: 1 box on 1 image" in page.inner_text("#empty")
        with Store.open(project / DB_NAME) as store:
            assert [i.box for i in store.instances()] == [(1.0, 1.0, 30.0, 30.0)], "image 1 was not done: left out"
    finally:
        server.stop()
