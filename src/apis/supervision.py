"""What ``apis train`` learns from: random answered points, the points of a run, every GT mask, or boxes alone.

The transfer experiments of the paper (train a model from another run's acquired points) start here; the
exact point set a model learned from is written beside it (:func:`write_training_points`) in PointSup's
keys, so a transfer can be checked point for point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apis.atomic import write_json_atomic
from apis.data.records import CocoDataset
from apis.layout import STORE_FILE
from apis.oracle import MaskOracle, initial_answers
from apis.store import Store

KINDS = ("points", "masks", "boxes")

Points = dict[int, list[tuple[int, ...]]]
"""Instance id → answered pixels (x, y, label[, step]) in original-image pixels, as TrainingSet takes them."""


@dataclass(frozen=True)
class Supervision:
    """``points`` (None: no point supervision) and ``mask_ids`` (instances trained on their GT mask)."""

    points: Points | None = None
    mask_ids: set[int] | None = None


def run_answers(run: Path, max_step: int | None = None) -> tuple[Points, dict[int, list[tuple[int, int, int]]]]:
    """The answers stored in project or run folder ``run`` (steps ≤ ``max_step``), and among them those at points
    drawn at random in the box (:meth:`apis.store.Store.random_answers`): what ``loop.pseudo_masks: auto`` may
    judge its sources on when a model learns from that run's points (an Entropy run's later points lie at the
    objects' edges; imported answers are left out, their points' origin unknown). FileNotFoundError naming the
    folder when it holds no store."""
    if not (Path(run) / STORE_FILE).exists():
        raise FileNotFoundError(f"{run}: no {STORE_FILE} there; name a project or run folder")
    with Store.open(Path(run) / STORE_FILE) as store:
        points = {i: [(p.x, p.y, p.label, p.step) for p in ps] for i, ps in store.points(max_step=max_step).items()}
        return points, store.random_answers(max_step)


def random_points(train_set: CocoDataset, k: int, seed: int) -> Points:
    """``k`` random points per pool instance, answered from the GT masks (simulation), as P0 draws them."""
    pts: Points = {}
    for a in initial_answers(train_set, MaskOracle(train_set), seed, k=k):
        pts.setdefault(a.instance_id, []).append((a.x, a.y, a.label))
    return pts


def supervision(train_set: CocoDataset, kind: str, points: int = 1, seed: int = 0,
                given_points: Points | None = None) -> Supervision:
    """``kind`` ``points``: ``given_points`` (e.g. :func:`run_answers`) or else ``points`` random ones per
    instance; ``masks``: every pool instance's GT mask; ``boxes``: neither (box losses only)."""
    if kind == "masks":
        return Supervision(mask_ids={a.id for a in train_set.instances()})
    if kind == "points":
        return Supervision(points=given_points if given_points is not None else random_points(train_set, points, seed))
    if kind == "boxes":
        return Supervision()
    raise ValueError(f"unknown supervision {kind!r}; choose {', '.join(KINDS)}")


def write_training_points(points: Points, path: Path) -> int:
    """Write ``points`` as ``{instance id: {point_coords, point_labels}}`` to ``path`` (atomically); returns
    how many points."""
    write_json_atomic({str(i): {"point_coords": [[p[0], p[1]] for p in ps], "point_labels": [p[2] for p in ps]}
                       for i, ps in sorted(points.items())}, path)
    return sum(map(len, points.values()))
