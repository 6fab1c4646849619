"""The labelling server: an HTTP API over the project's question queue, and the page that uses it.

Every ``/api`` route needs a token, sent as ``Authorization: Bearer TOKEN`` or as the cookie that
``GET /login?token=TOKEN`` sets; a missing or wrong token is 401. The page itself (``/``, ``/static/``) is
public: it holds no data.

* ``GET /api/me`` — the caller's annotator name, the lease time (seconds) and the review step (null: no review).
* ``GET /api/next?n=2`` — up to ``n`` (1..5) open questions leased to the caller: those it holds first
  (their leases renewed), then the oldest free ones. A lease lasts ``lease_s`` seconds; unanswered, the
  question returns to the queue.
* ``POST /api/answer`` ``{"query_id": int, "answer": "yes" | "no" | "skip"}`` — stored (a point, the query
  closed) and committed before the reply. 404 unknown query; 409 already answered, with the stored answer as
  ``stored`` in the body; 422 a malformed body.
* ``POST /api/undo`` — reopens the caller's last answer (its point deleted) and leases it back; 404 nothing
  to undo; 409 when the loop has consumed the step.
* ``POST /api/release`` ``{"query_ids": [...]}`` — hands the caller's leases back (the page is closing).
* ``GET /api/progress`` — settled and open questions, answers per minute, estimated seconds left.
* ``GET /api/images/{image_id}`` — the file of a dataset image, by id only; the server never takes a path.

With a review step S (``apis serve PROJECT --review-step S``, :mod:`apis.serve.review`) the page ``/review`` shows
M(S)'s exported masks, and (404 without a review step):

* ``GET /api/review/next?n=3`` — up to ``n`` (1..5) objects to review, leased to the caller like questions: those
  it holds first, then the lowest ``apis_score`` that nobody holds, leaving out objects settled (accepted at any
  step, or decided at a step ≥ S) and those the caller skipped at S.
* ``POST /api/review/decide`` ``{"instance_id": int, "decision": "accept" | "reject" | "skip"}`` — stored with the
  caller's name, S and the exported mask (the server's own copy: a client never sends a mask) and committed
  before the reply. 404 an object not in the export; 409 when a decision about it stands already (``stored`` in
  the body; the same decision sent again is 200) or to accept an object the export has no mask for.
* ``POST /api/review/undo`` — withdraws the caller's last decision (a skip too) and leases its object back; 404
  nothing to undo; 409 when the loop has acted on it or someone decided about the object since.
* ``POST /api/review/release`` ``{"instance_ids": [...]}`` — hands the caller's review leases back.
* ``GET /api/review/progress`` — the pool's objects reviewed, remaining, accepted (and their share), rejected.

An object to review is json: ``instance_id``, ``step``, ``image_id``, ``category``, ``box`` (xyxy, as for
questions), ``width``, ``height``, ``image_url``, ``apis_score``, ``apis_source``, ``points_agree``, ``area``,
``crop`` = [x0, y0, x1, y1] (the integer pixel window shown: columns x0..x1-1, rows y0..y1-1), ``mask`` (the
exported mask over the crop: row-major run lengths starting with pixels off the object; null without a mask),
``points`` ([{x, y, label}]: the answers of steps ≤ S, integer pixels, label 1 = yes), ``previous`` (the standing
decision of an earlier step, or null) and ``lease_s``.

A question is json: ``query_id``, ``step``, ``instance_id``, ``image_id``, ``category``, ``box`` = [x0, y0, x1,
y1] (xyxy in original-image pixels; pixel (i, j) covers [i, i+1) × [j, j+1)), ``x``, ``y`` (the integer pixel
asked about: column, row), ``width``, ``height`` (of the image), ``image_url``, ``lease_s``.

A project started from images alone (``apis init PROJECT --images DIR``) also has the box page ``/boxes``, where
people draw the boxes (its routes: :mod:`apis.serve.boxes`); ``/`` opens it while the boxes are not the pool yet.

Each worker thread has its own SQLite connection. Answers are committed in groups by one writer thread
(:mod:`apis.serve.commit`): one disk sync for all answers that arrived together, each reply sent after its
answer's commit. Writes go through one lock, so they never wait on SQLite's busy handler. A review decision is
its own transaction (:meth:`apis.store.Store.add_review`), committed by the request's thread under that lock.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime, and ``Who``
# below is local to create_app.
import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import MutableHeaders

from apis.serve.auth import Annotators
from apis.serve.boxes import add_box_routes, box_s_of, waiting_for_boxes
from apis.serve.commit import CommitTimeout, GroupCommitter
from apis.serve.leases import LeaseBook
from apis.serve.project import Project
from apis.serve.review import ReviewObject, ReviewSet, settles
from apis.store import (
    NothingToUndo,
    QueryClosed,
    QueryNotFound,
    ReviewDecision,
    Store,
    StoredInstance,
    StoredQuery,
    StoreError,
    UndoRefused,
)

STATIC = Path(__file__).parent / "static"
COOKIE = "apis_token"
COOKIE_MAX_AGE_S = 7 * 24 * 3600
DEFAULT_LEASE_S = 120.0
MAX_BATCH = 5
_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
_LOGIN_FAILED = """<!doctype html><meta charset="utf-8"><title>apis: wrong token</title>
<link rel="stylesheet" href="/static/style.css"><main class="message"><h1>Wrong or expired access token</h1>
<p>Open the link that <code>apis serve</code> printed, or ask whoever runs it for your token.</p></main>"""
_REVIEW_OFF = """<!doctype html><meta charset="utf-8"><title>apis: no review</title>
<link rel="stylesheet" href="/static/style.css"><main class="message"><h1>The review page is off</h1>
<p>Start the server with <code>apis serve PROJECT --review-step S</code> to review the masks of step S.
The <a href="/">point questions</a> are open.</p></main>"""
_PAST = {"accept": "accepted", "reject": "rejected", "skip": "skipped"}


class _Body(BaseModel):
    """A request body: an unknown field is a 422, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# The ids a page gives back when it is left (at most 50, as the pages send).
