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
strategy that asks where the model is unsure asks at the edges, where every shape errs). Without any answer (the
box-only start) the box check judges GrabCut, which can fail it, but not the shapes, which pass it by construction;
they are judged instead by how far they agree with GrabCut's masks where those pass the box check
(:func:`cross_agreement`): the image's colours are the one opinion about the object's shape that is independent
of the box's, and where GrabCut's mask reaches the box's sides it is mostly right (84% of the pixels on
Penn-Fudan's people, 95% on DSB's nuclei), so the agreement tracks the shape's own accuracy (the ellipse: 66.7%
against its true 64.2% on Penn-Fudan, 83.5% against 83.8% on DSB 2018). :func:`pick_source`
takes the most accurate source among those that pass the box check on most objects; :func:`choose_masks` then
gives every object the chosen source's mask, or where it fails the checks, the next source's, so no object gets
an empty mask. Objects are masks over their Ω window (:func:`apis.geometry.omega`), h×w bool in original pixels;
answers are (x, y, label) original pixels.

A source is not equally right everywhere in its boxes: the ellipse is right on 97% of the pixels at the centre of
Penn-Fudan's people and on 39% of those just inside its rim (between the legs, beside the torso), and on DSB's
nuclei wrong mostly about its rim. So the answers are also counted apart by where they fall in their box, in
bands of the normalised radius ρ (:func:`radial_bands`: 0 at the box's centre, 1 on the inscribed ellipse), and
each band's agreement, shrunk towards the source's overall agreement by :data:`BAND_PRIOR` answers, gives the
pixels of that band their own weight (:meth:`SourceScore.band_weights`): training learns from the parts of a
source the answers vouch for and not from the rest. Without answers a shape's bands are weighed the same way by
its agreement with GrabCut's masks that pass the box check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from apis.geometry import PixelWindow, ellipse_radius_sq

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
#: Without answers a shape is judged by its agreement with GrabCut only on at least this many objects whose GrabCut
#: mask passes the box check (as :data:`apis.shape_prior.MIN_OBJECTS` answered objects fit the shape prior).
MIN_CROSS_CHECKED = 30

#: Upper edges of the bands of the normalised radius ρ (:func:`radial_bands`); the last band holds every ρ beyond
#: the last edge (the box's corners reach ρ = √2).
BAND_EDGES = (0.25, 0.5, 0.75, 1.0, 1.25)
#: A band's agreement is shrunk towards the source's overall agreement as if it held this many more answers at
#: it, so a band with few answers keeps about the source's weight.
BAND_PRIOR = 10

Answer = tuple[int, int, int]


def radial_bands(win: PixelWindow, xs: np.ndarray | None = None, ys: np.ndarray | None = None) -> np.ndarray:
    """Band index (0 … len(:data:`BAND_EDGES`)) of pixels by their normalised radius in ``win``:
    ρ = √(((x + ½ − cx)/(w/2))² + ((y + ½ − cy)/(h/2))²) about the window's centre (cx, cy), so ρ = 1 on the
    ellipse inscribed in it (Ω of a box is the box to within a pixel; a box cut by the image's edge is banded
    about what is left of it). ``xs``, ``ys``: integer original pixels (any shape); default: every pixel of
    ``win`` (h×w)."""
    if xs is None or ys is None:
        ys, xs = np.mgrid[win.y0:win.y1, win.x0:win.x1]
    # ρ² against the edges squared (exact in binary): the same ρ as the ellipse's (apis.yardsticks.ellipse_mask).
    rho_sq = ellipse_radius_sq((win.x0, win.y0, win.x1, win.y1), xs, ys)
    return np.searchsorted(np.square(BAND_EDGES), rho_sq, side="right")


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
    agree, n = answer_agreement(mask, win, answers)
    return MaskCheck(int(mask.sum()), sides_reached(mask, resolution), agree, n)


def answer_agreement(mask: np.ndarray, win: PixelWindow, answers: Iterable[Answer]) -> tuple[int, int]:
    """(answers ``mask`` (h×w over ``win``) gets right, answers inside ``win``)."""
    xs, ys, labels = answers_in(win, answers)
    return int((np.asarray(mask)[ys - win.y0, xs - win.x0].astype(bool) == labels).sum()), len(labels)


def answers_in(win: PixelWindow, answers: Iterable[Answer]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``answers`` inside ``win`` as arrays: columns and rows (int, original pixels) and labels (bool, True =
    on the object); those outside are left out (no pixel of a mask over ``win`` can hold them)."""
    inside = [(x, y, label) for x, y, label in answers if win.contains(x, y)]
    if not inside:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0, dtype=bool)
    xs, ys, labels = (np.array(v) for v in zip(*inside, strict=True))
    return xs, ys, labels.astype(bool)


@dataclass(frozen=True)
class SourceScore:
    """One source over the pool: ``objects`` judged, ``failing`` the box check, ``agree`` of ``answers``;
    ``cross``: without answers, a shape's pixel agreement with GrabCut over the ``cross_objects`` objects whose
    GrabCut mask passes the box check (:func:`cross_agreement`), else None."""

    source: str
    objects: int
    failing: int
    agree: int
    answers: int
    cross: float | None = None
    cross_objects: int = 0
    band_agree: tuple[int, ...] = ()
    band_answers: tuple[int, ...] = ()
    cross_band_sums: tuple[float, ...] = ()
    cross_band_objects: tuple[int, ...] = ()

    @property
    def accuracy(self) -> float | None:
        """Share of the answers it agreed with; None without answers."""
        return self.agree / self.answers if self.answers else None

    @property
    def estimate(self) -> float | None:
        """The best estimate of its accuracy at hand: on the answers, else by ``cross``; None without either."""
        return self.accuracy if self.answers else self.cross

    def band_accuracy(self) -> np.ndarray | None:
        """Per band of :func:`radial_bands`, the share of its answers the source agreed with, shrunk towards
        :attr:`accuracy` by :data:`BAND_PRIOR` answers; without answers, a shape's mean agreement with GrabCut in
        the band (each object whose GrabCut mask passes the box check once), shrunk towards :attr:`cross` by as
        many objects; None with neither."""
        if self.answers and self.band_answers:
            agree, n, overall = self.band_agree, self.band_answers, self.accuracy
        elif not self.answers and self.cross is not None and self.cross_band_objects:
            agree, n, overall = self.cross_band_sums, self.cross_band_objects, self.cross
        else:
            return None
        return (np.asarray(agree, float) + BAND_PRIOR * overall) / (np.asarray(n, float) + BAND_PRIOR)

    def band_weights(self) -> tuple[float, ...] | None:
        """:func:`source_weight` of each band's :meth:`band_accuracy`: how much training learns from the source's
        pixels in that band; None without answers counted by band."""
        acc = self.band_accuracy()
        return None if acc is None else tuple(source_weight(float(a)) for a in acc)

    @property
    def failing_share(self) -> float:
        return self.failing / self.objects if self.objects else 0.0


def judge_sources(masks: Mapping[str, Mapping[int, tuple[PixelWindow, np.ndarray]]],
                  answers: Mapping[int, Sequence[Answer]]) -> list[SourceScore]:
    """:class:`SourceScore` of each source in ``masks`` (source → instance id → (window, mask)), on the
    ``answers`` (instance id → (x, y, label)) — pass only answers the sources were not seeded with."""
    out = []
    bands = len(BAND_EDGES) + 1
    for source, per_object in masks.items():
        failing = 0
        band_agree, band_n = np.zeros(bands, int), np.zeros(bands, int)
        for iid, (win, mask) in per_object.items():
            failing += not check_mask(mask, win).passes_box
            xs, ys, labels = answers_in(win, answers.get(iid, ()))
            if len(labels):
                right = mask[ys - win.y0, xs - win.x0].astype(bool) == labels
                band = radial_bands(win, xs, ys)
                np.add.at(band_agree, band, right)
                np.add.at(band_n, band, 1)
        out.append(SourceScore(source, len(per_object), failing, int(band_agree.sum()), int(band_n.sum()),
                               band_agree=tuple(band_agree.tolist()), band_answers=tuple(band_n.tolist())))
    if "grabcut" in masks and not any(s.answers for s in out):
        for k, score in enumerate(out):
            if score.source in SHAPE_SOURCES:
                c = cross_agreement(masks[score.source], masks["grabcut"])
                out[k] = replace(score, cross=c.share, cross_objects=c.objects, cross_band_sums=c.band_sums,
                                 cross_band_objects=c.band_objects)
    return out


@dataclass(frozen=True)
class CrossAgreement:
    """A shape against GrabCut's masks that pass the box check: ``share`` of Ω's pixels where the two agree,
    averaged over those ``objects`` (None under :data:`MIN_CROSS_CHECKED` of them), and per band of
    :func:`radial_bands` the sum over objects of the band's share (``band_sums``) over ``band_objects`` objects
    with pixels in it."""

    share: float | None
    objects: int
    band_sums: tuple[float, ...]
    band_objects: tuple[int, ...]


def cross_agreement(shapes: Mapping[int, tuple[PixelWindow, np.ndarray]],
                    cuts: Mapping[int, tuple[PixelWindow, np.ndarray]]) -> CrossAgreement:
    """:class:`CrossAgreement` of ``shapes`` with ``cuts`` (instance id → (window, h×w bool) both) over the
    objects whose cut passes the box check. Each object counts once, as each holds one answer at a random pixel,
    and once in each band it has pixels in."""
    bands = len(BAND_EDGES) + 1
    shares, band_sums, band_objects = [], np.zeros(bands), np.zeros(bands, int)
    for iid, (win, cut) in cuts.items():
        if iid in shapes and shapes[iid][0] == win and check_mask(cut, win).passes_box:
            same = (shapes[iid][1] == cut).ravel()
            shares.append(float(same.mean()))
            band = radial_bands(win).ravel()
            n = np.bincount(band, minlength=bands)
            band_sums += np.bincount(band, weights=same, minlength=bands) / np.maximum(n, 1)
            band_objects += n > 0
    enough = len(shares) >= MIN_CROSS_CHECKED
    return CrossAgreement(float(np.mean(shares)) if enough else None, len(shares),
                          tuple(band_sums.tolist()) if enough else (), tuple(band_objects.tolist()) if enough else ())


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
    ``accuracy`` is :attr:`SourceScore.estimate` (without answers, a shape's agreement with GrabCut); None (no
    estimate: GrabCut in the box-only start, whose judge is the box check it passed) gives 1."""
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


def format_scores(scores: Sequence[SourceScore], chosen: str | None = None, untaught: Iterable[str] = ()
                  ) -> list[str]:
    """The source table as lines for a terminal or log: one line per source; with ``chosen`` (``auto`` chose),
    the weight its masks are learnt with as well (0 for the ``untaught`` sources)."""
    untaught = set(untaught)
    lines = [f"{'source':<10} {'objects':>7} {'fails box':>9} {'answers':>7} {'agree':>6}"
             + (f" {'weight':>6}" if chosen else "")]
    for s in scores:
        acc = "—" if s.estimate is None else f"{'' if s.answers else '≈'}{s.estimate:.1%}"
        w = 0.0 if s.source in untaught else source_weight(s.estimate)
        weight = f" {w:>6.2f}" if chosen else ""
        mark = "  ← chosen" if s.source == chosen else ""
        lines.append(f"{s.source:<10} {s.objects:>7} {s.failing_share:>9.1%} {s.answers:>7} {acc:>6}{weight}{mark}")
    crossed = [s for s in scores if not s.answers and s.cross_objects]
    if crossed:
        n = crossed[0].cross_objects
        lines.append(f"≈: no answers; a shape's agreement with GrabCut's masks on the {n} objects where they pass the "
                     f"box check{'' if crossed[0].cross is not None else f' (under {MIN_CROSS_CHECKED}: not judged)'}")
    return lines


def format_bands(scores: Sequence[SourceScore]) -> list[str]:
    """Per source with answers counted by band: its agreement and weight in each band of the box's normalised
    radius ρ, one line each (for the source table)."""
    edges = (0.0, *BAND_EDGES)
    names = [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:], strict=False)] + [f">{edges[-1]:g}"]
    lines = []
    for s in scores:
        acc, w = s.band_accuracy(), s.band_weights()
        if acc is None or w is None:
            continue
        if not lines:
            lines.append(f"by band of ρ (0 centre, 1 ellipse): {' '.join(f'{n:>9}' for n in names)}")
        agree = " agree" if s.answers else " ≈agree (with GrabCut)"
        lines.append(f"  {s.source + agree:<33} {' '.join(f'{a:>9.0%}' for a in acc)}")
        lines.append(f"  {s.source + ' weight':<33} {' '.join(f'{x:>9.2f}' for x in w)}")
    return lines
