"""Leases: each open question is handed to one annotator at a time, for ``lease_s`` seconds.

Leases live in memory only, so a restarted server starts with every question free. A lease decides who is
*shown* a question, not who may answer it: the store accepts the first answer to an open query from anyone
and refuses later ones, so an annotator whose lease ran out can still answer if nobody else did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LeaseBook:
    """query id → (annotator, expiry on ``clock``, seconds). Thread-safe; use :attr:`lock` to make a
    look-then-take sequence atomic."""

    def __init__(self, lease_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive (seconds), got {lease_s}")
        self.lease_s = float(lease_s)
        self._clock = clock
        self._leases: dict[int, tuple[str, float]] = {}
        self.lock = threading.RLock()

    def _expire(self, now: float) -> None:
        for qid in [q for q, (_, until) in self._leases.items() if until <= now]:
            del self._leases[qid]

    def active(self) -> set[int]:
        """Ids of questions leased now (to anyone)."""
        with self.lock:
            self._expire(self._clock())
            return set(self._leases)

    def held_by(self, annotator: str) -> list[int]:
        """Ids leased to ``annotator`` now, oldest lease first."""
        with self.lock:
            self._expire(self._clock())
            return [q for q, (who, _) in self._leases.items() if who == annotator]

    def holder(self, query_id: int) -> str | None:
        with self.lock:
            self._expire(self._clock())
            lease = self._leases.get(query_id)
            return None if lease is None else lease[0]

    def take(self, annotator: str, query_id: int) -> float:
        """Lease (or renew) ``query_id`` to ``annotator``; returns the seconds it lasts."""
        with self.lock:
            self._leases.pop(query_id, None)  # re-insert: keeps "oldest first" meaning "least recently taken"
            self._leases[query_id] = (annotator, self._clock() + self.lease_s)
            return self.lease_s

    def release(self, query_id: int, annotator: str | None = None) -> None:
        """Return ``query_id`` to the queue (only if ``annotator`` holds it, when given)."""
        with self.lock:
            lease = self._leases.get(query_id)
            if lease is not None and (annotator is None or lease[0] == annotator):
                del self._leases[query_id]
