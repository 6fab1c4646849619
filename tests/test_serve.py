"""The question queue (store v2, apis.queue, ranked_points), the labelling API, and the file exchange."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from serve_project import ALICE, BOB, TOKENS, Clock, Pick, make_project, post_step
from typer.testing import CliRunner

from apis import queue
from apis.cli import app as cli_app
from apis.geometry import PixelWindow
from apis.selection.points import STRATEGIES, Candidate, OmegaExhausted, get_strategy, labelled_mask, ranked_points
from apis.serve.app import create_app
from apis.serve.auth import Annotators, TokenError, load_annotators, parse_tokens, read_tokens_file
from apis.serve.exchange import COLUMNS, ExchangeError, export_open, import_answers
from apis.serve.project import Project
from apis.store import (
    DB_NAME,
    SCHEMA_VERSION,
    NothingToUndo,
    PointAnswer,
    QueryClosed,
    StepConsumed,
    Store,
    StoreError,
)
from apis.store.schema import _SCHEMA


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Synthetic data generated once; each test copies the project's database."""
    root = tmp_path_factory.mktemp("serve")
    return make_project(root)


@pytest.fixture
def project(base: Path, tmp_path: Path) -> Path:
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "config.yaml").write_text((base / "config.yaml").read_text())
    src = sqlite3.connect(base / DB_NAME)
    dst = sqlite3.connect(proj / DB_NAME)
    src.backup(dst)
    src.close()
    dst.close()
    return proj


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(project: Path, clock: Clock) -> TestClient:
    post_step(project, step=1, alternates=2)
    app = create_app(Project.load(project), Annotators(TOKENS), lease_s=120, clock=clock)
    return TestClient(app)


def _answer(client: TestClient, query_id: int, answer: str, headers: dict):
    return client.post("/api/answer", json={"query_id": query_id, "answer": answer}, headers=headers)


