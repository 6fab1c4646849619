"""Judging masks that no person drew with what is known without GT: the box is tight and every answer is true.

Every source of masks (the box filled, the inscribed ellipse, GrabCut from the box, the model's map, GrabCut
from the map) is checked per object (:func:`check_mask`):

* **not empty**;
* **fills the box's extent**: its rows and columns reach the box's four sides (a tight box touches its object on
  every side, BoxInst's projection argument), within :data:`SIDE_TOLERANCE` of the side's length, or within
  the source's own resolution where it is coarser (a model's map is drawn in cells of its mask logits, and the
  thin parts that touch a side, a hand or a foot, are lost below one cell);
* **agrees with the answers it was not seeded with** (counted before any answer is forced into it).

Per dataset, :func:`judge_sources` scores each source on the answered points over the pool: GrabCut from the box
*alone* (no answer as a seed), the ellipse and the box have not seen any answer, so their agreement is a held-out
estimate of their accuracy, as long as the points were drawn at random in the box (the callers pass those only: a
strategy that asks where the model is unsure asks at the edges, where every shape errs). :func:`pick_source`
takes the most accurate source among those that pass the box check on most objects; :func:`choose_masks` then
gives every object the chosen source's mask, or where it fails the checks, the next source's, so no object gets
an empty mask. Objects are masks over their Ω window (:func:`apis.geometry.omega`), h×w bool in original pixels;
answers are (x, y, label) original pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from apis.geometry import PixelWindow

#: A mask reaches a side of its box when it has a pixel within this share of the box's size of that side
#: (at least one pixel): GrabCut cuts crops longer than 256 pixels at 256 and scales the mask back.
SIDE_TOLERANCE = 0.02
#: A mask reaching fewer sides than this fails the box check.
MIN_SIDES = 3
#: A source that fails the box check on more than this share of the pool is not chosen for the dataset.
MAX_FAILING = 0.5
#: A source agreeing with at least this share of the held-out answers is learnt from at full weight
#: (:func:`source_weight`): the built-in set's GrabCut (81% on P0) and DSB's ellipse (84%), where weighing their
#: masks 0.1 was measured to cost M0 mask AP; Penn-Fudan's ellipse (65%) gained 6 AP from it.
FULL_TRUST_AGREEMENT = 0.8
#: Sources of masks that need no model, in the order preferred on a tie (GrabCut uses the image's colours).
NO_MODEL_SOURCES = ("grabcut", "ellipse", "box")
#: The no-model sources the box alone draws (no image, no cut).
SHAPE_SOURCES = ("ellipse", "box")

Answer = tuple[int, int, int]


@dataclass(frozen=True)
class MaskCheck:
    """One mask judged: ``pixels`` on the object, ``sides`` of the box it reaches (0–4), ``agree`` of the
    ``answers`` inside its window it agreed with before forcing."""

    pixels: int
    sides: int
    agree: int
    answers: int

    @property
    def empty(self) -> bool:
        return self.pixels == 0

    @property
    def passes_box(self) -> bool:
        return not self.empty and self.sides >= MIN_SIDES

    @property
    def ok(self) -> bool:
        """Passes the box check and agrees with at least half of its answers (all of them when it has one)."""
        return self.passes_box and (self.answers == 0 or 2 * self.agree >= self.answers + (self.answers == 1))


def sides_reached(mask: np.ndarray, resolution: float = 1.0) -> int:
    """How many of the window's four sides ``mask`` (h×w bool over Ω) reaches (module doc); ``resolution``: the
    size in pixels of the finest detail its source can draw (a side within it counts as reached)."""
    if not mask.any():
        return 0
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    ty = max(1, round(SIDE_TOLERANCE * h), round(resolution))
    tx = max(1, round(SIDE_TOLERANCE * w), round(resolution))
    return int(rows[0] < ty) + int(rows[-1] >= h - ty) + int(cols[0] < tx) + int(cols[-1] >= w - tx)


def check_mask(mask: np.ndarray, win: PixelWindow, answers: Iterable[Answer] = (), resolution: float = 1.0
               ) -> MaskCheck:
    """Judge ``mask`` (h×w bool over ``win``) against its box and the ``answers`` (those outside ``win`` are
    left out: no pixel of the mask can hold them); ``resolution`` as in :func:`sides_reached`."""
    agree = n = 0
    for x, y, label in answers:
        if win.contains(x, y):
            n += 1
            agree += int(bool(mask[y - win.y0, x - win.x0]) == bool(label))
    return MaskCheck(int(mask.sum()), sides_reached(mask, resolution), agree, n)


@dataclass(frozen=True)
class SourceScore:
    """One source over the pool: ``objects`` judged, ``failing`` the box check, ``agree`` of ``answers``."""

    source: str
    objects: int
    failing: int
    agree: int
    answers: int

    @property
    def accuracy(self) -> float | None:
        """Share of the answers it agreed with; None without answers."""
        return self.agree / self.answers if self.answers else None

    @property
    def failing_share(self) -> float:
        return self.failing / self.objects if self.objects else 0.0


def judge_sources(masks: Mapping[str, Mapping[int, tuple[PixelWindow, np.ndarray]]],
                  answers: Mapping[int, Sequence[Answer]]) -> list[SourceScore]:
    """:class:`SourceScore` of each source in ``masks`` (source → instance id → (window, mask)), on the
    ``answers`` (instance id → (x, y, label)) — pass only answers the sources were not seeded with."""
    out = []
    for source, per_object in masks.items():
        failing = agree = n = 0
        for iid, (win, mask) in per_object.items():
            c = check_mask(mask, win, answers.get(iid, ()))
            failing += not c.passes_box
            agree += c.agree
            n += c.answers
        out.append(SourceScore(source, len(per_object), failing, agree, n))
    return out


def pick_source(scores: Sequence[SourceScore]) -> str:
    """The source a dataset should use: the most accurate on the held-out answers among those failing the box
    check on at most :data:`MAX_FAILING` of the pool; ties go to the earlier source in ``scores``. Without any
    answer (the box-only start) the box check is the only judge, and the earlier source that passes it is taken
    (GrabCut, from the image's colours, before the shapes that pass it by construction); where none passes,
    the fewest failures."""
    if not scores:
        raise ValueError("no source to choose from")
    usable = [s for s in scores if s.failing_share <= MAX_FAILING]
    order = {s.source: i for i, s in enumerate(scores)}
    if usable and all(s.answers == 0 for s in scores):
        return min(usable, key=lambda s: order[s.source]).source
    usable = usable or list(scores)
    # Round so that sources level within noise keep the preferred order.
    return min(usable, key=lambda s: (-round(s.accuracy or 0.0, 2), round(s.failing_share, 2), order[s.source])).source


def source_weight(accuracy: float | None, full: float = FULL_TRUST_AGREEMENT) -> float:
    """How much training should learn from a source's masks, in [0, 1], from ``accuracy``, its agreement with
    answers it was not seeded with. A pixel right with probability a carries (2a − 1)² of a true label's
    signal (the squared correlation of a label flipped with probability 1 − a with the truth), so the weight
    is that, relative to a source agreeing with ``full`` of the answers and capped at 1; 0 at chance or below.
    Without answers (the box-only start) nothing speaks against a source: 1."""
    if accuracy is None:
        return 1.0
    if not 0.5 < full <= 1.0:
        raise ValueError(f"full trust must lie in (0.5, 1], got {full}")
    return min(1.0, (max(0.0, 2.0 * accuracy - 1.0) / (2.0 * full - 1.0)) ** 2)


def ranked_sources(scores: Sequence[SourceScore]) -> list[str]:
    """Every source, the chosen one first, then the rest by the same rule."""
    rest, out = list(scores), []
    while rest:
        best = pick_source(rest)
        out.append(best)
        rest = [s for s in rest if s.source != best]
    return out


def choose_masks(masks: Mapping[str, Mapping[int, tuple[PixelWindow, np.ndarray]]], order: Sequence[str],
                 answers: Mapping[int, Sequence[Answer]] | None = None
                 ) -> dict[int, tuple[str, PixelWindow, np.ndarray]]:
    """Instance id → (source, window, mask): the first source of ``order`` whose mask passes the checks
    (:attr:`MaskCheck.ok` with ``answers``), else the first one that is not empty, else the last source's."""
    answers = answers or {}
    ids = set().union(*(set(m) for m in masks.values()))
    out = {}
    for iid in sorted(ids):
        have = [(s, *masks[s][iid]) for s in order if iid in masks[s]]
        checks = [check_mask(m, w, answers.get(iid, ())) for _, w, m in have]
        pick = next((h for h, c in zip(have, checks, strict=True) if c.ok), None)
        pick = pick or next((h for h, c in zip(have, checks, strict=True) if not c.empty), have[-1])
        out[iid] = pick
    return out


def format_scores(scores: Sequence[SourceScore], chosen: str | None = None) -> list[str]:
    """The source table as lines for a terminal or log: one line per source; with ``chosen`` (``auto`` chose),
    the weight its masks are learnt with as well."""
    lines = [f"{'source':<10} {'objects':>7} {'fails box':>9} {'answers':>7} {'agree':>6}"
             + (f" {'weight':>6}" if chosen else "")]
    for s in scores:
        acc = "—" if s.accuracy is None else f"{s.accuracy:.1%}"
        weight = f" {source_weight(s.accuracy):>6.2f}" if chosen else ""
        mark = "  ← chosen" if s.source == chosen else ""
        lines.append(f"{s.source:<10} {s.objects:>7} {s.failing_share:>9.1%} {s.answers:>7} {acc:>6}{weight}{mark}")
    return lines
