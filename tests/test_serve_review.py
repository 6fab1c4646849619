"""The review page's API (``apis serve --review-step S``): M(S)'s exported masks, lowest trust first, decided by
people and stored with the mask they saw. The export is written by hand here (no model is trained)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_project import TOKENS, make_project
from test_serve import Clock
from typer.testing import CliRunner

from apis.cli import app as cli_app
from apis.data.records import decode_segmentation, encode_mask
from apis.geometry import PixelWindow
from apis.layout import export_path
from apis.serve.app import create_app
from apis.serve.auth import Annotators
from apis.serve.project import Project
from apis.serve.review import ReviewError, ReviewSet, crop_window, ensure_export, mask_runs, refresh_command
from apis.store import DB_NAME, PointAnswer, Store
from apis.store.reviews import canonical_rle

ALICE = {"Authorization": "Bearer tok-alice-0123456789"}
BOB = {"Authorization": "Bearer tok-bob-0123456789ab"}
STEP = 1


def write_review_export(project: Path, step: int, missing: int | None = None, made_step: int | None = None) -> Path:
    """A mask export of ``step`` as :func:`apis.export.export_masks` writes it, one annotation per stored instance
    (copies of :func:`serve_project.make_project` too), made from the train json's GT masks: every third object's
    mask shifted by a few pixels (a poor mask, kept inside Ω), the stored answers of steps ≤ ``step`` forced,
    ``apis_score`` spread over [0, 1] by id, and instance ``missing`` (when given) without a mask. ``made_step`` is
    recorded as the step (default ``step``)."""
    dataset = Project.load(project).dataset
    coco = json.loads(Path(dataset.json_path).read_text())
    gt = {(a.image_id, a.category_id, a.box): a for im in dataset.images for a in im.pool}
    with Store.open(project) as store:
        instances = store.instances()
        points = store.points(max_step=step)
    coco["annotations"] = []
    for inst in instances:
        mask = gt[(inst.image_id, inst.category_id, inst.box)].mask(inst.height, inst.width)
        if inst.id % 3 == 0:
            w = inst.omega
            inside = np.zeros_like(mask)
            inside[w.y0 : w.y1, w.x0 : w.x1] = 1
            mask = np.roll(mask, (3, 4), axis=(0, 1)) * inside
        for p in points.get(inst.id, ()):
            mask[p.y, p.x] = p.label
        x0, y0, x1, y1 = inst.box
        ann = {"id": inst.id, "image_id": inst.image_id, "category_id": inst.category_id,
               "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0, "segmentation": encode_mask(mask),
               "area": int(mask.sum()), "apis_score": _score(inst.id), "apis_points_agree": None,
               "apis_source": "prediction_set", "apis_refinement": None, "apis_forced_pixels": 0}
        if inst.id == missing:
            del ann["segmentation"]
            ann.update(apis_score=0.0, apis_source="missing")
        coco["annotations"].append(ann)
    coco["info"] = {**coco.get("info", {}), "apis_missing": [] if missing is None else [missing],
                    "apis_export": {"prediction_set": "A", "mask_threshold": 0.5,
                                    "max_step": step if made_step is None else made_step, "refine": "none"}}
    out = export_path(project, step)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco))
    return out


def _score(instance_id: int) -> float:
    """The trust score the hand-made export gives an object: spread over [0, 1] by id."""
    return round((instance_id * 37 % 101) / 100, 6)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("review"))
    with Store.open(project) as store:
        # The three objects reviewed first after the missing one (the last id) have one answer each: those of
        # steps 0 and 1 are drawn, the one of step 2 is not (it came after M(1)).
        instances = store.instances()[:-1]
        first = sorted(instances, key=lambda i: (_score(i.id), i.id))[:3]
        store.add_points([PointAnswer(i.id, i.omega.x0, i.omega.y0, label, step, "test", "carol")
                          for i, label, step in zip(first, (1, 0, 1), (0, 1, 2), strict=True)])
    return project


@pytest.fixture
def project(base: Path, tmp_path: Path) -> Path:
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "config.yaml").write_text((base / "config.yaml").read_text())
    src, dst = sqlite3.connect(base / DB_NAME), sqlite3.connect(proj / DB_NAME)
    src.backup(dst)
    src.close()
    dst.close()
    return proj


def _review_set(project: Path, step: int = STEP) -> ReviewSet:
    with Store.open(project) as store:
        instances = {i.id: i for i in store.instances()}
    return ReviewSet.load(export_path(project, step), step, instances, refresh_command(project, step))


@pytest.fixture
def missing(project: Path) -> int:
    """The instance the export has no mask for."""
    with Store.open(project) as store:
        return store.instances()[-1].id


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(project: Path, missing: int, clock: Clock) -> TestClient:
    write_review_export(project, STEP, missing=missing)
    app = create_app(Project.load(project), Annotators(TOKENS), lease_s=60, clock=clock, review=_review_set(project))
    return TestClient(app)


def _next(client: TestClient, headers: dict, n: int = 3) -> list[dict]:
    r = client.get(f"/api/review/next?n={n}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _ids(client: TestClient, headers: dict, n: int = 3) -> list[int]:
    return [it["instance_id"] for it in _next(client, headers, n)]


def _decide(client: TestClient, instance_id: int, decision: str, headers: dict):
    return client.post("/api/review/decide", json={"instance_id": instance_id, "decision": decision}, headers=headers)


def _export(project: Path) -> dict[int, dict]:
    coco = json.loads(export_path(project, STEP).read_text())
    return {a["id"]: a for a in coco["annotations"]}


# ------------------------------------------------------------------------------------------------ API


def test_review_routes_need_a_token_and_are_off_without_a_review_step(client: TestClient, project: Path) -> None:
    for method, path in (("get", "/api/review/next"), ("post", "/api/review/undo"), ("get", "/api/review/progress")):
        assert getattr(client, method)(path).status_code == 401
    assert _decide(client, 1, "accept", {}).status_code == 401
    assert client.get("/api/me", headers=ALICE).json()["review_step"] == STEP
    page = client.get("/review")  # public, like the question page: it holds no data
    assert page.status_code == 200 and "review.js" in page.text
    assert client.get("/static/review.js").status_code == 200
    r = client.get("/login?token=tok-bob-0123456789ab&page=review", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/review"
    assert client.get("/login?token=tok-bob-0123456789ab&page=https://evil.example").status_code == 422

    off = TestClient(create_app(Project.load(project), Annotators(TOKENS)))
    assert off.get("/review").status_code == 404 and "--review-step" in off.get("/review").text
    r = off.get("/api/review/next", headers=ALICE)
    assert r.status_code == 404 and "--review-step S" in r.json()["detail"]
    assert off.get("/api/me", headers=ALICE).json()["review_step"] is None


def test_objects_come_lowest_trust_first_with_crop_mask_and_points(client: TestClient, project: Path,
                                                                    missing: int) -> None:
    exported = _export(project)
    pool = sorted((a for a in exported.values() if "apis_source" in a), key=lambda a: (a["apis_score"], a["id"]))
    items = _next(client, ALICE, 5)
    assert [it["instance_id"] for it in items] == [a["id"] for a in pool[:5]]
    assert items[0]["instance_id"] == missing and items[0]["mask"] is None and items[0]["apis_source"] == "missing"
    proj = Project.load(project)
    with Store.open(project) as store:
        instances = {i.id: i for i in store.instances()}
        points = store.points(max_step=STEP)
    for it in items:
        inst, ann = instances[it["instance_id"]], exported[it["instance_id"]]
        assert it["box"] == list(inst.box) and (it["width"], it["height"]) == (inst.width, inst.height)
        assert it["apis_score"] == ann["apis_score"] and it["step"] == STEP
        assert it["category"] == proj.category_name(inst.category_id)
        assert it["image_url"] == f"/api/images/{inst.image_id}"
        x0, y0, x1, y1 = it["crop"]
        assert (x0, y0, x1, y1) == tuple(vars(crop_window(inst.box, inst.width, inst.height)).values())
        assert x0 <= inst.box[0] and y0 <= inst.box[1] and x1 >= inst.box[2] and y1 >= inst.box[3]
        if it["mask"] is not None:  # the runs rebuild the exported mask over the crop
            full = decode_segmentation(ann["segmentation"], inst.height, inst.width)
            assert np.array_equal(_unruns(it["mask"], x1 - x0, y1 - y0), full[y0:y1, x0:x1])
    # Points answered up to step S are drawn, later ones are not.
    assert [len(it["points"]) for it in items[:4]] == [0, 1, 1, 0]
    for it in items[1:3]:
        (p,) = points[it["instance_id"]]
        assert it["points"] == [{"x": p.x, "y": p.y, "label": p.label}]


def _unruns(runs: list[int], w: int, h: int) -> np.ndarray:
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8)
    assert flat.size == w * h
    return flat.reshape(h, w)


def test_each_object_goes_to_one_reviewer_until_its_lease_expires(client: TestClient, clock: Clock) -> None:
    a, b = _ids(client, ALICE), _ids(client, BOB)
    assert len(a) == len(b) == 3 and not set(a) & set(b)
    assert _ids(client, ALICE) == a  # held ones come back first, renewed
    clock.now += 59
    b5 = _ids(client, BOB, 5)
    assert b5[:3] == b and not set(b5) & set(a)
    clock.now += 2  # alice's leases (renewed at +0) ran out; bob's (renewed at +59) did not
    release = "/api/review/release"
    assert client.post(release, json={"instance_ids": b5}, headers=ALICE).status_code == 200  # not hers: kept
    c = _ids(client, ALICE, 5)
    assert c[:3] == a and not set(c) & set(b5)  # hers are free again, lowest first
    assert client.post(release, json={"instance_ids": b5}, headers=BOB).status_code == 200
    assert client.post(release, json={"instance_ids": c[3:]}, headers=ALICE).status_code == 200
    assert _ids(client, ALICE, 5) == a + b5[:2]


def test_decisions_are_stored_with_the_exported_mask_reviewer_and_step(client: TestClient, project: Path) -> None:
    first, second, third = _ids(client, ALICE, 4)[1:]
    r = _decide(client, first, "accept", ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["reviewer"] == "alice"
    assert _decide(client, second, "reject", ALICE).status_code == 200
    assert _decide(client, first, "accept", ALICE).status_code == 200  # a retry: stored once
    conflict = _decide(client, first, "reject", BOB)
    assert conflict.status_code == 409 and conflict.json()["stored"]["reviewer"] == "alice"
    assert "alice accepted" in conflict.json()["detail"] and "undo" in conflict.json()["detail"]
    assert _decide(client, second, "skip", ALICE).status_code == 409  # a skip cannot hide a standing decision
    exported = _export(project)
    with Store.open(project) as store:
        log = store.review_log(STEP)
        assert [(d.instance_id, d.decision, d.reviewer, d.step) for d in log] == [
            (first, "accept", "alice", STEP), (second, "reject", "alice", STEP)]
        for d in log:  # the server's copy of the mask shown, never one sent by the page
            assert d.mask == canonical_rle(exported[d.instance_id]["segmentation"])
            assert d.apis_score == exported[d.instance_id]["apis_score"]
        assert {i: d.decision for i, d in store.reviews().items()} == {first: "accept", second: "reject"}
    # Decided objects are released and never offered again; third is still alice's.
    waiting = _ids(client, ALICE, 5)
    assert third in waiting and first not in waiting and second not in waiting


def test_bad_decisions_are_refused(client: TestClient, project: Path, missing: int) -> None:
    for body in ({"instance_id": "1", "decision": "accept"}, {"instance_id": 1.5, "decision": "accept"},
                 {"instance_id": -1, "decision": "accept"}, {"instance_id": 1, "decision": "yes"},
                 {"instance_id": 1}, {"instance_id": 1, "decision": "accept", "mask": {"size": [1, 1], "counts": "1"}},
                 {"instance_id": 1, "decision": "accept", "step": 3}):
        assert client.post("/api/review/decide", json=body, headers=ALICE).status_code == 422, body
    assert client.get("/api/review/next?n=0", headers=ALICE).status_code == 422
    assert client.get("/api/review/next?n=6", headers=ALICE).status_code == 422
    r = _decide(client, 99999, "accept", ALICE)
    assert r.status_code == 404 and "not one of the" in r.json()["detail"]
    r = _decide(client, missing, "accept", ALICE)
    assert r.status_code == 409 and "nothing to accept" in r.json()["detail"]
    assert _decide(client, missing, "reject", ALICE).status_code == 200  # more points for an object without a mask
    with Store.open(project) as store:
        (d,) = store.review_log(STEP)
    assert d.decision == "reject" and d.mask["size"] == [64, 64] and d.apis_score == 0.0
    assert client.post("/api/review/release", json={"instance_ids": ["x"]}, headers=ALICE).status_code == 422


def test_a_skip_hides_the_object_from_the_skipper_only(client: TestClient) -> None:
    (x,) = _ids(client, ALICE, 1)
    assert _decide(client, x, "skip", ALICE).status_code == 200
    assert x not in _ids(client, ALICE, 5)
    assert x in _ids(client, BOB, 5)
    p = client.get("/api/review/progress", headers=ALICE).json()
    assert p["reviewed"] == 0 and p["remaining"] == p["total"]


def test_undo_withdraws_own_last_decisions_in_turn(client: TestClient, project: Path) -> None:
    a, b = _ids(client, ALICE)[1:]
    _decide(client, a, "accept", ALICE)
    _decide(client, b, "reject", ALICE)
    assert client.post("/api/review/undo", headers=BOB).status_code == 404
    r = client.post("/api/review/undo", headers=ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["undone"]["instance_id"] == b and r.json()["item"]["instance_id"] == b
    assert b in _ids(client, ALICE, 5) and b not in _ids(client, BOB, 5)  # leased back to alice
    assert client.post("/api/review/undo", headers=ALICE).json()["item"]["instance_id"] == a
    assert client.post("/api/review/undo", headers=ALICE).status_code == 404
    with Store.open(project) as store:
        assert store.reviews() == {}
        assert [(d.instance_id, d.undone_at is not None) for d in store.review_log(STEP)] == [(a, True), (b, True)]
    # Once the loop has selected the next step's points, a decision stays.
    _decide(client, a, "reject", ALICE)
    with Store.open(project) as store:
        store.mark_phase(f"select_{STEP + 1}", {})
    r = client.post("/api/review/undo", headers=ALICE)
    assert r.status_code == 409 and "review the object again" in r.json()["detail"]


def test_progress_counts_the_pool_and_earlier_decisions(client: TestClient, project: Path, missing: int) -> None:
    exported = _export(project)
    total = sum("apis_source" in a for a in exported.values())
    items = _next(client, ALICE, 4)
    early_accept, early_reject = items[2]["instance_id"], items[3]["instance_id"]
    with Store.open(project) as store:  # decisions about M(0)'s masks
        store.add_review(early_accept, 0, "accept", "bob", exported[early_accept]["segmentation"])
        store.add_review(early_reject, 0, "reject", "bob", exported[early_reject]["segmentation"])
    _decide(client, items[1]["instance_id"], "reject", ALICE)
    _decide(client, missing, "skip", ALICE)
    p = client.get("/api/review/progress", headers=ALICE).json()
    assert (p["step"], p["total"], p["accepted"], p["rejected"], p["reviewed"], p["remaining"]) == (
        STEP, total, 1, 1, 2, total - 2)
    assert p["accepted_share"] == pytest.approx(1 / total) and p["per_minute"] is not None
    waiting = {it["instance_id"]: it for it in _next(client, ALICE, 5)}  # her leases, then the lowest free
    assert early_accept not in waiting  # an accepted mask is final
    assert waiting[early_reject]["previous"]["decision"] == "reject"  # M(1)'s new mask is reviewed again
    assert waiting[early_reject]["previous"]["step"] == 0


# ------------------------------------------------------------------------------------- export checks


def test_the_export_must_be_of_the_step_and_of_the_project(project: Path, tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match=r"no mask export of step 1 here; write it again with `apis export masks"):
        _review_set(project)
    write_review_export(project, STEP, made_step=2)
    with pytest.raises(ReviewError, match=r"holds the masks of step 2, not of step 1; write step 1's with `apis "
                                          r"export masks .* --step 1 --out .*step1\.json`"):
        _review_set(project)
    path = write_review_export(project, STEP)
    coco = json.loads(path.read_text())
    coco["annotations"][0]["apis_score"] = 1.5
    path.write_text(json.dumps(coco))
    with pytest.raises(ReviewError, match=r"annotation 1: apis_score must be a number in \[0, 1\], got 1.5"):
        _review_set(project)
    coco["annotations"][0]["apis_score"] = 0.5
    coco["annotations"][0]["segmentation"] = encode_mask(np.zeros((5, 7), np.uint8))
    path.write_text(json.dumps(coco))
    with pytest.raises(ReviewError, match=r"annotation 1: the mask is 7×5 but its image is 64×64"):
        _review_set(project)
    coco["annotations"][0]["id"] = 5000
    path.write_text(json.dumps(coco))
    with pytest.raises(ReviewError, match=r"annotations 5000 are not pool instances of this project's store"):
        _review_set(project)
    path.write_text("{not json")
    with pytest.raises(ReviewError, match="cannot read the mask export"):
        _review_set(project)


def test_serve_cli_refuses_an_export_of_another_step_and_a_missing_model(project: Path) -> None:
    runner = CliRunner()
    shutil.copy(write_review_export(project, STEP), export_path(project, 2))
    r = runner.invoke(cli_app, ["serve", str(project), "--review-step", "2", "--port", "0"])
    assert r.exit_code == 2 and "holds the masks of step 1, not of step 2" in r.output, r.output
    r = runner.invoke(cli_app, ["serve", str(project), "--review-step", "3", "--port", "0"])
    assert r.exit_code == 2 and "no model for step 3" in r.output and "apis run" in r.output, r.output
    assert not export_path(project, 3).exists()
    r = runner.invoke(cli_app, ["serve", str(project), "--review-step", "-1"])
    assert r.exit_code == 2 and "--review-step must be a step ≥ 0" in r.output


def test_a_missing_export_is_computed_once_before_serving(project: Path, monkeypatch) -> None:
    import apis.export

    calls = []

    def fake_export(root, step, out, progress=None):
        calls.append((root, step, out))
        write_review_export(root, step)

    monkeypatch.setattr(apis.export, "export_masks_cli", fake_export)
    said: list[str] = []
    path = ensure_export(project, STEP, echo=said.append)
    assert path == export_path(project, STEP) and calls == [(project, STEP, path)]
    assert "computing it with M(1)" in said[0]
    assert ensure_export(project, STEP, echo=said.append) == path and len(calls) == 1  # there now: used as it is
    with Store.open(project) as store:
        assert len(_review_set(project)) == len(store.instances())


def test_crop_window_and_mask_runs() -> None:
    assert crop_window((10, 20, 30, 24), 100, 100) == PixelWindow(0, 10, 40, 34)  # margin: half of 20 = 10 (≥ 8)
    assert crop_window((0, 0, 64, 64), 64, 64) == PixelWindow(0, 0, 64, 64)
    assert crop_window((63.5, 63.5, 64, 64), 64, 64) == PixelWindow(55, 55, 64, 64)
    m = np.array([[1, 1, 0], [0, 0, 1]])
    assert mask_runs(m) == [0, 2, 3, 1]
    assert mask_runs(np.zeros((2, 2))) == [4]
    assert np.array_equal(_unruns(mask_runs(m), 3, 2), m)
