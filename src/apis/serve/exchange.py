"""Open questions (and masks to review) out to a file, answers (and review decisions) back in, for labelling
without the server.

The format follows the file's suffix: ``.csv`` or ``.json``. Columns (the CSV header; the keys of each JSON
question) are :data:`COLUMNS`:

* ``query_id`` — the question; keep it as exported.
* ``instance_id``, ``image_id``, ``file_name`` — the object, its image, and the image file relative to the
  dataset's image folder.
* ``x``, ``y`` — the integer pixel asked about: column and row of the original image (0-based; pixel (x, y)
  covers [x, x+1) × [y, y+1)).
* ``answer`` — ``yes`` (the pixel is on the object), ``no``, ``skip`` (can't tell: the next-best pixel of the
  object becomes a new question, in the next export), or empty (the question stays open).

A JSON file is ``{"questions": [{...}, ...]}`` (a bare list of questions is read too).

A review file (``apis queue export --review-step S``) holds the masks of M(S)'s export that wait for a
decision, least trusted first, as the review page orders them (:class:`apis.serve.review.ReviewSet`); its
columns (the keys of each object of ``{"reviews": [...]}``) are :data:`REVIEW_COLUMNS`:

* ``step``, ``instance_id`` — the export's step and the object; keep them as exported.
* ``image_id``, ``file_name``, ``box_x``, ``box_y``, ``box_w``, ``box_h`` — where to look: the image file
  (relative to the dataset's image folder) and the object's box [x, y, w, h] in original pixels.
* ``apis_score``, ``apis_source`` — the export's trust score and where the mask came from (``missing``: there
  is no mask, only reject or skip make sense).
* ``mask`` — the exported mask as a COCO compressed RLE at the image's size (JSON text in a CSV cell); it is
  stored with the decision as the mask that was judged, so keep it as exported.
* ``decision`` — ``accept`` (the mask is final), ``reject`` (the object gets ``loop.review_points`` extra
  points at the next step), ``skip`` (looked at, no decision), or empty (left for later).

An import is all or nothing: any bad row refuses the whole file, and the error names the file, the row and
the fix. Importing a file again changes nothing (answers and decisions already stored the same way are left
as they are). Review decisions are checked in full, then stored in one transaction of the store
(:meth:`apis.store.Store.add_reviews`), so not even a crash stores part of a file.
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
from apis.serve.review import ReviewSet
from apis.store import ANSWERS, DECISIONS, BatchRefused, QueryNotFound, Store, StoreError
from apis.store.reviews import canonical_rle

COLUMNS = ("query_id", "instance_id", "image_id", "file_name", "x", "y", "answer")
REVIEW_COLUMNS = ("step", "instance_id", "image_id", "file_name", "box_x", "box_y", "box_w", "box_h", "apis_score",
                  "apis_source", "mask", "decision")
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


@dataclass(frozen=True)
class ReviewImportSummary:
    """What an import of review decisions did: decisions stored by kind, rows already stored the same way
    (``unchanged``), and rows left without a decision (``left_open``)."""

    accepted: int
    rejected: int
    skipped: int
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


def export_reviews(store: Store, review: ReviewSet, out: Path | str) -> int:
    """Write the objects of ``review`` (M(S)'s export) that wait for a decision to ``out`` (.csv or .json), least
    trusted first, with empty decisions; returns how many. Objects whose standing decision settles them (an
    accept, or a decision about step S or later) are left out, as on the review page."""
    out = Path(out)
    kind = _format(out)
    files = {im["id"]: im.get("file_name", "") for im in _export_images(review.path)}
    rows = []
    for o in review.waiting(review.settled(store.reviews()), len(review)):
        x0, y0, x1, y1 = o.box
        rows.append({"step": review.step, "instance_id": o.instance_id, "image_id": o.image_id,
                     "file_name": files.get(o.image_id, ""), "box_x": x0, "box_y": y0, "box_w": x1 - x0,
                     "box_h": y1 - y0, "apis_score": o.score, "apis_source": o.source, "mask": o.mask_seen(),
                     "decision": None})
    if kind == ".json":
        write_json_atomic({"columns": list(REVIEW_COLUMNS),
                           "decisions": "accept, reject, skip or null (left for later)", "reviews": rows}, out)
    else:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=REVIEW_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "mask": json.dumps(r["mask"]), "decision": ""} for r in rows)
        write_text_atomic(text.getvalue(), out)
    return len(rows)


def _export_images(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("images") or []
    except (OSError, ValueError, AttributeError):
        return []  # ReviewSet.load read the file already; a file name is a convenience


def import_file(store: Store, path: Path | str, annotator: str = "import") -> ImportSummary | ReviewImportSummary:
    """Import a filled-in export of either kind: answers to questions, or review decisions (by its columns)."""
    path = Path(path)
    kind, _ = _read_file(path)
    return import_reviews(store, path, annotator) if kind == "reviews" else import_answers(store, path, annotator)


def import_answers(store: Store, path: Path | str, annotator: str = "import") -> ImportSummary:
    """Store the answers of an exported file filled in by people, as ``annotator``; all or nothing."""
    path = Path(path)
    kind, rows = _read_file(path)
    if kind != "questions":
        raise ExchangeError(f"{path}: holds review decisions, not answers to questions; import it with "
                            "`apis queue import`")
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


def import_reviews(store: Store, path: Path | str, reviewer: str = "import") -> ReviewImportSummary:
    """Store the review decisions of an exported review file filled in by ``reviewer``; all or nothing: every
    row is checked before the first decision is stored (module doc)."""
    path = Path(path)
    kind, rows = _read_file(path)
    if kind != "reviews":
        raise ExchangeError(f"{path}: holds answers to questions, not review decisions; import it with "
                            "`apis queue import`")
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ExchangeError(f"{path}: nothing was imported: the reviewer's name (--annotator) must not be empty")
    instances = {i.id: i for i in store.instances()}
    problems: list[str] = []
    items: list[tuple[int, int, str, dict, float | None]] = []
    seen: dict[tuple[int, int], str] = {}
    left_open = 0
    for label, row in rows:
        parsed = _parse_review(label, row, instances, seen, problems)
        if parsed == "open":
            left_open += 1
        elif parsed is not None:
            items.append(parsed)
    if problems:
        _refuse(path, problems)
    before = max((d.id for d in store.review_log()), default=0)
    counts = {d: 0 for d in DECISIONS}
    unchanged = 0
    try:  # one transaction: a crash or a refusal stores none of the file
        stored = store.add_reviews(items, reviewer)
    except StoreError as err:
        raise ExchangeError(f"{path}: nothing was imported: {err}") from None
    for d in stored:
        if d.id <= before:  # the same decision was stored before: a file imported twice
            unchanged += 1
        else:
            counts[d.decision] += 1
    return ReviewImportSummary(counts["accept"], counts["reject"], counts["skip"], unchanged, left_open)


def _parse_review(
    label: str, row: dict, instances: dict, seen: dict[tuple[int, int], str], problems: list[str]
) -> tuple[int, int, str, dict, float | None] | str | None:
    """``(instance_id, step, decision, mask, apis_score)``, ``"open"`` for an empty decision, or None after adding
    a problem."""
    if "_not_an_object" in row:
        problems.append(f"{label}: {row['_not_an_object']!r} is not an object; write one object per review")
        return None
    raw = row.get("decision")
    decision = "" if raw is None else str(raw).strip().lower()
    if decision not in DECISIONS and decision != "":
        problems.append(f"{label}: decision {raw!r} is not accept, reject or skip; write one of them, or leave it "
                        "empty to decide later")
        return None
    iid, step = _integer(row.get("instance_id")), _integer(row.get("step"))
    if iid is None or step is None or step < 0:
        problems.append(f"{label}: instance_id {row.get('instance_id')!r} and step {row.get('step')!r} must be "
                        "integers (step ≥ 0); keep them as exported")
        return None
    if (iid, step) in seen:
        problems.append(f"{label}: instance {iid} of step {step} is also on {seen[(iid, step)]}; keep one row per "
                        "object")
        return None
    seen[(iid, step)] = label
    if not decision:
        return "open"
    inst = instances.get(iid)
    if inst is None:
        problems.append(f"{label}: there is no instance {iid} in this project; import into the project the file "
                        "was exported from")
        return None
    mask = row.get("mask")
    try:
        mask = canonical_rle(json.loads(mask) if isinstance(mask, str) else mask)
    except (ValueError, StoreError) as err:
        problems.append(f"{label}: mask: {err}; keep the mask as exported")
        return None
    if mask["size"] != [inst.height, inst.width]:
        problems.append(f"{label}: the mask is {mask['size'][1]}×{mask['size'][0]} but instance {iid}'s image is "
                        f"{inst.width}×{inst.height}; keep the mask as exported")
        return None
    if decision == "accept" and str(row.get("apis_source") or "") == "missing":
        problems.append(f"{label}: instance {iid} has no mask in the export (apis_source missing), so there is "
                        "nothing to accept; reject it to ask for more points, or skip it")
        return None
    score = row.get("apis_score")
    try:
        score = None if score in (None, "") else float(score)
    except (TypeError, ValueError):
        score = None  # shown to the reviewer, kept for the record only: a mangled cell is not worth a refusal
    return iid, step, decision, mask, score


def _read_file(path: Path) -> tuple[str, list[tuple[str, dict]]]:
    """``("questions" | "reviews", [(where, row), ...])``: ``line N`` of a CSV file (the header is line 1),
    ``question N`` or ``review N`` of a JSON file."""
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
        if isinstance(data, dict) and "questions" in data and "reviews" in data:
            raise ExchangeError(f"{path}: holds both questions and reviews; import them as two files")
        what = "reviews" if isinstance(data, dict) and "reviews" in data else "questions"
        items = data.get(what) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ExchangeError(f"{path}: expected {{\"questions\": [...]}}, {{\"reviews\": [...]}} or a list of "
                                "questions")
        one = what[:-1]
        return what, [(f"{one} {i}", q if isinstance(q, dict) else {"_not_an_object": q})
                      for i, q in enumerate(items, 1)]
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if "decision" in header and "answer" not in header:
        need, kind_name, columns = ("instance_id", "step", "mask", "decision"), "reviews", REVIEW_COLUMNS
    else:
        need, kind_name, columns = ("query_id", "answer"), "questions", COLUMNS
    missing = [c for c in need if c not in header]
    if missing:
        raise ExchangeError(f"{path}: the header lacks {', '.join(missing)}; keep the header line "
                            f"{','.join(columns)} as exported")
    rows = []
    for row in reader:
        if None in row:
            raise ExchangeError(f"{path}: line {reader.line_num}: more fields than header columns; "
                                "quote values that contain commas")
        rows.append((f"line {reader.line_num}", row))
    return kind_name, rows


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
