"""The box page's API: people draw the boxes of a project that starts from images alone (``apis init --images``).

Every route needs the token, as every ``/api`` route does. Boxes are xyxy floats in pixels of the image as shown
(EXIF orientation applied; pixel (i, j) covers [i, i+1) × [j, j+1)); the server clips each to its image and
refuses (422) one that is then under 1 px wide or high. Images are named by id only, never by path.

* ``GET /api/boxes/next?n=2`` — up to ``n`` (1..3) images to box, leased to the caller like questions: those it
  holds first (leases renewed), then the lowest ids not done that nobody holds. ``{"images": [...], "progress",
  "categories": [{id, name}]}``.
* ``GET /api/boxes/images/{image_id}`` — one image and its standing boxes (the page re-reads it after a refusal).
* ``POST /api/boxes/add`` ``{op_id, image_id, box, category_id}``, ``/change`` ``{op_id, box_id, box,
  category_id}``, ``/delete`` ``{op_id, box_id}``, ``/done`` ``{op_id, image_id}``, ``/undo`` ``{op_id}`` (the
  caller's latest operation not undone: a done image opens again) — each committed in its own transaction before
  the reply ``{"op": {seq, kind, box_id, undid, replayed}, "image": ...}``. ``op_id`` is the client's own id
  (8-64 of ``A-Za-z0-9_-``): sent again, the stored operation is not repeated and ``replayed`` is true. 404 an
  unknown image or box; 409 an image someone else holds or that is done, boxes that are the pool already, an op
  id used for another request, an undo that someone's later change contradicts; 422 a bad body or box.
* ``POST /api/boxes/release`` ``{"image_ids": [...]}`` — hands the caller's leases back (the page is closing).
* ``GET /api/boxes/progress`` — images done and remaining, standing boxes and their time at ``cost.box_s``;
  ``drawn_here`` is false for a project whose json came with its boxes (the page then has nothing to draw).

An image is json: ``image_id``, ``width``, ``height`` (as shown), ``name`` (the file's name), ``image_url``,
``done``, ``done_by``, ``boxes`` ([{id, box, category_id, annotator}]) and ``lease_s``.

When the last image is marked done, the same request finishes the project (:func:`apis.serve.box_project.finish`,
one at a time in this server, and safe beside an ``apis boxes finish`` in another process): the boxes become the
pool and P0's questions are posted; the reply's ``finished`` says so (``finish_error`` when it could not).
"""

# No ``from __future__ import annotations``: FastAPI reads the route annotations at runtime.
import threading
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from apis.serve.leases import LeaseBook
from apis.serve.project import Project
from apis.store import (
    BoxConflict,
    BoxImage,
    BoxNotFound,
    BoxRefused,
    BoxRequest,
    BoxResult,
    NothingToUndo,
    Store,
    StoreError,
    UndoRefused,
)

