"""What an export makes of the pool: one :class:`InstanceExport` per pool instance and the whole
:class:`ExportResult`; the model interface it needs (:class:`MaskModel`) and its error (:class:`ExportError`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from apis.data.writers import WriteResult
from apis.store import ReviewDecision

#: An answer as (x, y, label): integer pixel (column, row) of the original image, 1 = on the object.
Answer = tuple[int, int, int]
Progress = Callable[[int, int], None]


class ExportError(ValueError):
    """Masks cannot be exported; the message names the file or record and the fix."""


class MaskModel(Protocol):
    """What the export needs from a model (a :class:`apis.models.condinst.CondInst` satisfies it).

    ``prediction_sets(images, targets)``: per image, per target instance, a K×h×w tensor of mask
    probabilities over the instance's Ω (``targets[b]["windows"]``), original pixels, K ≥ 0.
    ``model(images)``: per image a dict with ``boxes`` (N×4 xyxy original pixels), ``labels`` (N, 0-based
    class index), ``scores`` (N) and ``masks`` (N×1×H×W probabilities at the original size).
    ``images`` are 3×H×W float tensors in [0, 1] at their original size. Prediction set ``S`` also needs
    ``cfg.test_min_size`` and a ``min_size`` keyword of ``prediction_sets`` (see
    :func:`apis.selection.select.prediction_sets`).
    """

    def prediction_sets(self, images: list[Tensor], targets: list[dict]) -> list[list[Tensor]]: ...

    def __call__(self, images: list[Tensor]) -> list[dict]: ...


@dataclass(frozen=True)
class InstanceExport:
    """What the export made of one pool instance. ``score``: its ``apis_score`` (:mod:`apis.export.trust`);
    ``points_agree``: the share of its answered points the model's thresholded map got right before forcing
    (None without answers or mask); ``area`` in pixels (0 for a missing instance); ``k`` the size of its
    prediction set."""

    annotation_id: int
    image_id: int
    source: str  # "prediction_set", "detection", "no_model" (refine="auto"), "missing" or "reviewed"
    score: float
    points_agree: float | None
    points: int
    forced_pixels: int
    area: int
    k: int
    refinement: str | None = None  # "grabcut" / "grabcut_box" (pick_refinement), "ellipse", None: the map's threshold
    box_sides: int | None = None  # sides of the box the exported mask reaches (apis.mask_checks.sides_reached)
    # What the score was drawn from (apis.export.trust): how many times the model's map counted (the detection's
    # score, 0 where it cannot judge the object), and the fitted chances that the ellipse in the box and GrabCut's
    # cut from it are right in a box like this one (None: not a vote, the answers fitted nothing or no cut)
    map_weight: float = 1.0
    shape_fit: float | None = None
    cut_fit: float | None = None
    review: ReviewDecision | None = None  # the accept whose mask this is (source "reviewed")

    @property
    def missing(self) -> bool:
        return self.source == "missing"

    @property
    def reviewed(self) -> bool:
        return self.source == "reviewed"


@dataclass
class ExportResult:
    """The COCO json object (``coco``), one :class:`InstanceExport` per pool instance in file order, and
    the review list (the least trustworthy instances, :func:`apis.export.trust.review_list`)."""

    coco: dict
    instances: list[InstanceExport]
    review: list[dict] = field(default_factory=list)
    written: WriteResult | None = None  # what a folder export wrote (export_masks_cli)

    @property
    def missing(self) -> list[int]:
        """Annotation ids of the pool instances that got no mask."""
        return [e.annotation_id for e in self.instances if e.missing]

    @property
    def forced_pixels(self) -> int:
        """Pixels changed by answered points, over all instances."""
        return sum(e.forced_pixels for e in self.instances)

    @property
    def forced_per_instance(self) -> dict[int, int]:
        """Annotation id → pixels changed by its answered points (instances with none left out)."""
        return {e.annotation_id: e.forced_pixels for e in self.instances if e.forced_pixels}
