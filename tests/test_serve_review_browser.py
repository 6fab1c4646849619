"""The review page in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright): a reviewer
logs in, sees the mask overlay, accepts and rejects by keyboard and undoes one; the store holds exactly those
decisions. The page's screenshot goes to the test's tmp folder, and to ``$APIS_SCREENSHOTS`` when set (the README's
``docs/review-page.png``)."""

from __future__ import annotations

import math
import os
import shutil
import statistics
from pathlib import Path

import pytest
from conftest import CHROMIUM
from serve_project import make_project
from test_serve_browser import ALICE_TOKEN, ThreadServer
from test_serve_review import _export, _score, write_review_export

from apis.layout import export_path
from apis.serve.project import Project
from apis.serve.review import ReviewSet
from apis.store import PointAnswer, Store
from apis.store.reviews import canonical_rle

STEP = 1
MASK_RGB = (0xFF, 0x3D, 0xF2)  # --mask in style.css

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing; install Debian's chromium (apt-get install -y chromium) to run the browser tests",
)


def review_server(project: Path) -> ThreadServer:
    """The real app with the review of ``STEP``, under uvicorn in a thread."""
    with Store.open(project) as store:
        instances = {i.id: i for i in store.instances()}
    return ThreadServer(project, review=ReviewSet.load(export_path(project, STEP), STEP, instances))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Images of 160 px; the last object has no mask; the others have a yes (step 0) and a no (step 1), true to
    their GT masks."""
    project = make_project(tmp_path, image_size=160)
    dataset = Project.load(project).dataset
    gt = {a.id: a.mask(im.height, im.width) for im in dataset.images for a in im.instances}
    with Store.open(project) as store:
        instances = store.instances()
        missing = instances[-1].id
        answers = []
        for inst in instances[:-1]:
            w = inst.omega
            inside = gt[inst.id][w.y0 : w.y1, w.x0 : w.x1]
            for label, step in ((1, 0), (0, 1)):
                ys, xs = (inside == label).nonzero()
                k = len(ys) // 2
                answers.append(PointAnswer(inst.id, w.x0 + int(xs[k]), w.y0 + int(ys[k]), label, step, "test", "carol"))
        store.add_points(answers)
    write_review_export(project, STEP, missing=missing)
    return project


def _wait_ready(page) -> None:
    page.wait_for_function("window.__apisReview && window.__apisReview.current && "
                           "!document.getElementById('btn-reject').disabled", timeout=15_000)


def _current(page) -> int:
    return page.evaluate("window.__apisReview.current.instance_id")


def _settle(page) -> None:
    page.wait_for_function("window.__apisReview.inflight.size === 0 && !window.__apisReview.undoing", timeout=15_000)


# The mean colour (RGB) of the canvas over the mask's pixels as shown, and with the mask hidden (view 2).
_OVERLAY_SHIFT = """() => {
  const st = window.__apisReview, it = st.current, view = document.getElementById('view');
  const [x0, y0, x1, y1] = it.crop, w = x1 - x0, h = y1 - y0;
  const pad = 16 * (window.devicePixelRatio || 1);
  const s = Math.min((view.width - 2 * pad) / w, (view.height - 2 * pad) / h);
  const ox = (view.width - w * s) / 2, oy = (view.height - h * s) / 2;
  const bits = new Uint8Array(w * h);
  let at = 0, on = false;
  for (const run of it.mask) { if (on) bits.fill(1, at, at + run); at += run; on = !on; }
  const mean = () => {
    const data = view.getContext('2d').getImageData(0, 0, view.width, view.height).data;
    const sum = [0, 0, 0];
    let n = 0;
    for (let j = 0; j < h; j++) for (let i = 0; i < w; i++) {
      if (!bits[j * w + i]) continue;
      const k = 4 * (Math.floor(oy + (j + 0.5) * s) * view.width + Math.floor(ox + (i + 0.5) * s));
      sum[0] += data[k]; sum[1] += data[k + 1]; sum[2] += data[k + 2]; n += 1;
    }
    return sum.map((v) => v / n);
  };
  const shown = mean();
  const keep = st.maskView;
  st.maskView = 2;
  window.dispatchEvent(new Event('resize'));
  const bare = mean();
  st.maskView = keep;
  window.dispatchEvent(new Event('resize'));
  return [shown, bare];
}"""


def test_review_by_keyboard_with_undo_and_check_the_store(browser, project: Path, tmp_path: Path) -> None:
    server = review_server(project)
    requests: list[str] = []
    try:
        # bypass_csp: the page's content policy forbids eval, which Playwright's wait_for_function uses.
        page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{server.url}/login?token={ALICE_TOKEN}&page=review")
        assert page.url == f"{server.url}/review"
        _wait_ready(page)

        # Lowest trust first: the object without a mask, which cannot be accepted.
        missing = _current(page)
        assert page.evaluate("window.__apisReview.current.mask") is None
        assert page.is_disabled("#btn-accept") and "none" in page.inner_text("#meta-source")
        page.keyboard.press("a")
        page.wait_for_function("document.getElementById('toast').textContent.includes('no mask to accept')")
        assert _current(page) == missing
        page.keyboard.press("r")

        # Then masks: the overlay tints the object, answered points are listed, the trust score is shown.
        _wait_ready(page)
        first = _current(page)
        shown_rgb, bare_rgb = page.evaluate(_OVERLAY_SHIFT)
        fill = MASK_RGB
        assert math.dist(shown_rgb, fill) < math.dist(bare_rgb, fill) - 20, (shown_rgb, bare_rgb)  # tinted
        assert "1 yes, 1 no" in page.inner_text("#meta-points")
        assert page.inner_text("#trust-value") == f"{_score(first):.2f}"

        shown, keys = [missing], [("ArrowRight", "accept"), ("r", "reject"), ("a", "accept"), ("ArrowLeft", "reject"),
                                  ("s", "skip"), ("a", "accept")]
        for key, _ in keys:
            _wait_ready(page)
            shown.append(_current(page))
            page.keyboard.press(key)
        _settle(page)
        assert len(set(shown)) == len(shown), "each key press decides about a new object"
        page.wait_for_function("document.getElementById('stats').textContent.includes('6 reviewed')", timeout=10_000)
        _wait_ready(page)
        page.wait_for_function("!document.getElementById('toast').classList.contains('show')", timeout=15_000)
        page.wait_for_timeout(400)  # the bar's and the toast's transitions
        shot = tmp_path / "review-page.png"
        page.screenshot(path=str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("APIS_SCREENSHOTS"):
            Path(os.environ["APIS_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(os.environ["APIS_SCREENSHOTS"]) / "review-page.png")

        # U withdraws the last decision (an accept) and shows that object again; R decides it anew.
        page.keyboard.press("u")
        page.wait_for_function(f"(window.__apisReview.current || {{}}).instance_id === {shown[-1]}")
        _settle(page)
        _wait_ready(page)
        page.keyboard.press("r")
        _settle(page)

        decided = [("reject", missing), *((d, i) for (_, d), i in zip(keys, shown[1:], strict=True))]
        exported = _export(project)
        with Store.open(project) as store:
            log = store.review_log(STEP)
            assert [(d.instance_id, d.decision, d.reviewer, d.undone_at is None) for d in log] == [
                *((i, d, "alice", True) for d, i in decided[:-1]), (shown[-1], "accept", "alice", False),
                (shown[-1], "reject", "alice", True)]
            standing = {i: d.decision for i, d in store.reviews().items()}
            assert standing == {**{i: d for d, i in decided if d != "skip"}, shown[-1]: "reject"}
            for d in log:
                if d.instance_id != missing:
                    assert d.mask == canonical_rle(exported[d.instance_id]["segmentation"])
        timings = page.evaluate("window.__apisReview.timings")
        print(f"\nreview page: key → next mask drawn: median {statistics.median(timings):.1f} ms, "
              f"max {max(timings):.1f} ms over {len(timings)} decisions")
        assert statistics.median(timings) < 100

        # The question page links here while the review is on.
        page.goto(f"{server.url}/")
        page.wait_for_selector("#to-review:not([hidden])")
        assert "step 1" in page.inner_text("#to-review")
        assert all(u.startswith(server.url) for u in requests), [u for u in requests if not u.startswith(server.url)]
    finally:
        server.stop()