def _next(client: TestClient, headers: dict, n: int = 2) -> list[dict]:
    r = client.get(f"/api/next?n={n}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["questions"]


# ---------------------------------------------------------------------------------------------- API


def test_every_api_call_needs_a_valid_token(client: TestClient) -> None:
    for method, path in (("get", "/api/me"), ("get", "/api/next"), ("post", "/api/undo"), ("get", "/api/progress"),
                         ("get", "/api/images/1")):
        assert getattr(client, method)(path).status_code == 401
        assert getattr(client, method)(path, headers={"Authorization": "Bearer wrong-token-123456"}).status_code == 401
    r = client.post("/api/answer", json={"query_id": 1, "answer": "yes"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/me", headers=ALICE).json()["annotator"] == "alice"
    # The page is public; it holds no data, and may load nothing from elsewhere.
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/static/app.js").status_code == 200


def test_login_sets_a_cookie_that_authenticates(client: TestClient) -> None:
    assert client.get("/login?token=nope-nope-nope").status_code == 401
    assert client.get("/api/me").status_code == 401
    r = client.get("/login?token=tok-bob-0123456789ab", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    assert client.get("/api/me").json()["annotator"] == "bob"


def test_answer_is_stored_as_a_point_and_closes_the_query(client: TestClient, project: Path) -> None:
    q = _next(client, ALICE, 1)[0]
    assert set(q) >= {"query_id", "image_id", "category", "box", "x", "y", "width", "height", "image_url"}
    x0, y0, x1, y1 = q["box"]
    assert x0 <= q["x"] + 0.5 < x1 and y0 <= q["y"] + 0.5 < y1  # the pixel centre lies in the box
    r = client.post("/api/answer", json={"query_id": q["query_id"], "answer": "yes"}, headers=ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["query"]["state"] == "answered"
    with Store.open(project) as store:
        (point,) = store.points()[q["instance_id"]]
        assert (point.x, point.y, point.label, point.step, point.annotator) == (q["x"], q["y"], 1, 1, "alice")
        assert store.query(q["query_id"]).answer == "yes"


def test_second_answer_is_409_with_the_stored_answer(client: TestClient) -> None:
    q = _next(client, ALICE, 1)[0]
    assert _answer(client, q["query_id"], "no", ALICE).status_code == 200
    r = client.post("/api/answer", json={"query_id": q["query_id"], "answer": "yes"}, headers=BOB)
    assert r.status_code == 409
    stored = r.json()["stored"]
    assert (stored["query_id"], stored["answer"], stored["annotator"]) == (q["query_id"], "no", "alice")


def test_unknown_query_is_404(client: TestClient) -> None:
    r = client.post("/api/answer", json={"query_id": 99999, "answer": "yes"}, headers=ALICE)
    assert r.status_code == 404
    assert "no query 99999" in r.json()["detail"]


@pytest.mark.parametrize("body", [
    {"query_id": "abc", "answer": "yes"},
    {"query_id": "3", "answer": "yes"},  # strict: an id is a json integer
    {"query_id": 1.5, "answer": "yes"},
    {"query_id": 0, "answer": "yes"},
    {"query_id": 1, "answer": "maybe"},
    {"query_id": 1, "answer": "YES"},
    {"query_id": 1},
    {"query_id": 1, "answer": "yes", "path": "/etc/passwd"},
])
def test_malformed_answers_are_422(client: TestClient, body: dict) -> None:
    assert client.post("/api/answer", json=body, headers=ALICE).status_code == 422


def test_batch_size_and_image_id_are_validated(client: TestClient) -> None:
    assert client.get("/api/next?n=0", headers=ALICE).status_code == 422
    assert client.get("/api/next?n=99", headers=ALICE).status_code == 422
    assert client.get("/api/images/abc", headers=ALICE).status_code == 422
    assert client.get("/api/images/999", headers=ALICE).status_code == 404
    assert client.get("/api/images/..%2F..%2Fconfig.yaml", headers=ALICE).status_code in (404, 422)


def test_images_are_served_by_id_from_the_dataset(client: TestClient, project: Path) -> None:
    proj = Project.load(project)
    r = client.get("/api/images/2", headers=ALICE)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content == proj.image_file(2).read_bytes()


def test_each_question_goes_to_one_annotator_until_its_lease_expires(client: TestClient, clock: Clock) -> None:
    a = [q["query_id"] for q in _next(client, ALICE, 3)]
    b = [q["query_id"] for q in _next(client, BOB, 3)]
    assert len(a) == len(b) == 3 and not set(a) & set(b)
    assert [q["query_id"] for q in _next(client, ALICE, 3)] == a  # held leases come back first, renewed
    clock.now += 119
    b = [q["query_id"] for q in _next(client, BOB, 5)]
    assert not set(b) & set(a)
    clock.now += 2  # alice's leases (renewed at t=0) ran out; bob's (renewed at t=119) did not
    for qid in b:
        _answer(client, qid, "yes", BOB)
    assert [q["query_id"] for q in _next(client, BOB, 3)] == a  # back in the queue, oldest first
    # A lease decides who is shown a question, not who may answer it: the first answer wins.
    assert _answer(client, a[0], "yes", ALICE).status_code == 200
    assert _answer(client, a[0], "no", BOB).status_code == 409


def test_release_returns_questions_to_the_queue(client: TestClient) -> None:
    a = [q["query_id"] for q in _next(client, ALICE, 2)]
    assert client.post("/api/release", json={"query_ids": a}, headers=BOB).status_code == 200  # not bob's
    assert not set(q["query_id"] for q in _next(client, BOB, 2)) & set(a)
    assert client.post("/api/release", json={"query_ids": a}, headers=ALICE).status_code == 200
    assert client.post("/api/release", json={"query_ids": ["x"]}, headers=ALICE).status_code == 422
    assert set(a) <= {q["query_id"] for q in _next(client, ALICE, 5)}


def test_skip_posts_the_next_best_pixel_once(client: TestClient, project: Path) -> None:
    q = _next(client, ALICE, 1)[0]
    with Store.open(project) as store:
        alternates = store.query(q["query_id"]).alternates
    assert len(alternates) == 2
    r = client.post("/api/answer", json={"query_id": q["query_id"], "answer": "skip"}, headers=ALICE).json()
    rep = r["replacement"]
    assert r["query"]["state"] == "skipped"
    assert (rep["instance_id"], rep["x"], rep["y"]) == (q["instance_id"], *alternates[0])
    assert rep["replaces"] == q["query_id"]
    # Skipping the same question again changes nothing: one skip, one replacement.
    again = client.post("/api/answer", json={"query_id": q["query_id"], "answer": "skip"}, headers=BOB)
    assert again.status_code == 409 and again.json()["stored"]["answer"] == "skip"
    with Store.open(project) as store:
        chain = [x for x in store.queries(step=1) if x.instance_id == q["instance_id"]]
        assert [(x.state, (x.x, x.y)) for x in chain] == [("skipped", (q["x"], q["y"])), ("open", alternates[0])]
        assert q["instance_id"] not in store.points()  # a skip stores no point
    r2 = client.post("/api/answer", json={"query_id": rep["query_id"], "answer": "skip"}, headers=ALICE).json()
    assert (r2["replacement"]["x"], r2["replacement"]["y"]) == alternates[1]
    r3 = client.post("/api/answer", json={"query_id": r2["replacement"]["query_id"], "answer": "skip"},
                     headers=ALICE).json()
    assert r3["replacement"] is None and r3["query"]["state"] == "skipped"  # no alternate left: closed as skipped
    with Store.open(project) as store:
        assert not [x for x in store.open_queries(1) if x.instance_id == q["instance_id"]]
        assert store.queue_progress().skipped == 1  # one object settled as "can't tell"


def test_undo_reopens_own_last_answers_in_turn(client: TestClient, project: Path) -> None:
    q1, q2 = _next(client, ALICE, 2)
    (qb,) = _next(client, BOB, 1)
    for q, who, ans in ((q1, ALICE, "yes"), (q2, ALICE, "skip"), (qb, BOB, "no")):
        assert _answer(client, q["query_id"], ans, who).status_code == 200
    r = client.post("/api/undo", headers=ALICE)
    assert r.status_code == 200
    assert r.json()["question"]["query_id"] == q2["query_id"]
    removed = r.json()["removed"]
    assert removed is not None  # the replacement of the skip is gone with it
    r = client.post("/api/undo", headers=ALICE)
    assert r.json()["question"]["query_id"] == q1["query_id"] and r.json()["removed"] is None
    assert client.post("/api/undo", headers=ALICE).status_code == 404
    with Store.open(project) as store:
        assert store.query(q1["query_id"]).state == "open" and store.query(q2["query_id"]).state == "open"
        assert q1["instance_id"] not in store.points()
        assert store.query(qb["query_id"]).answer == "no"  # bob's answer is bob's to undo
        with pytest.raises(StoreError, match="no query"):
            store.query(removed)
    # the reopened questions are leased back to alice
    assert {q1["query_id"], q2["query_id"]} <= {q["query_id"] for q in _next(client, ALICE, 5)}


def test_undo_is_refused_once_the_loop_consumed_the_step(client: TestClient, project: Path) -> None:
    with Store.open(project) as store:
        for q in store.open_queries(1):
            store.answer_query(q.id, "yes", "alice")
        queue.consume(store, 1, phase="answer_1", payload={"answered": 1})
        assert store.phase("answer_1") == {"answered": 1}
    r = client.post("/api/undo", headers=ALICE)
    assert r.status_code == 409
    assert "consumed" in r.json()["detail"]


def test_progress_counts_settled_and_open_questions(client: TestClient) -> None:
    total = client.get("/api/progress", headers=ALICE).json()["open"]
    q1, q2 = _next(client, ALICE, 2)
    client.post("/api/answer", json={"query_id": q1["query_id"], "answer": "yes"}, headers=ALICE)
    client.post("/api/answer", json={"query_id": q2["query_id"], "answer": "skip"}, headers=ALICE)
    p = client.get("/api/progress", headers=ALICE).json()
    assert (p["done"], p["open"], p["total"], p["answered"], p["skipped"]) == (1, total - 1, total, 1, 0)
    assert p["per_minute"] > 0 and p["eta_s"] > 0


def test_pixel_answered_elsewhere_meanwhile_is_409(client: TestClient, project: Path) -> None:
    q = _next(client, ALICE, 1)[0]
    with Store.open(project) as store:
        store.add_points([PointAnswer(q["instance_id"], q["x"], q["y"], 1, 1, "imported", "import")])
    r = client.post("/api/answer", json={"query_id": q["query_id"], "answer": "no"}, headers=ALICE)
    assert r.status_code == 409 and "already answered" in r.json()["detail"]


# --------------------------------------------------------------------------------------- store + queue


def test_version_1_store_is_migrated_in_place(tmp_path: Path, base: Path) -> None:
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db)
    conn.executescript(_SCHEMA)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO instances VALUES (7, 1, 1, 2.0, 2.0, 10.0, 10.0, 64, 64, 'train')")
    conn.execute("INSERT INTO points(instance_id, step, x, y, label, strategy, annotator, answered_at) "
                 "VALUES (7, 0, 3, 3, 1, 'random', 'oracle', 1.0)")
    conn.execute("INSERT INTO phases VALUES ('p0', 1.0, '{}')")
    conn.commit()
    conn.close()
    with Store.open(db) as store:
        assert store.point_count() == 1 and store.phase("p0") == {}
        assert store.post_queries(1, [Pick(7, 5, 5)], "entropy", {7: [(5, 5), (6, 5)]}) == 1
        assert store.open_queries()[0].alternates == ((6, 5),)  # the chosen pixel is dropped from its alternates
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()


def test_post_is_idempotent_and_refuses_different_or_bad_questions(project: Path) -> None:
    assert post_step(project, 1) > 0
    assert post_step(project, 1) == 0
    with Store.open(project) as store:
        n = len(store.queries(step=1))
        inst = store.instances("train")[0]
        w = inst.omega
        with pytest.raises(StoreError, match="already has"):
            store.post_queries(1, [Pick(inst.id, w.x0, w.y0)], "entropy")
        with pytest.raises(StoreError, match="outside the instance's Ω"):
            store.post_queries(2, [Pick(inst.id, w.x1, w.y0)], "entropy")
        with pytest.raises(StoreError, match="alternate pixel .* outside"):
            store.post_queries(2, [Pick(inst.id, w.x0, w.y0)], "entropy", {inst.id: [(w.x1 + 5, w.y0)]})
        with pytest.raises(StoreError, match="asked twice in step 2"):
            store.post_queries(2, [Pick(inst.id, w.x0, w.y0), Pick(inst.id, w.x0, w.y0)], "entropy")
        with pytest.raises(StoreError, match="unknown instance"):
            store.post_queries(2, [Pick(424242, 1, 1)], "entropy")
        assert len(store.queries()) == n and not store.step_posted(2)  # refusals post nothing
        store.answer_query(store.open_queries(1)[0].id, "yes", "alice")
        answered = store.answers_for_step(1)[0]
        with pytest.raises(StoreError, match="already answered"):
            store.post_queries(3, [Pick(answered.instance_id, answered.x, answered.y)], "entropy")


def test_an_instance_may_get_several_pixels_in_one_step(project: Path) -> None:
    """A rejected mask's extra points: distinct pixels of one instance in one step, none another's alternate."""
    with Store.open(project) as store:
        inst = store.instances("train")[0]
        w = inst.omega
        a, b, c = (w.x0, w.y0), (w.x0 + 1, w.y0), (w.x0, w.y0 + 1)
        assert store.post_queries(5, [Pick(inst.id, *a), Pick(inst.id, *b)], "entropy", {inst.id: [b, c]}) == 2
        qs = {(q.x, q.y): q for q in store.open_queries(5)}
        assert set(qs) == {a, b}
        assert qs[a].alternates == (c,) and qs[b].alternates == (c,)  # b is asked already, never an alternate
        store.answer_query(qs[a].id, "skip", "alice")
        replacement = [q for q in store.open_queries(5) if q.replaces == qs[a].id]
        assert [(q.x, q.y) for q in replacement] == [c]


def test_collect_waits_until_no_question_is_open(project: Path) -> None:
    post_step(project, 1, alternates=1)
    with Store.open(project) as store:
        qs = store.open_queries(1)
        assert queue.collect(store, 1) is None and queue.collect(store, 2) is None
        assert queue.open_count(store, 1) == len(qs)
        with pytest.raises(StoreError, match="still has"):
            queue.consume(store, 1)
        for i, q in enumerate(qs):
            store.answer_query(q.id, ("yes", "no", "skip")[i % 3], "alice")
        for q in store.open_queries(1):  # the replacements of the skips
            store.answer_query(q.id, "skip", "bob")
        assert store.step_complete(1)
        answers = queue.collect(store, 1)
        assert len(answers) == sum(1 for i in range(len(qs)) if i % 3 != 2)
        assert {(a.label, a.annotator, a.step, a.strategy) for a in answers} == {(1, "alice", 1, "entropy"),
                                                                                   (0, "alice", 1, "entropy")}
        queue.consume(store, 1, "answer_1", {"answered": len(answers)})
        queue.consume(store, 1, "answer_1", {"answered": len(answers)})  # idempotent
        assert store.step_consumed(1)
        with pytest.raises(StepConsumed):
            store.undo_last("alice")
        with pytest.raises(NothingToUndo):
            store.undo_last("carol")


def test_answer_queries_is_all_or_nothing(project: Path) -> None:
    post_step(project, 1)
    with Store.open(project) as store:
        q1, q2 = store.open_queries(1)[:2]
        with pytest.raises(StoreError, match="item 1:.*not one of"):
            store.answer_queries([(q1.id, "yes"), (q2.id, "perhaps")], "import")
        assert store.query(q1.id).state == "open" and store.point_count() == 0
        store.answer_queries([(q1.id, "yes")], "import")
        assert store.answer_queries([(q1.id, "yes"), (q2.id, "no")], "import")[0].query.id == q2.id
        with pytest.raises(QueryClosed):
            store.answer_query(q1.id, "no", "bob")


# --------------------------------------------------------------------------------------- ranked_points


def _candidate(k: int = 2, seed: int = 0, labelled: tuple = ()) -> Candidate:
    win = PixelWindow(3, 2, 9, 7)
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(k, win.height, win.width, generator=g)
    probs[:, 0, :2] = 0.5  # an exact tie of the highest entropy
    gt = (torch.rand(win.height, win.width, generator=g) > 0.5).float()
    return Candidate(probs, win, labelled_mask(win, labelled), gt, instance_id=5)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_ranked_points_start_with_the_strategy_choice(name: str) -> None:
    for seed in range(5):
        for k in (0, 1, 3):
            cand = _candidate(k, seed, labelled=((4, 2), (8, 6)))
            ranked = ranked_points(cand, name, torch.Generator().manual_seed(seed), 6)
            assert ranked[0] == get_strategy(name)(cand, torch.Generator().manual_seed(seed))
            assert len(set(ranked)) == 6
            assert all(cand.window.contains(x, y) and (x, y) not in ((4, 2), (8, 6)) for x, y in ranked)


def test_ranked_points_follow_the_score() -> None:
    from apis.selection.uncertainty import entropy_of_mean

    cand = _candidate(3, 1)
    ranked = ranked_points(cand, "entropy", torch.Generator().manual_seed(0), 10)
    h = entropy_of_mean(cand.probs)
    scores = [float(h[y - cand.window.y0, x - cand.window.x0]) for x, y in ranked]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(float(h.max()))
    low = ranked_points(cand, "lowest_entropy", torch.Generator().manual_seed(0), 10)
    low_scores = [float(h[y - cand.window.y0, x - cand.window.x0]) for x, y in low]
    assert low_scores == sorted(low_scores)


def test_ranked_points_run_out_with_omega() -> None:
    win = PixelWindow(0, 0, 2, 1)
    cand = Candidate(torch.rand(1, 1, 2), win, labelled_mask(win, [(0, 0)]))
    assert ranked_points(cand, "entropy", torch.Generator(), 5) == [(1, 0)]
    full = Candidate(torch.rand(1, 1, 2), win, labelled_mask(win, [(0, 0), (1, 0)]))
    with pytest.raises(OmegaExhausted):
        ranked_points(full, "entropy", torch.Generator(), 5)
    with pytest.raises(ValueError, match="at least 1"):
        ranked_points(cand, "entropy", torch.Generator(), 0)


# --------------------------------------------------------------------------------------- tokens


def test_tokens_from_options_and_files(tmp_path: Path) -> None:
    assert parse_tokens(["ann=abcdefghijklmnop"]) == {"abcdefghijklmnop": "ann"}
    with pytest.raises(TokenError, match="NAME=TOKEN"):
        parse_tokens(["no-equals-sign"])
    with pytest.raises(TokenError, match="at least 12"):
        parse_tokens(["ann=short"])
    with pytest.raises(TokenError, match="same token"):
        parse_tokens(["a=abcdefghijklmnop", "b=abcdefghijklmnop"])
    f = tmp_path / "tokens.txt"
    f.write_text("# team\nann=abcdefghijklmnop\n\nben=qrstuvwxyz012345\nbad line\n")
    with pytest.raises(TokenError, match="tokens.txt:5:"):
        read_tokens_file(f)
    f.write_text("# team\nann=abcdefghijklmnop\n\nben=qrstuvwxyz012345\n")
    people = load_annotators(["cy=zyxwvutsrqponmlk"], f)
    assert [n for n, _ in people.items()] == ["ann", "ben", "cy"]
    assert people.name("qrstuvwxyz012345") == "ben" and people.name("qrstuvwxyz01234") is None
    (name, token), = load_annotators().items()  # none given: one random token
    assert name == "annotator" and len(token) >= 24


# --------------------------------------------------------------------------------------- exchange


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_then_import_answers(project: Path, tmp_path: Path, suffix: str) -> None:
    post_step(project, 1, alternates=1)
    proj = Project.load(project)
    out = tmp_path / f"open{suffix}"
    with Store.open(project) as store:
        n = export_open(store, proj, out)
        assert n == len(store.open_queries())
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
        assert tuple(rows[0]) == COLUMNS
        assert rows[0]["file_name"].startswith("images/") and rows[0]["answer"] == ""
        rows[0]["answer"], rows[1]["answer"], rows[2]["answer"] = "yes", " No ", "skip"
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    else:
        data = json.loads(out.read_text())
        rows = data["questions"]
        assert tuple(rows[0]) == COLUMNS and rows[0]["answer"] is None
        rows[0]["answer"], rows[1]["answer"], rows[2]["answer"] = "yes", "no", "skip"
        out.write_text(json.dumps(data))
    with Store.open(project) as store:
        s = import_answers(store, out, "field-team")
        assert (s.answered, s.skipped, s.replaced, s.unchanged, s.left_open) == (2, 1, 1, 0, n - 3)
        first = store.query(int(rows[0]["query_id"]))
        assert first.answer == "yes" and first.annotator == "field-team"
        assert store.query(int(rows[1]["query_id"])).answer == "no"
        s = import_answers(store, out, "field-team")  # a second import changes nothing
        assert (s.answered, s.unchanged) == (0, 3)
        assert len(store.open_queries()) == n - 3 + 1  # the skip's replacement is open


def test_import_refuses_the_whole_file_naming_row_and_fix(project: Path, tmp_path: Path) -> None:
    post_step(project, 1)
    proj = Project.load(project)
    out = tmp_path / "open.csv"
    with Store.open(project) as store:
        export_open(store, proj, out)
        rows = list(csv.DictReader(out.open()))
        rows[0]["answer"] = "yes"
        rows[1]["answer"] = "maybe"
        rows[2]["answer"] = "no"
        rows[2]["x"] = str(int(rows[2]["x"]) + 1)
        rows[3]["query_id"] = "12.5"
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        with pytest.raises(ExchangeError) as err:
            import_answers(store, out)
        message = str(err.value)
        assert str(out) in message and "nothing was imported" in message
        assert "line 3: answer 'maybe' is not yes, no or skip; write one of them" in message
        assert "line 4: query" in message and "do not edit query_id, instance_id, x or y" in message
        assert "line 5: query_id '12.5' is not an integer" in message
        assert store.point_count() == 0 and not [q for q in store.queries() if q.state != "open"]
        with pytest.raises(ExchangeError, match=r"name the file \.csv or \.json"):
            import_answers(store, tmp_path / "answers.txt")
        (tmp_path / "bad.json").write_text('{"questions": [{"query_id": 1, "answer": "yes"}, 7]}')
        with pytest.raises(ExchangeError, match="question 2: 7 is not an object"):
            import_answers(store, tmp_path / "bad.json")


def test_queue_cli_export_and_import(project: Path, tmp_path: Path) -> None:
    post_step(project, 1)
    runner = CliRunner()
    out = tmp_path / "q.json"
    r = runner.invoke(cli_app, ["queue", "export", str(project), str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    for row in data["questions"]:
        row["answer"] = "yes"
    out.write_text(json.dumps(data))
    r = runner.invoke(cli_app, ["queue", "import", str(project), str(out), "--annotator", "carol"])
    assert r.exit_code == 0, r.output
    with Store.open(project) as store:
        assert store.step_complete(1)
        assert {a.annotator for a in store.answers_for_step(1)} == {"carol"}
    data["questions"][0]["answer"] = "no"
    out.write_text(json.dumps(data))
    r = runner.invoke(cli_app, ["queue", "import", str(project), str(out)])
    assert r.exit_code == 2 and "already answered" in r.output


def test_serve_cli_refuses_bad_tokens_and_folders(project: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli_app, ["serve", str(project), "--token", "ann=short"])
    assert r.exit_code == 2 and "at least 12" in r.output
    r = runner.invoke(cli_app, ["serve", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "apis init" in r.output


def test_answer_each_commits_a_group_refusing_items_on_their_own(project: Path) -> None:
    post_step(project, 1, alternates=1)
    with Store.open(project) as store:
        q1, q2, q3 = store.open_queries(1)[:3]
        results = store.answer_each([(q1.id, "yes", "alice"), (q1.id, "no", "bob"), (99999, "yes", "bob"),
                                     (q2.id, "skip", "bob"), (q3.id, "perhaps", "bob")])
        assert results[0].query.answer == "yes"
        assert isinstance(results[1], QueryClosed) and results[1].stored["annotator"] == "alice"
        assert "no query 99999" in str(results[2])
        assert results[3].replacement is not None
        assert isinstance(results[4], StoreError) and store.query(q3.id).state == "open"
        assert store.point_count() == 1


def test_a_writer_that_cannot_open_the_store_fails_answers_at_once(tmp_path: Path) -> None:
    import threading
    import time

    from apis.serve.commit import GroupCommitter

    (tmp_path / "file").write_text("not a folder")
    committer = GroupCommitter(tmp_path / "file" / DB_NAME, threading.Lock())
    t0 = time.monotonic()
    for _ in range(2):  # the waiting answer and any later one get the error, not a 60 s wait
        with pytest.raises(OSError):
            committer.answer(1, "yes", "alice", timeout_s=30)
    assert time.monotonic() - t0 < 10
