"""The labelling page in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright).

The real server runs with uvicorn on 127.0.0.1 and a free port in a thread. Set ``APIS_SCREENSHOTS=DIR`` to
also write the page's screenshots (PNG) there, e.g. ``APIS_SCREENSHOTS=docs``.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHROMIUM
from serve_project import TOKENS, make_project, post_step

from apis.serve.app import bind, create_app
from apis.serve.auth import Annotators
from apis.serve.project import Project
from apis.store import Store

ALICE_TOKEN = "tok-alice-0123456789"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing; install Debian's chromium (apt-get install -y chromium) to run the browser tests",
)


class ThreadServer:
    """The real app under uvicorn, in a thread, on a free loopback port."""

    def __init__(self, project: Path, lease_s: float = 120.0, review=None) -> None:
        import uvicorn

        self.project = project
        app = create_app(Project.load(project), Annotators(TOKENS), lease_s=lease_s, review=review)
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    project = make_project(tmp_path)
    post_step(project, 1, alternates=2)
    server = ThreadServer(project)
    try:
        yield server
    finally:
        server.stop()


def _page(browser, server: ThreadServer, requests: list[str] | None = None):
    # bypass_csp: the page's content policy forbids eval, which Playwright's wait_for_function uses.
    page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{server.url}/login?token={ALICE_TOKEN}")
    _wait_ready(page)
    return page


def _wait_ready(page) -> None:
    page.wait_for_function("window.__apis && window.__apis.current && !document.getElementById('btn-yes').disabled",
                           timeout=15_000)


def _current(page) -> int:
    return page.evaluate("window.__apis.current.query_id")


def _settle(page) -> None:
    page.wait_for_function("window.__apis.inflight.size === 0 && !window.__apis.undoing", timeout=15_000)


def _screenshot(page, name: str) -> None:
    out = os.environ.get("APIS_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / name))


def test_answer_by_keyboard_undo_and_check_the_store(browser, server: ThreadServer) -> None:
    requests: list[str] = []
    page = _page(browser, server, requests)
    assert page.inner_text("#category") not in ("", "…")
    shown: list[int] = []
    keys = [("y", "yes"), ("ArrowLeft", "no"), ("s", "skip"), ("ArrowRight", "yes"), ("n", "no")]
    for key, _ in keys:
        _wait_ready(page)
        shown.append(_current(page))
        page.keyboard.press(key)
    _settle(page)
    assert len(set(shown)) == len(shown), "each key press answers a new question"
    project = server.project
    with Store.open(project) as store:
        for qid, (_, answer) in zip(shown, keys, strict=True):
            q = store.query(qid)
            assert (q.answer, q.annotator) == (answer, "alice")
            if answer != "skip":
                (point,) = [p for p in store.points()[q.instance_id] if (p.x, p.y) == (q.x, q.y)]
                assert point.label == (answer == "yes") and point.annotator == "alice"
    # Undo (U, then Backspace) reopens the last answers in turn and shows them again.
    page.keyboard.press("u")
    page.wait_for_function(f"window.__apis.current && window.__apis.current.query_id === {shown[-1]}")
    _settle(page)
    page.keyboard.press("Backspace")
    page.wait_for_function(f"window.__apis.current && window.__apis.current.query_id === {shown[-2]}")
    _settle(page)
    with Store.open(project) as store:
        assert store.query(shown[-1]).state == "open" and store.query(shown[-2]).state == "open"
        assert store.query(shown[0]).answer == "yes"
    _wait_ready(page)
    page.keyboard.press("n")  # answer the reopened question differently
    _settle(page)
    with Store.open(project) as store:
        assert store.query(shown[-2]).answer == "no"
    # Answer-to-next-question time, from the key press to the next frame after drawing the next question.
    timings = page.evaluate("window.__apis.timings")
    print(f"\npage: key → next question drawn: median {statistics.median(timings):.1f} ms, "
          f"max {max(timings):.1f} ms over {len(timings)} answers")
    assert statistics.median(timings) < 100
    assert "answered" in page.inner_text("#stats")
    assert all(u.startswith(server.url) for u in requests), [u for u in requests if not u.startswith(server.url)]


def test_buttons_answer_and_progress_counts(browser, server: ThreadServer) -> None:
    page = _page(browser, server)
    first = _current(page)
    page.click("#btn-yes")
    page.wait_for_function(f"window.__apis.current && window.__apis.current.query_id !== {first}")
    _settle(page)
    page.wait_for_function("document.getElementById('stats').textContent.includes('1 answered')", timeout=10_000)
    with Store.open(server.project) as store:
        assert store.query(first).answer == "yes"


def test_the_page_asks_for_a_token_without_one(browser, server: ThreadServer) -> None:
    page = browser.new_page(bypass_csp=True)
    page.goto(server.url + "/")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#login input", "not-the-token-at-all")
    page.click("#login button")
    assert "Wrong or expired" in page.content()
    page.goto(server.url + "/")
    page.fill("#login input", ALICE_TOKEN)
    page.click("#login button")
    _wait_ready(page)


def test_screenshots(browser, tmp_path: Path) -> None:
    """Screenshots of the page on larger images (written to ``$APIS_SCREENSHOTS`` when set)."""
    project = make_project(tmp_path, image_size=160)
    post_step(project, 1, alternates=2, limit=60)
    server = ThreadServer(project)
    try:
        page = _page(browser, server)
        page.wait_for_function("document.getElementById('stats').textContent.includes('remaining')")
        for key in "yns":
            page.keyboard.press(key)
            _settle(page)
            _wait_ready(page)
        page.wait_for_timeout(300)
        _screenshot(page, "serve-question.png")
        shot = page.screenshot()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        page.set_viewport_size({"width": 760, "height": 900})
        page.wait_for_timeout(200)
        _screenshot(page, "serve-narrow.png")
        with Store.open(project) as store:
            for q in store.open_queries():
                store.answer_query(q.id, "yes", "bob")
        page.set_viewport_size({"width": 1280, "height": 800})
        page.keyboard.press("y")
        page.wait_for_selector("#empty:not([hidden])", timeout=15_000)
        page.wait_for_function("document.getElementById('stats').textContent.includes('all done')", timeout=15_000)
        page.wait_for_function("!document.getElementById('toast').classList.contains('show')", timeout=15_000)
        page.wait_for_timeout(400)  # the bar's and the toast's transitions
        _screenshot(page, "serve-done.png")
    finally:
        server.stop()
