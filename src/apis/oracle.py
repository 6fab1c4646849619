"""Who answers point questions and judges exported masks, and the random initial points P0.

A question is "is pixel ``(x, y)`` on instance ``instance_id``?" for an integer pixel ``(x, y)`` =
(column, row) of the original image; the answer is 1 (yes) or 0 (no). In simulation
:class:`MaskOracle` reads ``mask[y, x]`` from the ground-truth mask; people answer through ``serve``.
A review judges a whole exported mask: accept or reject; in simulation :class:`MaskReviewer` compares it
with the ground-truth mask.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from apis.data.records import CocoDataset, ImageRecord, Instance, decode_segmentation
from apis.geometry import PixelWindow, omega
from apis.names import RANDOM_STRATEGY
from apis.store import PointAnswer

# P0 is asked by random choice, and the store records that as its strategy.
P0_STRATEGY = RANDOM_STRATEGY


class OracleError(ValueError):
    """A question an oracle cannot answer; the message names the instance and the fix."""


@dataclass(frozen=True)
class Query:
    """Is pixel ``(x, y)`` (column, row of the original image) on instance ``instance_id`` of ``image_id``?"""

    instance_id: int
    image_id: int
    x: int
    y: int


class Oracle(Protocol):
    """Anything that answers queries: one label (1 = on the object, 0 = off) per query, in order."""

    def answer(self, queries: Sequence[Query]) -> list[int]: ...


class MaskOracle:
    """Answers from ground-truth masks: the label of ``Query(x, y)`` is ``mask[y, x]``.

    Masks are decoded on first use and kept in a least-recently-used cache of ``cache_size`` instances,
    so a full COCO split does not have to fit in memory while questions grouped by image stay fast.
    Crowd regions can be asked about too (their masks are in the file), though P0 never does.
    """

    def __init__(self, dataset: CocoDataset, cache_size: int = 256) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._where: dict[int, tuple[ImageRecord, Instance]] = {
            a.id: (im, a) for im in dataset.images for a in im.instances
        }
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def answer(self, queries: Sequence[Query]) -> list[int]:
        return [self._answer_one(q) for q in queries]

    def mask(self, instance_id: int) -> np.ndarray:
        """The H×W uint8 ground-truth mask of an instance (1 = object), from the cache when possible."""
        cached = self._cache.get(instance_id)
        if cached is not None:
            self._cache.move_to_end(instance_id)
            return cached
        image, inst = self._lookup(instance_id)
        if inst.segmentation is None:
            raise OracleError(
                f"instance {instance_id} (image {image.id}) has no segmentation, so MaskOracle cannot answer "
                "for it; give it a mask in the COCO file or answer its points another way (serve)"
            )
        mask = inst.mask(image.height, image.width)
        self._cache[instance_id] = mask
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return mask

    def _lookup(self, instance_id: int) -> tuple[ImageRecord, Instance]:
        found = self._where.get(instance_id)
        if found is None:
            raise OracleError(
                f"instance {instance_id} is not in the oracle's dataset; build the oracle from the same file"
            )
        return found

    def _answer_one(self, query: Query) -> int:
        image, _ = self._lookup(query.instance_id)
        if query.image_id != image.id:
            raise OracleError(
                f"query for instance {query.instance_id} names image {query.image_id}, but the instance is "
                f"on image {image.id}; build queries from the same dataset"
            )
        if not (0 <= query.x < image.width and 0 <= query.y < image.height):
            raise OracleError(
                f"instance {query.instance_id}: pixel (x={query.x}, y={query.y}) lies outside the "
                f"{image.width}x{image.height} image; x is the column and y the row"
            )
        return int(self.mask(query.instance_id)[query.y, query.x])


SIMULATED_REVIEWER = "simulated"
"""The reviewer name the simulated reviewer's decisions carry in the store."""


@dataclass(frozen=True)
class MaskReviewer:
    """The simulated reviewer: accepts an exported mask whose IoU with the instance's ground-truth mask is at
    least ``accept_iou``, rejects it otherwise (``loop.review``)."""

    gt_mask: Callable[[int], np.ndarray]  # instance id → its H×W GT mask, e.g. MaskOracle.mask
    accept_iou: float = 0.75

    def judge(self, instance_id: int, mask: dict) -> tuple[str, float]:
        """``("accept" | "reject", IoU)`` for ``mask``, a COCO RLE at the full image size (as the export
        writes it). Two empty masks have IoU 1."""
        gt = np.asarray(self.gt_mask(instance_id)).astype(bool)
        height, width = gt.shape
        if list(mask.get("size", [])) != [height, width]:
            raise OracleError(f"instance {instance_id}: the mask to review is {mask.get('size')} (height, width) "
                              f"but its image is [{height}, {width}]; review masks exported from the same dataset")
        seg = decode_segmentation(mask, height, width).astype(bool)
        union = int((seg | gt).sum())
        iou = 1.0 if union == 0 else int((seg & gt).sum()) / union
        return ("accept" if iou >= self.accept_iou else "reject"), iou


def sample_window(window: PixelWindow, k: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to ``k`` distinct pixels ``(x, y)`` drawn uniformly from ``window`` (fewer when it is smaller)."""
    n = window.width * window.height
    chosen = rng.choice(n, size=min(k, n), replace=False)
    return [(window.x0 + int(i) % window.width, window.y0 + int(i) // window.width) for i in chosen]


def initial_points(dataset: CocoDataset, seed: int, k: int = 1) -> list[Query]:
    """P0 questions: ``k`` distinct uniform random pixels inside each pool instance's Ω.

    Each instance draws from its own stream ``np.random.default_rng([seed, instance_id])``, so its points
    depend only on the seed and the instance, not on the order or content of the rest of the dataset.
    ``k`` is capped by the number of pixels in Ω. Queries come in dataset order.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if k < 1:
        raise ValueError(f"k (points per instance) must be at least 1, got {k}")
    queries: list[Query] = []
    for image in dataset.images:
        for inst in image.pool:
            rng = np.random.default_rng([seed, inst.id])
            window = omega(inst.box, image.width, image.height)
            queries.extend(Query(inst.id, image.id, x, y) for x, y in sample_window(window, k, rng))
    return queries


def ask(
    oracle: Oracle, queries: Sequence[Query], step: int, strategy: str, annotator: str = "oracle"
) -> list[PointAnswer]:
    """Put ``queries`` to ``oracle`` and wrap its labels as answers of ``step`` chosen by ``strategy``."""
    labels = oracle.answer(queries)
    if len(labels) != len(queries):
        raise OracleError(f"the oracle gave {len(labels)} answers to {len(queries)} queries; answer each")
    now = time.time()
    # Only 0/1 become plain ints; anything else (0.7, 2) goes through unchanged so the store refuses it.
    labels = [int(label) if label in (0, 1) else label for label in labels]
    return [
        PointAnswer(q.instance_id, q.x, q.y, label, step, strategy, annotator, now)
        for q, label in zip(queries, labels, strict=True)
    ]


def initial_answers(
    dataset: CocoDataset, oracle: Oracle, seed: int, k: int = 1, annotator: str = "oracle"
) -> list[PointAnswer]:
    """P0: :func:`initial_points` answered by ``oracle``, as step-0 answers with strategy ``"random"``."""
    return ask(oracle, initial_points(dataset, seed, k), step=0, strategy=P0_STRATEGY, annotator=annotator)