MAX_IMAGES = 3
_OpId = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_Id = Annotated[int, Field(strict=True, ge=0)]
_Box = Annotated[list[float], Field(min_length=4, max_length=4)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddIn(_Body):
    op_id: _OpId
    image_id: _Id
    box: _Box
    category_id: _Id


class ChangeIn(_Body):
    op_id: _OpId
    box_id: _Id
    box: _Box
    category_id: _Id


class DeleteIn(_Body):
    op_id: _OpId
    box_id: _Id


class DoneIn(_Body):
    op_id: _OpId
    image_id: _Id


class UndoIn(_Body):
    op_id: _OpId


class ReleaseIn(_Body):
    image_ids: Annotated[list[_Id], Field(max_length=50)]


def waiting_for_boxes(store: Store) -> bool:
    """True for a project started from images whose boxes are not the pool yet (``/`` then opens ``/boxes``)."""
    return store.box_project() is not None and store.box_pool() is None


def add_box_routes(app: FastAPI, project: Project, who: Callable, stores, write_lock: threading.Lock,
                   lease_s: float, clock: Callable[[], float], box_s: float) -> LeaseBook:
    """Add the routes above to ``app``; ``who`` is the token dependency, ``stores.get()`` a thread's store and
    ``write_lock`` the server's one write lock. Returns the lease book (keyed by image id)."""
    Who = Annotated[str, Depends(who)]
    book = LeaseBook(lease_s, clock)
    with Store.open(project.db) as store:
        meta = store.box_project() or {"categories": []}
    categories = [{"id": i, "name": name} for i, name in meta["categories"]]
    finishing = threading.Lock()  # one finish at a time in this server; the store makes it safe across processes

    def view(image: BoxImage) -> dict:
        return {"image_id": image.image_id, "width": image.width, "height": image.height,
                "name": PurePosixPath(image.file_name).name, "image_url": f"/api/images/{image.image_id}",
                "done": image.done, "done_by": image.done_by, "boxes": [b.as_dict() for b in image.boxes],
                "lease_s": book.lease_s}

    def progress_of(store: Store) -> dict:
        p = store.box_progress()
        return {**p.as_dict(), "box_s": box_s, "box_hours": round(p.boxes * box_s / 3600, 4),
                "leased": len(book.active()), "finish": store.boxes_finished(), "drawn_here": bool(categories)}

    def check_lease(name: str, image_id: int) -> None:
        with book.lock:
            holder = book.holder(image_id)
            if holder is not None and holder != name:
                raise HTTPException(409, f"image {image_id} is being boxed by {holder}; take the next image")
            book.take(name, image_id)

    def run(write: Callable[[Store], BoxResult]) -> BoxResult:
        try:
            with write_lock:
                return write(stores.get())
        except BoxRefused as err:
            raise HTTPException(422, str(err)) from None
        except (BoxNotFound, NothingToUndo) as err:
            raise HTTPException(404, str(err)) from None
        except (BoxConflict, UndoRefused, StoreError) as err:
            raise HTTPException(409, str(err)) from None

    def reply(result: BoxResult, **more) -> JSONResponse:
        op = {"seq": result.seq, "kind": result.kind, "box_id": result.box_id, "undid": result.undid,
              "replayed": result.replayed}
        return JSONResponse({"op": op, "image": view(result.image), **more})

    def image_of_box(box_id: int) -> int:
        try:
            return stores.get().box_image_id(box_id)
        except BoxNotFound as err:
            raise HTTPException(404, str(err)) from None

    def finish_now() -> dict:
        from apis.serve.box_project import BoxProjectError, finish

        lines: list[str] = []
        with finishing, write_lock:
            try:
                done = finish(project.root, report=lines.append)
            except (BoxProjectError, StoreError, OSError) as err:
                return {"finish_error": str(err)}
        return {"finished": {"images": len(done.pool.images), "boxes": done.pool.boxes, "questions": done.waiting,
                             "lines": lines}}

    @app.get("/api/boxes/next")
    def next_images(name: Who, n: Annotated[int, Query(ge=1, le=MAX_IMAGES)] = 2) -> dict:
        store = stores.get()
        if not waiting_for_boxes(store):
            return {"images": [], "progress": progress_of(store), "categories": categories}
        with book.lock:
            held = []
            for i in book.held_by(name):
                try:
                    image = store.box_image(i)
                except BoxNotFound:
                    image = None
                if image is None or image.done or len(held) >= n:
                    book.release(i)
                else:
                    held.append(image)
            busy = book.active() | {im.image_id for im in held}
            fresh = store.box_images(done=False, limit=n - len(held), exclude=busy) if len(held) < n else []
            for image in held + fresh:
                book.take(name, image.image_id)
        return {"images": [view(im) for im in held + fresh], "progress": progress_of(store), "categories": categories}

    @app.get("/api/boxes/images/{image_id}")
    def one_image(image_id: int, name: Who) -> dict:
        try:
            return view(stores.get().box_image(image_id))
        except BoxNotFound as err:
            raise HTTPException(404, str(err)) from None

    @app.post("/api/boxes/add")
    def add(body: AddIn, name: Who) -> JSONResponse:
        check_lease(name, body.image_id)
        req = BoxRequest(body.op_id, name, "add", image_id=body.image_id, box=tuple(body.box),
                         category_id=body.category_id)
        return reply(run(lambda s: s.box_op(req)))

    @app.post("/api/boxes/change")
    def change(body: ChangeIn, name: Who) -> JSONResponse:
        check_lease(name, image_of_box(body.box_id))
        req = BoxRequest(body.op_id, name, "change", box_id=body.box_id, box=tuple(body.box),
                         category_id=body.category_id)
        return reply(run(lambda s: s.box_op(req)))

    @app.post("/api/boxes/delete")
    def delete(body: DeleteIn, name: Who) -> JSONResponse:
        check_lease(name, image_of_box(body.box_id))
        req = BoxRequest(body.op_id, name, "delete", box_id=body.box_id)
        return reply(run(lambda s: s.box_op(req)))

    @app.post("/api/boxes/done")
    def done(body: DoneIn, name: Who) -> JSONResponse:
        check_lease(name, body.image_id)
        result = run(lambda s: s.box_op(BoxRequest(body.op_id, name, "done", image_id=body.image_id)))
        book.release(body.image_id, name)
        more = finish_now() if result.all_done and stores.get().boxes_finished() is None else {}
        return reply(result, **more)

    @app.post("/api/boxes/undo")
    def undo(body: UndoIn, name: Who) -> JSONResponse:
        result = run(lambda s: s.undo_box(name, body.op_id))
        with book.lock:
            if book.holder(result.image.image_id) in (None, name):
                book.take(name, result.image.image_id)
        return reply(result)

    @app.post("/api/boxes/release")
    def release(body: ReleaseIn, name: Who) -> dict:
        for i in body.image_ids:
            book.release(i, name)
        return {"released": len(body.image_ids)}

    @app.get("/api/boxes/progress")
    def progress(name: Who) -> dict:
        return progress_of(stores.get())

    return book


def box_s_of(project: Project) -> float:
    """Seconds a box costs in the project's config (``cost.box_s``)."""
    from apis.config import load_config

    return load_config(project.root / "config.yaml").cost.box_s

