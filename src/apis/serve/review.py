"""The review page's data: the mask export of M(step), its pool objects in review order, and each object as
the crop a person judges.

The export (``PROJECT/exports/step{S}.json``, :func:`apis.layout.export_path`) is read once when the server
starts; the decisions live in the store (:meth:`apis.store.Store.add_review`). An object is *settled* for the
review of step S when its standing decision is an accept (made at any step: an accepted mask is final) or was
made at a step ≥ S; the others wait, lowest ``apis_score`` first (ties: lower instance id).

Frames: a box is xyxy in original-image pixels, pixel (i, j) covering [i, i+1) × [j, j+1); a crop is a
:class:`apis.geometry.PixelWindow` of the original image; a crop's mask is its height × width pixels in
row-major order, as run lengths that start with a run of pixels off the object (possibly 0 long).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apis.data.records import decode_segmentation, encode_mask
from apis.geometry import PixelWindow
from apis.layout import export_path
from apis.store import ReviewDecision, StoredInstance, StoreError
from apis.store.reviews import canonical_rle

RECENT_S = 300.0
"""Decisions of the last this many seconds give the rate shown in the progress bar."""


class ReviewError(ValueError):
    """An export that cannot be reviewed; the message names the file and the fix."""


def refresh_command(root: Path, step: int) -> str:
    """The command that (re)writes the export of M(``step``) where the review page reads it."""
    return f"apis export masks {root} --step {step} --out {export_path(root, step)}"


def ensure_export(root: Path, step: int, progress: Callable[[int, int], None] | None = None,
                  echo: Callable[[str], None] = print) -> Path:
    """The path of M(``step``)'s export for review, computed first (one prediction pass over the pool, written
    atomically) when there is none. An existing file is used as it is: :meth:`ReviewSet.load` checks its step."""
    path = export_path(root, step)
    if path.is_file():
        return path
    from apis.export import export_masks_cli  # torch and the model: only when there is something to compute

    echo(f"no mask export of step {step} at {path}: computing it with M({step}) and the answers of steps ≤ {step}")
    export_masks_cli(root, step, path, progress=progress)
    return path


def crop_window(box: Sequence[float], width: int, height: int) -> PixelWindow:
    """The part of a ``width`` × ``height`` image shown for ``box`` (xyxy): the box with a margin of half its
    larger side (at least 8 px) on each side, inside the image; at least one pixel."""
    x0, y0, x1, y1 = (float(v) for v in box)
    m = max(8.0, 0.5 * max(x1 - x0, y1 - y0))
    cx0, cy0 = max(0, math.floor(x0 - m)), max(0, math.floor(y0 - m))
    cx1, cy1 = min(width, math.ceil(x1 + m)), min(height, math.ceil(y1 + m))
    cx0, cy0 = min(cx0, width - 1), min(cy0, height - 1)
    return PixelWindow(cx0, cy0, max(cx1, cx0 + 1), max(cy1, cy0 + 1))


def mask_runs(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a binary h × w mask, starting with the run of 0s (module doc)."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


@dataclass(frozen=True)
class ReviewObject:
    """One exported pool object. ``box`` xyxy (original pixels, from the store) of a ``width`` × ``height``
    image; ``mask`` the exported compressed RLE (``size`` [h, w], ``counts`` str), None when the export has
    none (``source`` ``missing``); ``score`` the export's ``apis_score``."""

    instance_id: int
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]
    width: int
    height: int
    score: float
    source: str
    mask: dict | None
    area: int
    points_agree: float | None

    @property
    def crop(self) -> PixelWindow:
        return crop_window(self.box, self.width, self.height)

    def mask_seen(self) -> dict:
        """The RLE a decision records as the mask shown: the exported one, or an empty mask when there is none."""
        return self.mask if self.mask is not None else encode_mask(np.zeros((self.height, self.width), np.uint8))

    def crop_runs(self) -> list[int] | None:
        """The mask over :attr:`crop`, as :func:`mask_runs`; None without a mask."""
        if self.mask is None:
            return None
        c = self.crop
        return mask_runs(decode_segmentation(self.mask, self.height, self.width)[c.y0 : c.y1, c.x0 : c.x1])


@dataclass(frozen=True)
class ReviewProgress:
    """Review of one step: ``total`` exported pool objects, ``accepted`` (any step) and ``rejected`` (at a
    step ≥ the reviewed one) among them; ``recent`` decisions of the step in the last :data:`RECENT_S`
    seconds, the first ``recent_span_s`` seconds ago."""

    step: int
    total: int
    accepted: int
    rejected: int
    recent: int
    recent_span_s: float

    @property
    def reviewed(self) -> int:
        return self.accepted + self.rejected

    @property
    def remaining(self) -> int:
        return self.total - self.reviewed

    @property
    def accepted_share(self) -> float:
        """Accepted objects over the whole pool, in [0, 1]."""
        return self.accepted / self.total if self.total else 0.0

    @property
    def per_minute(self) -> float | None:
        return None if self.recent == 0 else self.recent / max(self.recent_span_s, 10.0) * 60.0

    @property
    def eta_s(self) -> float | None:
        rate = self.per_minute
        return None if rate is None else self.remaining / rate * 60.0

    def as_dict(self) -> dict:
        return {"step": self.step, "total": self.total, "reviewed": self.reviewed, "remaining": self.remaining,
                "accepted": self.accepted, "rejected": self.rejected, "accepted_share": self.accepted_share,
                "per_minute": self.per_minute, "eta_s": self.eta_s}


