"""The store's refusals, at the bottom of the package so that every concern module can raise them.

Every refusal is a :class:`StoreError` (a ``ValueError`` whose message names the record and the fix), so a
caller that only reports the message catches that one. The subclasses exist for callers that act
differently on the reason: the labelling server answers a missing query with 404, hands a closed query's
stored answer back to the page, and marks each refused item of a batch.
"""

from __future__ import annotations

# A refused batch lists this many problems; the rest are counted.
MAX_LISTED = 10


class StoreError(ValueError):
    """A write the store refuses, or a store file it cannot use. The message names the record and the fix."""


class QueryNotFound(StoreError):
    """No query has this id."""


class QueryClosed(StoreError):
    """The query was answered or skipped already; ``stored`` is the stored answer (:meth:`StoredQuery.as_dict`)."""

    def __init__(self, message: str, stored: dict) -> None:
        super().__init__(message)
        self.stored = stored


class UndoRefused(StoreError):
    """An undo that would contradict what happened since (a later answer, a consumed step)."""


class StepConsumed(UndoRefused):
    """The loop has taken this step's answers; they can no longer be undone."""


class NothingToUndo(StoreError):
    """The annotator has no answer that could be undone."""


class BatchRefused(StoreError):
    """A batch of answers refused as a whole; ``problems`` pairs each bad item's index with the reason."""

    def __init__(self, problems: list[tuple[int, str]], size: int) -> None:
        self.problems = problems
        listed = "; ".join(f"item {i}: {m}" for i, m in problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(f"refused the whole batch of {size} answers, nothing was written: {listed}{more}")