_ReleasedIds = Annotated[list[Annotated[int, Field(strict=True)]], Field(max_length=50)]


class AnswerIn(_Body):
    """Body of ``POST /api/answer``."""

    query_id: Annotated[int, Field(strict=True, ge=1)]
    answer: Literal["yes", "no", "skip"]


class ReleaseIn(_Body):
    """Body of ``POST /api/release``."""

    query_ids: _ReleasedIds


class DecisionIn(_Body):
    """Body of ``POST /api/review/decide``."""

    instance_id: Annotated[int, Field(strict=True, ge=0)]
    decision: Literal["accept", "reject", "skip"]


class ReviewReleaseIn(_Body):
    """Body of ``POST /api/review/release``."""

    instance_ids: _ReleasedIds


class _SecurityHeaders:
    """ASGI middleware: a strict content policy on every response, and no caching of API answers."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = _CSP
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if api and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Stores:
    """One :class:`Store` (one SQLite connection) per worker thread."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._local = threading.local()

    def get(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store.open(self.db)
        return store


def create_app(
    project: Project,
    annotators: Annotators,
    lease_s: float = DEFAULT_LEASE_S,
    clock: Callable[[], float] = time.monotonic,
    review: ReviewSet | None = None,
) -> FastAPI:
    """The FastAPI app serving ``project`` to ``annotators``; ``clock`` (seconds) times the leases. With
    ``review`` (the export of one step, :meth:`ReviewSet.load`) the review page and its routes are on."""
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        committer.close()

    app = FastAPI(title="apis labelling", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    stores = _Stores(project.db)
    book = LeaseBook(lease_s, clock)
    write_lock = threading.Lock()
    committer = GroupCommitter(project.db, write_lock)
    review_book = LeaseBook(lease_s, clock)  # keyed by instance id
    review_lock = threading.Lock()  # a decision's check and write, atomic among this server's reviewers
    with Store.open(project.db) as store:
        instances: dict[int, StoredInstance] = {i.id: i for i in store.instances()}
        # The answers M(S)'s masks were forced to: steps ≤ S are closed by the time M(S) is exported.
        review_points = {} if review is None else store.points(max_step=review.step)
    app.state.leases = book
    app.state.review_leases = review_book

    async def who(request: Request) -> str:  # async: no thread hop for a dict look-up
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(COOKIE)
        name = annotators.name(token)
        if name is None:
            raise HTTPException(401, "missing or wrong access token: open the link `apis serve` printed, "
                                     "or send the header Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})
        return name

    Who = Annotated[str, Depends(who)]

    def instance(instance_id: int) -> StoredInstance:
        if instance_id not in instances:  # added after the server started
            instances.update({i.id: i for i in stores.get().instances()})
        return instances[instance_id]

    def question(q: StoredQuery) -> dict:
        inst = instance(q.instance_id)
        return {
            "query_id": q.id, "step": q.step, "instance_id": q.instance_id, "image_id": q.image_id,
            "category": project.category_name(q.category_id), "box": list(inst.box), "x": q.x, "y": q.y,
            "width": inst.width, "height": inst.height, "image_url": f"/api/images/{q.image_id}",
            "lease_s": book.lease_s, "replaces": q.replaces,
        }

    def reviewing() -> ReviewSet:
        if review is None:
            raise HTTPException(404, "the review page is off: start the server with `apis serve PROJECT "
                                     "--review-step S` to review the masks of step S")
        return review

    def review_item(obj: ReviewObject, standing: ReviewDecision | None) -> dict:
        c = obj.crop
        points = review_points.get(obj.instance_id, ())
        return {
            "instance_id": obj.instance_id, "step": review.step, "image_id": obj.image_id,
            "category": project.category_name(obj.category_id), "box": list(obj.box), "width": obj.width,
            "height": obj.height, "image_url": f"/api/images/{obj.image_id}", "apis_score": obj.score,
            "apis_source": obj.source, "points_agree": obj.points_agree, "area": obj.area,
            "crop": [c.x0, c.y0, c.x1, c.y1], "mask": obj.crop_runs(),
            "points": [{"x": p.x, "y": p.y, "label": p.label} for p in points],
            "previous": None if standing is None else standing.as_dict(), "lease_s": review_book.lease_s,
        }

    def skipped_by(store: Store, name: str, step: int) -> set[int]:
        return {d.instance_id for d in store.review_log(step, masks=False)
                if d.reviewer == name and d.decision == "skip" and d.undone_at is None}

    app.add_middleware(_SecurityHeaders)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        if waiting_for_boxes(stores.get()):  # no question can exist before the boxes do
            return RedirectResponse("/boxes", status_code=303)
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/boxes", include_in_schema=False)
    def boxes_page() -> FileResponse:
        return FileResponse(STATIC / "boxes.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/review", include_in_schema=False)
    def review_page() -> Response:
        if review is None:
            return HTMLResponse(_REVIEW_OFF, status_code=404)
        return FileResponse(STATIC / "review.html", headers={"Cache-Control": "no-cache"})

    @app.get("/login", include_in_schema=False)
    def login(token: str = "", page: Literal["", "review", "boxes"] = "") -> Response:
        if annotators.name(token) is None:
            return HTMLResponse(_LOGIN_FAILED, status_code=401)
        response = RedirectResponse(f"/{page}", status_code=303)
        response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/api/me")
    def me(name: Who) -> dict:
        return {"annotator": name, "lease_s": book.lease_s, "review_step": None if review is None else review.step}

    @app.get("/api/next")
    def next_questions(name: Who, n: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 2) -> dict:
        store = stores.get()
        with book.lock:
            held: list[StoredQuery] = []
            for qid in book.held_by(name):
                try:
                    q = store.query(qid)
                except QueryNotFound:
                    q = None
                if q is None or q.state != "open":
                    book.release(qid)
                elif len(held) < n:
                    held.append(q)
            fresh = store.open_queries(limit=n - len(held), exclude=book.active()) if len(held) < n else []
            for q in held + fresh:
                book.take(name, q.id)
        return {"questions": [question(q) for q in held + fresh]}

    @app.post("/api/answer")
    async def answer(body: AnswerIn, name: Who) -> Response:
        try:
            result = await committer.answer_async(body.query_id, body.answer, name)
        except CommitTimeout as err:
            raise HTTPException(503, f"{err}; ask again: a stored answer comes back as 409") from None
        except QueryNotFound as err:
            raise HTTPException(404, str(err)) from None
        except QueryClosed as err:
            book.release(body.query_id, name)
            return JSONResponse({"detail": str(err), "stored": err.stored}, status_code=409)
        except StoreError as err:  # e.g. the pixel was answered meanwhile through `apis points import`
            return JSONResponse({"detail": str(err)}, status_code=409)
        book.release(body.query_id)
        replacement = result.replacement
        return JSONResponse({"query": result.query.as_dict(),
                             "replacement": None if replacement is None else replacement.as_dict()})

    @app.post("/api/undo")
    def undo(name: Who) -> dict:
        store = stores.get()
        try:
            with write_lock:
                result = store.undo_last(name)
        except NothingToUndo as err:
            raise HTTPException(404, str(err)) from None
        except UndoRefused as err:
            raise HTTPException(409, str(err)) from None
        if result.removed is not None:
            book.release(result.removed)
        book.take(name, result.reopened.id)
        return {"question": question(result.reopened), "removed": result.removed}

    @app.post("/api/release")
    def release(body: ReleaseIn, name: Who) -> dict:
        for qid in body.query_ids:
            book.release(qid, name)
        return {"released": len(body.query_ids)}

    @app.get("/api/progress")
    def progress(name: Who) -> dict:
        p = stores.get().queue_progress()
        return {"steps": list(p.steps), "answered": p.answered, "skipped": p.skipped, "done": p.done,
                "open": p.open, "total": p.done + p.open, "per_minute": p.per_minute, "eta_s": p.eta_s,
                "leased": len(book.active())}

    @app.get("/api/images/{image_id}")
    def image(image_id: int, name: Who) -> FileResponse:
        path = project.image_file(image_id)
        if path is None:
            raise HTTPException(404, f"there is no image {image_id} in the project's dataset")
        if not path.is_file():
            raise HTTPException(404, f"image {image_id} ({project.image(image_id).file_name}) is missing on the "
                                     "server; restore the dataset's image files")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/review/next")
    def review_next(name: Who, n: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 3) -> dict:
        rs = reviewing()
        store = stores.get()
        standing = store.reviews(masks=False)
        done = rs.settled(standing) | skipped_by(store, name, rs.step)
        with review_book.lock:
            for i in review_book.held_by(name):
                if i in done or i not in rs.objects:
                    review_book.release(i)
            held = [rs.objects[i] for i in review_book.held_by(name)[:n]]
            fresh = rs.waiting(done | review_book.active(), n - len(held)) if len(held) < n else []
            for obj in held + fresh:
                review_book.take(name, obj.instance_id)
        return {"items": [review_item(obj, standing.get(obj.instance_id)) for obj in held + fresh]}

    @app.post("/api/review/decide")
    def review_decide(body: DecisionIn, name: Who) -> Response:
        rs = reviewing()
        obj = rs.objects.get(body.instance_id)
        if obj is None:
            raise HTTPException(404, f"instance {body.instance_id} is not one of the {len(rs)} pool objects of "
                                     f"step {rs.step}'s export ({rs.path.name})")
        if body.decision == "accept" and obj.mask is None:
            raise HTTPException(409, f"instance {obj.instance_id} has no mask in step {rs.step}'s export "
                                     "(apis_source missing), so there is nothing to accept; reject it to ask for "
                                     "more points, or skip it")
        store = stores.get()
        with review_lock:
            stored = store.reviews(masks=False).get(obj.instance_id)
            if (stored is not None and settles(stored, rs.step)
                    and (stored.step, stored.decision, stored.reviewer) != (rs.step, body.decision, name)):
                review_book.release(obj.instance_id, name)
                return JSONResponse({"detail": f"{stored.reviewer} {_PAST[stored.decision]} instance "
                                               f"{obj.instance_id} at step {stored.step} already; to change it, "
                                               "undo that decision first", "stored": stored.as_dict()},
                                    status_code=409)
            try:
                with write_lock:
                    decision = store.add_review(obj.instance_id, rs.step, body.decision, name, obj.mask_seen(),
                                                obj.score)
            except StoreError as err:  # e.g. the instance was removed from the store since the server started
                return JSONResponse({"detail": str(err)}, status_code=409)
        review_book.release(obj.instance_id)
        return JSONResponse({"decision": decision.as_dict()})

    @app.post("/api/review/undo")
    def review_undo(name: Who) -> dict:
        rs = reviewing()
        store = stores.get()
        try:
            with review_lock, write_lock:
                undone = store.undo_review(name)
        except NothingToUndo as err:
            raise HTTPException(404, str(err)) from None
        except UndoRefused as err:
            raise HTTPException(409, str(err)) from None
        obj = rs.objects.get(undone.instance_id) if undone.step == rs.step else None
        if obj is None:  # a decision about another step's masks: withdrawn, but not shown here
            return {"undone": undone.as_dict(), "item": None}
        review_book.take(name, obj.instance_id)
        return {"undone": undone.as_dict(), "item": review_item(obj, store.reviews(masks=False).get(obj.instance_id))}

    @app.post("/api/review/release")
    def review_release(body: ReviewReleaseIn, name: Who) -> dict:
        reviewing()
        for i in body.instance_ids:
            review_book.release(i, name)
        return {"released": len(body.instance_ids)}

    @app.get("/api/review/progress")
    def review_progress(name: Who) -> dict:
        rs = reviewing()
        store = stores.get()
        p = rs.progress(store.reviews(masks=False), store.review_log(rs.step, masks=False), time.time())
        return {**p.as_dict(), "leased": len(review_book.active())}

    app.state.box_leases = add_box_routes(app, project, who, stores, write_lock, lease_s, clock, box_s_of(project))
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0 picks a free port); OSError names a busy port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def login_urls(annotators: Annotators, host: str, port: int, page: str = "") -> list[tuple[str, str]]:
    """(annotator, URL that logs them in) pairs; ``page="review"`` opens the review page after logging in."""
    shown = f"[{host}]" if ":" in host else host
    then = f"&page={page}" if page else ""
    return [(name, f"http://{shown}:{port}/login?token={token}{then}") for name, token in annotators.items()]


def serve(
    project: Project,
    annotators: Annotators,
    host: str = "127.0.0.1",
    port: int = 8765,
    lease_s: float = DEFAULT_LEASE_S,
    echo: Callable[[str], None] = print,
    review: ReviewSet | None = None,
) -> None:
    """Run the server until interrupted; prints each annotator's login URL once listening (and, with ``review``,
    the URL of the review page)."""
    import uvicorn

    app = create_app(project, annotators, lease_s, review=review)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    with Store.open(project.db) as store:
        waiting = len(store.open_queries())
        reviewed = None if review is None else review.progress(store.reviews(masks=False), (), time.time())
    echo(f"apis serve: {project.root} — {waiting} open questions, leases of {lease_s:g} s")
    with Store.open(project.db) as store:
        boxes = store.box_progress() if waiting_for_boxes(store) else None
    if boxes is not None:
        echo(f"boxes: {boxes.done} of {boxes.images} images done, {boxes.boxes} boxes drawn; the links open the box "
             "page, and P0's questions follow when the last image is done")
    if reviewed is not None:
        echo(f"review of step {review.step}: {reviewed.total} masks from {review.path}, {reviewed.reviewed} reviewed, "
             f"{reviewed.remaining} to go ({reviewed.accepted} accepted)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(f"warning: listening on {host}: answers and tokens travel unencrypted; put TLS in front")
    for name, url in login_urls(annotators, host, port):
        echo(f"  {name}: {url}")
    if review is not None:
        echo(f"Review pages (masks of step {review.step}):")
        for name, url in login_urls(annotators, host, port, "review"):
            echo(f"  {name}: {url}")
    echo("Ctrl-C stops the server; every answer is already stored.")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
