"""Group commit: answers that arrive together are committed together, one transaction and one disk sync.

A commit with ``synchronous=FULL`` waits for the disk (milliseconds on most machines), so committing each
answer on its own caps the server at a few hundred answers per second however many people answer. Here one
writer thread takes every answer waiting, stores them in one transaction (each accepted or refused on its own,
:meth:`apis.store.Store.answer_each`), commits, and only then wakes each request: every reply still follows
the commit of its answer.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from apis.store import AnswerResult, Store, StoreError

MAX_GROUP = 64
"""Answers committed in one transaction at most."""


class CommitTimeout(RuntimeError):
    """The writer did not confirm an answer in time; whether it was stored is unknown until it replies."""


@dataclass
class _Slot:
    """One waiting answer; the writer wakes its request through ``done`` or, from async code, ``future``."""

    item: tuple[int, str, str]
    done: threading.Event = field(default_factory=threading.Event)
    future: asyncio.Future | None = None
    result: AnswerResult | None = None
    error: BaseException | None = None

    def finish(self) -> None:
        if self.future is None:
            self.done.set()
        else:
            self.future.get_loop().call_soon_threadsafe(_settle, self)


def _settle(slot: _Slot) -> None:
    if slot.future.done():  # the request was cancelled (client gone); its answer is stored all the same
        return
    if slot.error is not None:
        slot.future.set_exception(slot.error)
    else:
        slot.future.set_result(slot.result)


class GroupCommitter:
    """One writer thread for answers; ``lock`` is held while it writes (take it for any other write)."""

    def __init__(self, db: Path, lock: threading.Lock, max_group: int = MAX_GROUP) -> None:
        self.db = db
        self.lock = lock
        self.max_group = max_group
        self._queue: queue.Queue[_Slot | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._failed: BaseException | None = None

    def answer(self, query_id: int, answer: str, annotator: str, timeout_s: float = 60.0) -> AnswerResult:
        """Store one answer (see :meth:`apis.store.Store.answer_query`) once committed with its group."""
        self._ensure_started()
        slot = _Slot((query_id, answer, annotator))
        self._put(slot)
        if not slot.done.wait(timeout_s):
            raise CommitTimeout(f"query {query_id}: the answer was not confirmed within {timeout_s:g} s")
        if slot.error is not None:
            raise slot.error
        return slot.result

    async def answer_async(self, query_id: int, answer: str, annotator: str, timeout_s: float = 60.0) -> AnswerResult:
        """:meth:`answer` for the event loop: awaits the commit without holding a thread."""
        self._ensure_started()
        slot = _Slot((query_id, answer, annotator), future=asyncio.get_running_loop().create_future())
        self._put(slot)
        try:
            return await asyncio.wait_for(asyncio.shield(slot.future), timeout_s)
        except asyncio.TimeoutError:
            raise CommitTimeout(f"query {query_id}: the answer was not confirmed within {timeout_s:g} s") from None

    def close(self) -> None:
        """Finish the answers already waiting, then stop the writer thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _ensure_started(self) -> None:
        if self._failed is not None:
            raise self._failed
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="apis-group-commit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            store = Store.open(self.db)
        except BaseException as err:  # noqa: BLE001 - handed to every waiting and later answer
            self._fail(err)
            return
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                group = [first]
                stop = False
                while len(group) < self.max_group:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.append(more)
                self._commit(store, group)
                if stop:
                    return
        finally:
            store.close()

    def _put(self, slot: _Slot) -> None:
        self._queue.put(slot)
        if self._failed is not None:  # the writer failed after our check: nobody else will answer the slot
            self._fail(self._failed)

    def _fail(self, err: BaseException) -> None:
        """The writer cannot open the store: refuse every answer with that error from now on."""
        self._failed = err
        while True:
            try:
                slot = self._queue.get_nowait()
            except queue.Empty:
                return
            if slot is not None:
                slot.error = err
                slot.finish()

    def _commit(self, store: Store, group: list[_Slot]) -> None:
        try:
            with self.lock:
                results = store.answer_each([slot.item for slot in group])
            for slot, result in zip(group, results, strict=True):
                if isinstance(result, StoreError):
                    slot.error = result
                else:
                    slot.result = result
        except BaseException as err:  # e.g. disk full: every answer of the group failed, none was stored
            for slot in group:
                slot.error = err
        finally:
            for slot in group:
                slot.finish()
