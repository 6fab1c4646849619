"""The real server (``apis serve`` in a subprocess, loopback only) under 20 concurrent annotators, and killed
(mid-answers and mid-review).

The question count is :data:`QUESTIONS` (env ``APIS_LOAD_QUESTIONS``, default 10,000); the whole load test is
bounded by :data:`DEADLINE_S` (env ``APIS_LOAD_DEADLINE_S``).
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from serve_project import Server, make_project, post_step
from test_serve_review import write_review_export

from apis.store import Store

QUESTIONS = int(os.environ.get("APIS_LOAD_QUESTIONS", "10000"))
CLIENTS = 20
DEADLINE_S = float(os.environ.get("APIS_LOAD_DEADLINE_S", "300"))
BATCH = 5  # questions leased per /api/next


def _tokens(n: int) -> dict[str, str]:
    return {f"token-of-annotator-{i:02d}-xyz": f"a{i:02d}" for i in range(n)}


def _answer_for(q: dict) -> str:
    """Deterministic answers; one question in 97 is "can't tell" (its replacement is answered yes)."""
    if q["replaces"] is None and q["query_id"] % 97 == 0:
        return "skip"
    return "yes" if q["query_id"] % 2 else "no"


def _check_store(project: Path, acked: dict[int, tuple[str, str]]) -> None:
    """Every acknowledged answer is stored as acknowledged; every closed query and its point agree."""
    with Store.open(project) as store:
        queries = {q.id: q for q in store.queries()}
        points = {(i, p.x, p.y): p for i, ps in store.points().items() for p in ps}
    lost = [qid for qid, (who, answer) in acked.items()
            if queries[qid].answer != answer or queries[qid].annotator != who]
    assert not lost, f"{len(lost)} acknowledged answers are not in the store, e.g. {lost[:5]}"
    for q in queries.values():
        point = points.get((q.instance_id, q.x, q.y))
        if q.state == "answered":
            assert point is not None and point.label == (q.answer == "yes") and point.annotator == q.annotator
        else:
            assert point is None, f"query {q.id} is {q.state} but its pixel has a point"


def test_twenty_annotators_answer_every_question_once(tmp_path: Path) -> None:
    started = time.monotonic()
    probe = make_project(tmp_path / "probe")
    with Store.open(probe) as store:
        per_copy = len(store.instances())
    project = make_project(tmp_path, copies=math.ceil(QUESTIONS / per_copy))
    assert post_step(project, 1, alternates=1, limit=QUESTIONS) == QUESTIONS
    tokens = _tokens(CLIENTS)
    server = Server(project, tokens)
    acked: dict[int, tuple[str, str]] = {}
    twice: list[int] = []
    conflicts = Counter()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = started + DEADLINE_S

    def annotator(token: str, name: str) -> None:
        mine: list[tuple[int, str, float]] = []
        try:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                while time.monotonic() < deadline:
                    questions = c.get("/api/next", params={"n": BATCH}).raise_for_status().json()["questions"]
                    if not questions:
                        if c.get("/api/progress").raise_for_status().json()["open"] == 0:
                            break
                        time.sleep(0.02)  # the rest are leased to others, or replacements are on their way
                        continue
                    for q in questions:
                        answer = _answer_for(q)
                        t0 = time.perf_counter()
                        r = c.post("/api/answer", json={"query_id": q["query_id"], "answer": answer})
                        dt = time.perf_counter() - t0
                        if r.status_code == 200:
                            mine.append((q["query_id"], answer, dt))
                        elif r.status_code == 409:
                            conflicts[name] += 1
                        else:
                            errors.append(f"{name}: {r.status_code} {r.text}")
        except Exception as err:  # noqa: BLE001 - reported below with the client's name
            errors.append(f"{name}: {err!r}")
        with lock:
            for qid, answer, dt in mine:
                if qid in acked:
                    twice.append(qid)
                acked[qid] = (name, answer)
                latencies.append(dt)

    threads = [threading.Thread(target=annotator, args=item) for item in tokens.items()]
    t0 = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic() + 30))
        elapsed = time.perf_counter() - t0
    finally:
        server.stop()
    assert not errors, errors[:5]
    assert time.monotonic() < deadline, f"the load test ran past its {DEADLINE_S:.0f} s bound"

    with Store.open(project) as store:
        queries = store.queries()
        skipped = sum(q.state == "skipped" for q in queries)
        assert not store.open_queries(), "questions left open"
        answered = store.answers_for_step(1)
    lats = sorted(latencies)
    p50 = lats[len(lats) // 2] * 1000
    p99 = lats[min(len(lats) - 1, math.ceil(0.99 * len(lats)) - 1)] * 1000
    print(f"\nload: {CLIENTS} annotators, {len(acked)} answers ({len(answered)} points, {skipped} can't-tell) to "
          f"{QUESTIONS} questions in {elapsed:.1f} s = {len(acked) / elapsed:.0f} answers/s; answer latency "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lats[-1] * 1000:.1f} ms, mean "
          f"{statistics.mean(lats) * 1000:.1f} ms; 409s {sum(conflicts.values())}")
    assert twice == [], f"{len(twice)} questions acknowledged twice"
    assert len(acked) == len(queries) == QUESTIONS + skipped  # each skip posted one replacement, answered too
    assert len(answered) == QUESTIONS  # every object got exactly one point
    _check_store(project, acked)


def test_sigkill_loses_no_acknowledged_answer_and_frees_every_lease(tmp_path: Path) -> None:
    project = make_project(tmp_path, copies=20)
    post_step(project, 1, alternates=1)
    tokens = _tokens(2)
    (tok_a, name_a), (tok_b, _) = tokens.items()
    server = Server(project, tokens)
    acked: dict[int, tuple[str, str]] = {}
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok_b}"}, timeout=10) as b:
            held = [q["query_id"] for q in b.get("/api/next", params={"n": 5}).json()["questions"]]
        assert len(held) == 5

        def stream() -> None:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok_a}"}, timeout=10) as c:
                try:
                    while True:
                        for q in c.get("/api/next", params={"n": 2}).json()["questions"]:
                            answer = _answer_for(q)
                            r = c.post("/api/answer", json={"query_id": q["query_id"], "answer": answer})
                            if r.status_code == 200:
                                acked[q["query_id"]] = (name_a, answer)
                except httpx.HTTPError:
                    return  # the server is gone

        thread = threading.Thread(target=stream)
        thread.start()
        while len(acked) < 60 and thread.is_alive():
            time.sleep(0.005)
        server.kill()  # mid-stream: requests are in flight
        thread.join(timeout=30)
    finally:
        server.kill()
    assert len(acked) >= 60
    assert not set(acked) & set(held)
    _check_store(project, acked)

    server = Server(project, tokens)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok_a}"}, timeout=10) as a:
            # Nothing stays leased after a restart: the questions b held are the oldest open ones again.
            again = [q["query_id"] for q in a.get("/api/next", params={"n": 5}).json()["questions"]]
            assert again == held
            assert a.post("/api/answer", json={"query_id": held[0], "answer": "yes"}).status_code == 200
            assert a.get("/api/progress").json()["leased"] == 4
    finally:
        server.stop()


def _review_server(project: Path, tokens: dict[str, str], step: int) -> Server:
    """``apis serve PROJECT --review-step STEP``."""
    return Server(project, tokens, args=["--review-step", str(step)])


def _decision_for(instance_id: int) -> str:
    return ("accept", "reject", "skip")[instance_id % 3]


def test_sigkill_mid_review_loses_no_acknowledged_decision(tmp_path: Path) -> None:
    project = make_project(tmp_path, copies=10)
    write_review_export(project, 1)
    tokens = _tokens(2)
    (tok_a, name_a), (tok_b, _) = tokens.items()
    server = _review_server(project, tokens, 1)
    acked: dict[int, tuple[str, str]] = {}  # instance → (reviewer, decision) standing after the last 200
    undone: set[int] = set()  # instances whose first decision was withdrawn (undo answered 200)
    unsure: set[int] = set()  # an undo cut off by the kill: applied or not
    errors: list[str] = []
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok_b}"}, timeout=10) as b:
            held = [it["instance_id"] for it in b.get("/api/review/next", params={"n": 3}).json()["items"]]
        assert len(held) == 3

        def stream() -> None:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok_a}"}, timeout=10) as c:

                def decide(iid: int) -> None:
                    r = c.post("/api/review/decide", json={"instance_id": iid, "decision": _decision_for(iid)})
                    if r.status_code != 200:
                        raise RuntimeError(f"decide {iid}: {r.status_code} {r.text}")
                    acked[iid] = (name_a, _decision_for(iid))

                try:
                    while items := c.get("/api/review/next", params={"n": 2}).json()["items"]:
                        for it in items:
                            decide(it["instance_id"])
                            if len(acked) % 7 == 0:  # withdraw it, then decide again
                                unsure.add(it["instance_id"])
                                r = c.post("/api/review/undo")
                                if r.status_code != 200 or r.json()["undone"]["instance_id"] != it["instance_id"]:
                                    raise RuntimeError(f"undo: {r.status_code} {r.text}")
                                del acked[it["instance_id"]]
                                undone.add(it["instance_id"])
                                unsure.discard(it["instance_id"])
                                decide(it["instance_id"])
                except httpx.HTTPError:
                    return  # the server is gone
                except Exception as err:  # noqa: BLE001 - reported by the test
                    errors.append(repr(err))

        thread = threading.Thread(target=stream)
        thread.start()
        while len(acked) < 60 and thread.is_alive():
            time.sleep(0.005)
        server.kill()  # mid-stream: requests are in flight
        thread.join(timeout=30)
    finally:
        server.kill()
    assert not errors, errors
    assert len(acked) >= 60
    assert not set(acked) & set(held)
    with Store.open(project) as store:
        log = store.review_log(1)
        standing = store.reviews()
    for iid, (who, decision) in acked.items():
        if iid in unsure:
            continue
        rows = [d for d in log if d.instance_id == iid and d.undone_at is None]
        assert rows and (rows[-1].reviewer, rows[-1].decision) == (who, decision), f"instance {iid}: lost"
        if decision != "skip":
            assert standing[iid].decision == decision
    for iid in undone:
        assert [d for d in log if d.instance_id == iid][0].undone_at is not None, f"instance {iid}: undo lost"
    assert set(standing) - set(acked) <= unsure | {log[-1].instance_id}  # stored, its reply cut off by the kill

    server = _review_server(project, tokens, 1)
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok_b}"}, timeout=10) as b:
            # Nothing stays leased after a restart, and nothing decided is offered again.
            again = [it["instance_id"] for it in b.get("/api/review/next", params={"n": 5}).json()["items"]]
            assert again[:3] == held and not set(again) & set(standing)
            progress = b.get("/api/review/progress").json()
            assert progress["reviewed"] == len(standing) and progress["leased"] == 5
    finally:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q", "-s"]))
