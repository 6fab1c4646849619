"""Masks for training that no person drew: GrabCut from each box and its answered points.

The boxes and the image's colours are known for the whole pool before anyone answers a point, and
GrabCut turns them into a mask far better than the box itself (see :mod:`apis.yardsticks`). The model
learns from these masks (a dice loss weighted by ``model.pseudo_mask_weight`` and, for ``auto``, by how far
each mask's source agrees with the held-out answers) beside its point loss,
so one point per object is no longer all the mask head sees.

Computing them costs about 60 ms an object on a CPU core, so a set is cached in a file keyed by the
instances and their points: a resumed or repeated phase reads it back instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from apis.data.loader import PseudoMask
from apis.data.records import CocoDataset
from apis.geometry import PixelWindow, omega
from apis.mask_checks import (
    BAND_EDGES,
    MIN_CROSS_CHECKED,
    NO_MODEL_SOURCES,
    SHAPE_SOURCES,
    SourceScore,
    choose_masks,
    format_bands,
    format_scores,
    judge_sources,
    ranked_sources,
    source_weight,
)
from apis.names import PSEUDO_MASK_SOURCES
from apis.yardsticks import GrabCutJob, Point, box_mask, default_workers, ellipse_mask, grabcut_pool, run_grabcut

Progress = Callable[[int, int], None]
CHUNK = 512  # objects cut per round of the process pool


def grabcut_pseudo_masks(
    dataset: CocoDataset,
    points: Mapping[int, Sequence[Point]] | None = None,
    instance_ids: Iterable[int] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> dict[int, PseudoMask]:
    """Instance id → GrabCut's mask over Ω for the pool instances of ``dataset`` (all, or those in
    ``instance_ids``), seeded with each one's answered ``points`` ((x, y, label), original pixels; none:
    the box alone). Images are read once each, in dataset order; ``workers`` processes (default: the
    machine's cores) cut a chunk of objects at a time, so memory stays bounded on a large pool."""
    from apis.data.images import load_rgb

    points = points or {}
    workers = default_workers() if workers is None else workers
    wanted = None if instance_ids is None else set(instance_ids)
    todo = [(im, [a for a in im.pool if wanted is None or a.id in wanted]) for im in dataset.images]
    todo = [(im, insts) for im, insts in todo if insts]
    total = sum(len(insts) for _, insts in todo)
    out: dict[int, PseudoMask] = {}
    jobs: list[tuple[int, PixelWindow, GrabCutJob]] = []

    with grabcut_pool(workers, total) as pool:

        def flush() -> None:
            for (i, win, _), mask in zip(jobs, run_grabcut([j for _, _, j in jobs], pool), strict=True):
                out[i] = PseudoMask(win, mask)
            jobs.clear()
            if progress is not None:
                progress(len(out), total)

        for image, insts in todo:
            rgb = load_rgb(dataset.image_path(image))
            for inst in insts:
                win = omega(inst.box, image.width, image.height)
                jobs.append((inst.id, win, GrabCutJob.of(rgb, inst.box, points.get(inst.id, ()))))
            if len(jobs) >= CHUNK:
                flush()
        if jobs:
            flush()
    return out


def cache_key(dataset: CocoDataset, points: Mapping[int, Sequence[Point]] | None) -> str:
    """A digest of the pool's images (file names and sizes), boxes and the points: two calls with the same
    key give the same masks."""
    h = hashlib.sha256()
    for image in dataset.images:
        h.update(json.dumps([image.id, image.file_name, image.width, image.height]).encode())
        for inst in image.pool:
            pts = sorted(tuple(int(v) for v in p) for p in (points or {}).get(inst.id, ()))
            h.update(json.dumps([inst.id, list(inst.box), pts]).encode())
    return h.hexdigest()[:16]


def cached_grabcut_pseudo_masks(
    cache_dir: Path,
    dataset: CocoDataset,
    points: Mapping[int, Sequence[Point]] | None = None,
    instance_ids: Iterable[int] | None = None,
    progress: Progress | None = None,
) -> dict[int, PseudoMask]:
    """:func:`grabcut_pseudo_masks` through a cache: ``cache_dir/grabcut-{key}.npz`` holds the masks already
    made for this pool and these points, and only the missing instances are computed (then the file is
    rewritten atomically, so a killed run leaves no half file). Returns the masks of ``instance_ids``
    (all pool instances when None)."""
    path = Path(cache_dir) / f"grabcut-{cache_key(dataset, points)}.npz"
    have = load_pseudo_masks(path) if path.is_file() else {}
    ids = [a.id for a in dataset.instances()] if instance_ids is None else list(instance_ids)
    missing = [i for i in ids if i not in have]
    if missing:
        have.update(grabcut_pseudo_masks(dataset, points, missing, progress))
        save_pseudo_masks(have, path)
    return {i: have[i] for i in ids}


def save_pseudo_masks(masks: Mapping[int, PseudoMask], path: Path) -> None:
    ids = np.array(sorted(masks), dtype=np.int64)
    windows = np.array([[masks[i].window.x0, masks[i].window.y0, masks[i].window.x1, masks[i].window.y1]
                        for i in ids], dtype=np.int64).reshape(-1, 4)
    bits = np.packbits(np.concatenate([masks[i].mask.ravel() for i in ids]) if len(ids) else np.zeros(0, bool))
    path.parent.mkdir(parents=True, exist_ok=True)
    # One temporary name per process: torchrun ranks may write the same cache at once.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, ids=ids, windows=windows, bits=bits)
    os.replace(tmp, path)


def load_pseudo_masks(path: Path) -> dict[int, PseudoMask]:
    with np.load(path) as f:
        ids, windows, bits = f["ids"], f["windows"], f["bits"]
    flat = np.unpackbits(bits).astype(bool)
    out, at = {}, 0
    for i, (x0, y0, x1, y1) in zip(ids.tolist(), windows.tolist(), strict=True):
        win = PixelWindow(x0, y0, x1, y1)
        n = win.width * win.height
        out[i] = PseudoMask(win, flat[at : at + n].reshape(win.height, win.width))
        at += n
    return out


def point_answers(points: Mapping[int, Sequence[Sequence[int]]] | None) -> dict[int, list[Point]]:
    """Instance id → its answers as (x, y, label), from the store's (x, y, label, step, ...) rows."""
    return {i: [(int(p[0]), int(p[1]), int(p[2])) for p in ps] for i, ps in (points or {}).items()}


@dataclass
class SourceChoice:
    """What ``loop.pseudo_masks: auto`` chose: the sources ranked (chosen first), each one's score on the
    held-out answers, and how many objects each source gave a mask (the others fell back per object)."""

    ranked: list[str]
    scores: list[SourceScore]
    used: dict[str, int]
    #: Shapes nothing judged (no answer at a random point, too few of GrabCut's masks passing the box check) that
    #: are not taught because the box's own terms teach the masks (:func:`auto_pseudo_masks`, ``box_teaches``).
    untaught: frozenset[str] = frozenset()

    @property
    def chosen(self) -> str:
        return self.ranked[0]

    @property
    def taught(self) -> str | None:
        """The chosen source where it is taught; None where it is not (:attr:`untaught`): no pseudo masks then."""
        return None if self.chosen in self.untaught else self.chosen

    def score(self, source: str) -> SourceScore:
        return next(s for s in self.scores if s.source == source)

    def weight(self, source: str) -> float:
        """How much training learns from ``source``'s masks (:func:`apis.mask_checks.source_weight`); 0 for an
        untaught shape."""
        return 0.0 if source in self.untaught else source_weight(self.score(source).estimate)

    def band_weights(self, source: str) -> tuple[float, ...] | None:
        """The weight of ``source``'s pixels per band of their box (:meth:`SourceScore.band_weights`)."""
        return self.score(source).band_weights()

    def table_lines(self, chose: bool = True) -> list[str]:
        """The source table for a terminal or log (:func:`apis.mask_checks.format_scores`); with ``chose``
        (``auto`` chose) the chosen source marked, the weights, and how many objects each source gave a mask."""
        lines = format_scores(self.scores, self.chosen if chose else None, self.untaught)
        if chose:
            lines.append("per object: " + ", ".join(f"{s} {n}" for s, n in self.used.items() if n))
            lines.extend(format_bands([self.score(s) for s, n in self.used.items() if n]))
            if untaught := [s for s in self.ranked if s in self.untaught and self.used.get(s)]:
                lines.append(f"not taught: nothing judges the {' or the '.join(untaught)} (no answer at a random "
                             f"point, under {MIN_CROSS_CHECKED} of GrabCut's masks pass the box check); their "
                             f"{sum(self.used[s] for s in untaught)} objects learn their masks from the boxes "
                             "through BoxInst's projection and colour-pairwise terms")
        return lines

    def to_json(self) -> dict:
        return {"chosen": self.chosen, "ranked": self.ranked, "used": self.used,
                "sources": [{"source": s.source, "objects": s.objects, "failing_box": s.failing, "agree": s.agree,
                             "answers": s.answers, "accuracy": s.accuracy, "cross_agreement": s.cross,
                             "cross_objects": s.cross_objects, "weight": self.weight(s.source),
                             "band_edges": list(BAND_EDGES), "band_answers": list(s.band_answers),
                             "band_agree": list(s.band_agree), "cross_band_objects": list(s.cross_band_objects),
                             "cross_band_sums": list(s.cross_band_sums), "band_weights": s.band_weights()}
                            for s in self.scores]}


def no_model_masks(cache_dir: Path | None, dataset: CocoDataset, instance_ids: Iterable[int] | None = None,
                   progress: Progress | None = None, sources: Sequence[str] = NO_MODEL_SOURCES,
                   ) -> dict[str, dict[int, tuple[PixelWindow, np.ndarray]]]:
    """Source → instance id → (Ω window, mask) for the no-model ``sources`` (:data:`NO_MODEL_SOURCES` by
    default): GrabCut from the box alone (no answer as a seed, so every answer judges it), the inscribed ellipse
    and the box filled. GrabCut is cut (or read from the cache) only when it is asked for."""
    unknown = [s for s in sources if s not in NO_MODEL_SOURCES]
    if unknown:
        raise ValueError(f"unknown no-model source(s) {unknown}; choose from {', '.join(NO_MODEL_SOURCES)}")
    ids = [a.id for a in dataset.instances()] if instance_ids is None else list(instance_ids)
    grabcut = {}
    if "grabcut" in sources:
        grabcut = (cached_grabcut_pseudo_masks(cache_dir, dataset, None, ids, progress) if cache_dir is not None
                   else grabcut_pseudo_masks(dataset, None, ids, progress))
    wanted, out = set(ids), {s: {} for s in sources}
    for im in dataset.images:
        for inst in im.pool:
            if inst.id in wanted:
                win = omega(inst.box, im.width, im.height)
                if "grabcut" in out:
                    out["grabcut"][inst.id] = (grabcut[inst.id].window, grabcut[inst.id].mask)
                if "ellipse" in out:
                    out["ellipse"][inst.id] = (win, ellipse_mask(inst.box, win))
                if "box" in out:
                    out["box"][inst.id] = (win, box_mask(win))
    return out


def judge_no_model_sources(cache_dir: Path | None, dataset: CocoDataset, answers: Mapping[int, Sequence[Point]],
                           instance_ids: Iterable[int] | None = None, progress: Progress | None = None,
                           sources: Sequence[str] = NO_MODEL_SOURCES,
                           ) -> tuple[SourceChoice, dict[str, dict[int, tuple[PixelWindow, np.ndarray]]]]:
    """Score the no-model ``sources`` on ``answers`` (all held out: none of them is seeded with an answer), rank
    them (:func:`apis.mask_checks.ranked_sources`), and return the choice with the candidate masks."""
    masks = no_model_masks(cache_dir, dataset, instance_ids, progress, sources)
    scores = judge_sources(masks, answers)
    return SourceChoice(ranked_sources(scores), scores, {}), masks


def auto_pseudo_masks(cache_dir: Path, dataset: CocoDataset, points: Mapping[int, Sequence[Sequence[int]]] | None,
                      progress: Progress | None = None, judged: Mapping[int, Sequence[Point]] | None = None,
                      by_band: bool = True, box_teaches: bool = False) -> tuple[dict[int, PseudoMask], SourceChoice]:
    """``loop.pseudo_masks: auto``: per dataset the no-model source that agrees best with the answered points
    (none of them saw one) among those that pass the box check on most objects; per object the next source
    where its mask fails the checks (empty, short of the box's sides, or against its answers), so no object
    learns from an empty mask. Each mask is weighed by how far its source agrees with the held-out answers
    (:attr:`PseudoMask.weight`, :func:`apis.mask_checks.source_weight`): a shape that is right on two pixels
    of three teaches less than one right on five of six. Without any answer (``points`` empty or None: the
    box-only start) a shape is weighed by its agreement with GrabCut where GrabCut passes the box check
    (:func:`apis.mask_checks.cross_agreement`), and GrabCut, judged by that check, at 1.

    With ``by_band`` (the default) the weight is given per band of the box's normalised radius
    (:meth:`apis.mask_checks.SourceScore.band_weights`, :attr:`PseudoMask.band_weights`): each pixel counts as
    much as its source's agreement with the answers in its band has earned (without answers, a shape's
    agreement with GrabCut there), and the mask as a whole as much as its pixels' mean weight.
    ``by_band=False``: one weight per source (the rule before 2026-12-04's fifth sitting, kept for the
    benchmarks that were measured with it).

    ``box_teaches``: the model learns masks from the boxes themselves (BoxInst's projection and colour-pairwise
    terms, :func:`apis.box_start.box_teaches_masks`). Where a shape is the choice and nothing judges it (no answer
    at a random point, under :data:`apis.mask_checks.MIN_CROSS_CHECKED` of GrabCut's masks passing the box check),
    the shapes are not taught: their objects get no pseudo mask (:attr:`SourceChoice.untaught`). Taught blind at
    full weight, the ellipse cut off the limbs the pairwise term would have found: Penn-Fudan where GrabCut fails,
    box-only M0 23.3 mask AP with it, 35.3 without (seed 0; docs/evidence.md, "Where nothing can judge the term").
    Without those terms (False) a shape is the only mask cue and is taught at full weight, as before.

    ``judged``: the answers the sources are scored and weighed on (instance id → (x, y, label)), where not every
    answer is fit for it: only those at random points estimate a source's accuracy over its boxes
    (:meth:`apis.store.Store.random_answers`); None: all of ``points``. Every answer of ``points`` still
    checks its own object's mask: it is a true label wherever it was asked."""
    answers = point_answers(points)
    choice, masks = judge_no_model_sources(cache_dir, dataset, answers if judged is None else judged,
                                           progress=progress)
    picked = choose_masks(masks, choice.ranked, answers)
    used = {s: 0 for s in choice.ranked}
    for source, _, _ in picked.values():
        used[source] += 1
    choice.used.update(used)
    # Only where a shape is the dataset's choice: then M0 learns the pairwise term (apis.box_start), which finds the
    # outline. Where GrabCut is chosen the term is not tried, and a shape is the only mask of GrabCut's failures.
    if box_teaches and choice.chosen in SHAPE_SOURCES:
        choice = replace(choice, untaught=frozenset(
            s.source for s in choice.scores if s.source in SHAPE_SOURCES and s.estimate is None))
        picked = {i: p for i, p in picked.items() if p[0] not in choice.untaught}
    weights = {s: choice.weight(s) for s in choice.ranked}
    bands = {s: choice.band_weights(s) if by_band else None for s in choice.ranked}
    out = {}
    for i, (source, win, mask) in picked.items():
        if bands[source] is None:
            out[i] = PseudoMask(win, mask, weights[source])
        else:
            # The mask counts as much as its pixels' mean weight; inside it, each band as much as it has earned.
            banded = PseudoMask(win, mask, 1.0, bands[source])
            out[i] = replace(banded, weight=float(banded.pixel_weights().mean()))
    return out, choice


def training_pseudo_masks(
    cache_dir: Path,
    dataset: CocoDataset,
    source: str,
    points: Mapping[int, Sequence[Sequence[int]]] | None,
    progress: Progress | None = None,
) -> dict[int, PseudoMask]:
    """The pseudo masks a training phase learns from (``loop.pseudo_masks``): ``"grabcut"``, GrabCut from
    each box alone; ``"grabcut_points"``, seeded with ``points`` (instance id → (x, y, label, ...) answers);
    ``"ellipse"`` or ``"box"``, the shape each box draws (no cut). A named source is learnt from at weight 1.
    ``"auto"``: see :func:`auto_pseudo_masks` (the loop calls it itself, to report the choice); ``"refined"``
    gives the same here, what M0 learns from, and for later steps the loop makes them from the previous model's
    export (:func:`apis.export.export_pseudo_masks`).
    """
    if source not in PSEUDO_MASK_SOURCES:
        raise ValueError(f"unknown pseudo-mask source {source!r}; choose {' or '.join(PSEUDO_MASK_SOURCES)}")
    if source in ("auto", "refined"):
        return auto_pseudo_masks(cache_dir, dataset, points, progress)[0]
    if source in SHAPE_SOURCES:
        shapes = no_model_masks(None, dataset, sources=(source,))[source]
        return {i: PseudoMask(win, mask) for i, (win, mask) in shapes.items()}
    seeds = point_answers(points) if source == "grabcut_points" else None
    return cached_grabcut_pseudo_masks(cache_dir, dataset, seeds, progress=progress)
