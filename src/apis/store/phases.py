"""Completed phases of the active loop: a name and a json payload each, so a killed run resumes where it stopped.

Answers and consumed steps can be recorded together with a phase in one transaction; :func:`payload_json`
checks a payload before that transaction starts, and :func:`write_phase` writes it inside.
"""

from __future__ import annotations

import json
import sqlite3

from apis.store.errors import StoreError


def payload_json(name: str, payload: dict | None) -> str:
    """``payload`` as the json text stored for phase ``name``; :class:`StoreError` when it is not plain json."""
    if not isinstance(payload, dict):
        raise StoreError(f"phase {name!r}: payload must be a dict, got {type(payload).__name__}")
    try:
        return json.dumps(payload, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"phase {name!r}: payload is not plain json ({err}); store paths as str and numbers as int/float"
        ) from err


def write_phase(conn: sqlite3.Connection, name: str, payload_json: str, when: float) -> None:
    """Inside a transaction: record phase ``name`` as completed at ``when`` (replaces an earlier record)."""
    sql = "INSERT OR REPLACE INTO phases(name, completed_at, payload) VALUES (?, ?, ?)"
    conn.execute(sql, (name, when, payload_json))


def read_phase(conn: sqlite3.Connection, name: str) -> dict | None:
    """The payload recorded for a completed phase, or None if it has not completed."""
    row = conn.execute("SELECT payload FROM phases WHERE name = ?", (name,)).fetchone()
    return None if row is None else json.loads(row[0])


def completed_phases(conn: sqlite3.Connection) -> list[str]:
    """Completed phases in the order they were (last) recorded."""
    return [r[0] for r in conn.execute("SELECT name FROM phases ORDER BY completed_at, rowid")]