def settles(decision: ReviewDecision, step: int) -> bool:
    """Whether a standing decision takes its object out of the review of ``step`` (module doc)."""
    return decision.decision == "accept" or decision.step >= step


class ReviewSet:
    """The pool objects of M(``step``)'s export, by instance id and in review order (lowest score first)."""

    def __init__(self, step: int, path: Path, objects: Iterable[ReviewObject]) -> None:
        self.step = step
        self.path = path
        self.objects = {o.instance_id: o for o in objects}
        self.order = sorted(self.objects, key=lambda i: (self.objects[i].score, i))

    def __len__(self) -> int:
        return len(self.objects)

    @classmethod
    def load(cls, path: Path, step: int, instances: Mapping[int, StoredInstance], refresh: str = "") -> ReviewSet:
        """Read the export at ``path`` and check it is M(``step``)'s, of the store's ``instances``; every
        :class:`ReviewError` names the file and the command ``refresh`` that writes it again (see
        :func:`refresh_command`)."""
        fix = f"; write it again with `{refresh}`" if refresh else ""
        try:
            coco = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ReviewError(f"{path}: there is no mask export of step {step} here{fix}") from None
        except (OSError, ValueError) as err:
            raise ReviewError(f"{path}: cannot read the mask export ({err}){fix}") from None
        info = coco.get("info") if isinstance(coco, dict) else None
        made = info.get("apis_export") if isinstance(info, dict) else None
        if not isinstance(made, dict):
            raise ReviewError(f"{path}: not a mask export of apis (no info.apis_export){fix}")
        made_step = made.get("step", made.get("max_step"))
        if made_step != step:
            what = "every step's answers" if made_step is None else f"step {made_step}"
            raise ReviewError(f"{path}: holds the masks of {what}, not of step {step}; write step {step}'s with "
                              f"`{refresh or 'apis export masks PROJECT --step S --out FILE'}`, or review the step "
                              "it holds with --review-step")
        objects, strangers = [], []
        for ann in coco.get("annotations") or []:
            if not isinstance(ann, dict) or "apis_source" not in ann or ann.get("iscrowd"):
                continue
            inst = instances.get(ann.get("id"))
            if inst is None:
                strangers.append(ann.get("id"))
                continue
            objects.append(_object(path, ann, inst, fix))
        if strangers:
            shown = ", ".join(str(i) for i in strangers[:5]) + (" …" if len(strangers) > 5 else "")
            raise ReviewError(f"{path}: annotations {shown} are not pool instances of this project's store; the "
                              f"export was made from another dataset{fix}")
        if not objects:
            raise ReviewError(f"{path}: no exported pool annotation (none has apis_source){fix}")
        return cls(step, Path(path), objects)

    def settled(self, standing: Mapping[int, ReviewDecision]) -> set[int]:
        """Ids of this set's objects that ``standing`` (:meth:`apis.store.Store.reviews`) settles."""
        return {i for i, d in standing.items() if i in self.objects and settles(d, self.step)}

    def waiting(self, skip: set[int], limit: int) -> list[ReviewObject]:
        """Up to ``limit`` objects in review order whose ids are not in ``skip``."""
        out: list[ReviewObject] = []
        for i in self.order:
            if len(out) >= limit:
                break
            if i not in skip:
                out.append(self.objects[i])
        return out

    def progress(self, standing: Mapping[int, ReviewDecision], log: Sequence[ReviewDecision],
                 now: float) -> ReviewProgress:
        """Counts from the standing decisions and the step's log (:meth:`apis.store.Store.review_log`)."""
        accepted = rejected = 0
        for i, d in standing.items():
            if i in self.objects and settles(d, self.step):
                accepted += d.decision == "accept"
                rejected += d.decision == "reject"
        recent = [d.decided_at for d in log
                  if d.undone_at is None and d.decision != "skip" and d.decided_at >= now - RECENT_S]
        return ReviewProgress(self.step, len(self.objects), accepted, rejected, len(recent),
                              now - min(recent) if recent else 0.0)


def _object(path: Path, ann: dict, inst: StoredInstance, fix: str) -> ReviewObject:
    """One exported annotation, checked against its stored instance."""
    where = f"{path}: annotation {inst.id}"
    score = ann.get("apis_score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        raise ReviewError(f"{where}: apis_score must be a number in [0, 1], got {score!r}{fix}")
    source = str(ann["apis_source"])
    seg = ann.get("segmentation")
    mask = None
    if source != "missing" or seg:
        try:
            mask = canonical_rle(seg)
        except StoreError as err:
            raise ReviewError(f"{where}: segmentation: {err}{fix}") from None
        if mask["size"] != [inst.height, inst.width]:
            raise ReviewError(f"{where}: the mask is {mask['size'][1]}×{mask['size'][0]} but its image is "
                              f"{inst.width}×{inst.height}; the export was made from another dataset{fix}")
    agree = ann.get("apis_points_agree")
    return ReviewObject(inst.id, inst.image_id, inst.category_id, tuple(inst.box), inst.width, inst.height,
                        float(score), source, mask, int(ann.get("area") or 0) if mask is not None else 0,
                        None if agree is None else float(agree))
