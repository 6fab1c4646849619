"""Open questions out to a file and answers back in, for labelling without the server.

The format follows the file's suffix: ``.csv`` or ``.json``. Columns (the CSV header; the keys of each JSON
question) are :data:`COLUMNS`:

* ``query_id`` — the question; keep it as exported.
* ``instance_id``, ``image_id``, ``file_name`` — the object, its image, and the image file relative to the
  dataset's image folder.
* ``x``, ``y`` — the integer pixel asked about: column and row of the original image (0-based; pixel (x, y)
  covers [x, x+1) × [y, y+1)).
* ``answer`` — ``yes`` (the pixel is on the object), ``no``, ``skip`` (can't tell: the next-best pixel of the
  object becomes a new question, in the next export), or empty (the question stays open).

A JSON file is ``{"questions": [{...}, ...]}`` (a bare list of questions is read too). An import is all or
nothing: any bad row refuses the whole file, and the error names the file, the row and the fix. Importing a
file again changes nothing (answers already stored the same way are left as they are).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apis.atomic import write_json_atomic, write_text_atomic
from apis.serve.project import Project
from apis.store import ANSWERS, BatchRefused, QueryNotFound, Store, StoreError

COLUMNS = ("query_id", "instance_id", "image_id", "file_name", "x", "y", "answer")
FORMATS = (".csv", ".json")
_MAX_LISTED = 10


class ExchangeError(ValueError):
    """A file that cannot be written or imported; the message names the file, the row and the fix."""


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: questions answered yes/no, skipped (``replaced`` of them got a next-best pixel as a
    new question), already stored the same way (``unchanged``), and rows left empty (``left_open``)."""

    answered: int
    skipped: int
    replaced: int
    unchanged: int
    left_open: int


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ExchangeError(f"{path}: unknown format {suffix or '(no suffix)'!r}; name the file .csv or .json")
    return suffix


def export_open(store: Store, project: Project, out: Path | str, step: int | None = None) -> int:
    """Write the open questions (of ``step``, or all) to ``out`` (.csv or .json) with empty answers; returns how
    many. The file is replaced atomically."""
    out = Path(out)
    kind = _format(out)
    rows = []
    for q in store.open_queries(step):
        image = project.image(q.image_id)
        rows.append({"query_id": q.id, "instance_id": q.instance_id, "image_id": q.image_id,
                     "file_name": "" if image is None else image.file_name, "x": q.x, "y": q.y, "answer": None})
    if kind == ".json":
        write_json_atomic({"columns": list(COLUMNS), "answers": "yes, no, skip (can't tell) or null (left open)",
                           "questions": rows}, out)
    else:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "answer": ""} for r in rows)
        write_text_atomic(text.getvalue(), out)
    return len(rows)


def import_answers(store: Store, path: Path | str, annotator: str = "import") -> ImportSummary:
    """Store the answers of an exported file filled in by people, as ``annotator``; all or nothing."""
    path = Path(path)
    rows = _read_rows(path)
    problems: list[str] = []
    items: list[tuple[int, str]] = []
    where: list[str] = []
    seen: dict[int, str] = {}
    left_open = 0
    for label, row in rows:
        parsed = _parse_row(store, label, row, seen, problems)
        if parsed == "open":
            left_open += 1
        elif parsed is not None:
            items.append(parsed)
            where.append(label)
    if problems:
        _refuse(path, problems)
    try:
        results = store.answer_queries(items, annotator)
    except BatchRefused as err:
        _refuse(path, [f"{where[i]}: {message}" for i, message in err.problems])
    except StoreError as err:
        raise ExchangeError(f"{path}: nothing was imported: {err}") from None
    answered = sum(r.query.state == "answered" for r in results)
    return ImportSummary(answered, len(results) - answered, sum(r.replacement is not None for r in results),
                         len(items) - len(results), left_open)


def _refuse(path: Path, problems: list[str]) -> None:
    listed = "; ".join(problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise ExchangeError(f"{path}: nothing was imported, {len(problems)} row(s) to fix: {listed}{more}")


def _read_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) pairs: ``line N`` of a CSV file (the header is line 1), ``question N`` of a JSON file."""
    kind = _format(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ExchangeError(f"{path}: cannot read the file ({err})") from None
    if kind == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ExchangeError(f"{path}: not valid JSON ({err}); write it as `apis queue export` does") from None
        questions = data.get("questions") if isinstance(data, dict) else data
        if not isinstance(questions, list):
            raise ExchangeError(f"{path}: expected {{\"questions\": [...]}} or a list of questions")
        return [(f"question {i}", q if isinstance(q, dict) else {"_not_an_object": q})
                for i, q in enumerate(questions, 1)]
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ("query_id", "answer") if c not in header]
    if missing:
        raise ExchangeError(f"{path}: the header lacks {', '.join(missing)}; keep the header line "
                            f"{','.join(COLUMNS)} as exported")
    rows = []
    for row in reader:
        if None in row:
            raise ExchangeError(f"{path}: line {reader.line_num}: more fields than header columns; "
                                "quote values that contain commas")
        rows.append((f"line {reader.line_num}", row))
    return rows


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _parse_row(
    store: Store, label: str, row: dict, seen: dict[int, str], problems: list[str]
) -> tuple[int, str] | str | None:
    """``(query_id, answer)``, ``"open"`` for an empty answer, or None after adding a problem."""
    if "_not_an_object" in row:
        problems.append(f"{label}: {row['_not_an_object']!r} is not an object; write one object per question")
        return None
    raw = row.get("answer")
    answer = "" if raw is None else str(raw).strip().lower()
    qid = _integer(row.get("query_id"))
    if qid is None:
        problems.append(f"{label}: query_id {row.get('query_id')!r} is not an integer; keep the exported query_id")
        return None
    if answer not in ANSWERS and answer != "":
        problems.append(f"{label}: answer {raw!r} is not yes, no or skip; write one of them, or leave it empty to "
                        "keep the question open")
        return None
    if qid in seen:
        problems.append(f"{label}: query {qid} is also on {seen[qid]}; keep one row per question")
        return None
    seen[qid] = label
    try:
        q = store.query(qid)
    except QueryNotFound:
        problems.append(f"{label}: there is no query {qid} in this project; import into the project it was "
                        "exported from")
        return None
    for column, stored in (("instance_id", q.instance_id), ("x", q.x), ("y", q.y)):
        given = row.get(column)
        if given not in (None, "") and _integer(given) != stored:
            problems.append(f"{label}: query {qid} asks about instance {q.instance_id} pixel (x={q.x}, y={q.y}) "
                            f"but the row has {column} {given!r}; do not edit query_id, instance_id, x or y")
            return None
    return (qid, answer) if answer else "open"
