"""Training samples and batches: images with the supervision each instance has.

Per instance the supervision is points (from the store), a full mask (bought, as in AFIS, or the
fully supervised reference), or the box only. Batches follow a deterministic order that is a pure
function of (seed, iteration), so a resumed run sees exactly the batches it would have seen, and
every strategy of a comparison sees the same data order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from apis.data.images import load_rgb
from apis.data.records import CocoDataset, ImageRecord
from apis.data.transforms import hflip
from apis.geometry import PixelWindow
from apis.mask_checks import radial_bands

# (x, y, label) in original pixels, or (x, y, label, step) with the loop step that asked the point
# (0 = P0, uniform at random; s ≥ 1 = acquired by a strategy). Without a step a point counts as random.
PointList = Sequence[tuple[int, int, int] | tuple[int, int, int, int]]


def image_tensor(dataset: CocoDataset, image: ImageRecord) -> Tensor:
    """3×H×W float in [0, 1]."""
    return torch.from_numpy(load_rgb(dataset.image_path(image))).permute(2, 0, 1).float().div_(255.0)


def category_index(dataset: CocoDataset) -> dict[int, int]:
    """COCO category id → contiguous 0-based class index (in the order of the file's categories)."""
    return {c.id: i for i, c in enumerate(dataset.categories)}


@dataclass(frozen=True)
class PseudoMask:
    """A mask no person drew (e.g. GrabCut's from the box), over the instance's Ω window: ``mask`` is
    window.height × window.width bool, in original image pixels. ``weight`` in [0, 1] scales its loss
    (within ``model.pseudo_mask_weight``): how far its source has earned trust on the held-out answers
    (:func:`apis.mask_checks.source_weight`)."""

    window: PixelWindow
    mask: np.ndarray
    weight: float = 1.0
    #: Per band of the box's normalised radius (:func:`apis.mask_checks.radial_bands`), the weight of the mask's
    #: pixels there relative to each other (inside the dice loss; ``weight`` scales the whole mask); None: all
    #: pixels alike.
    band_weights: tuple[float, ...] | None = None

    def pixel_weights(self) -> np.ndarray | None:
        """window.height × window.width float32 in [0, 1]: each pixel's weight from :attr:`band_weights`."""
        if self.band_weights is None:
            return None
        return np.asarray(self.band_weights, dtype=np.float32)[radial_bands(self.window)]


def make_target(
    image: ImageRecord,
    classes: Mapping[int, int],
    points: Mapping[int, PointList] | None = None,
    mask_ids: set[int] | None = None,
    pseudo_masks: Mapping[int, PseudoMask] | None = None,
) -> dict:
    """Target dict for ``image``'s pool instances.

    ``boxes`` G×4 xyxy original pixels; ``labels`` G class indices; ``instance_ids`` G annotation ids;
    ``points`` G×P×2 long (x, y) original pixels, ``point_labels`` G×P (1/0, −1 = padding) and
    ``point_steps`` G×P (the step that asked each point, −1 = padding; read only for training statistics)
    when ``points`` is given; ``masks`` G×H×W uint8, ``has_mask`` G bool, ``mask_is_pseudo`` G bool and
    ``mask_weight`` G float (a pseudo mask's :attr:`PseudoMask.weight`, 1 otherwise) when any instance is in
    ``mask_ids`` (its GT mask) or has a mask in ``pseudo_masks`` (pasted into its window; a GT mask wins);
    ``mask_pixel_weights`` G×H×W uint8 (255 = 1: a pseudo mask's :meth:`PseudoMask.pixel_weights` in its window,
    1 elsewhere and for every other instance) when any pseudo mask has band weights.
    The model weighs pseudo masks apart and keeps their points.
    """
    pool = image.pool
    target: dict = {
        "boxes": torch.tensor([a.box for a in pool], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([classes[a.category_id] for a in pool], dtype=torch.long),
        "instance_ids": torch.tensor([a.id for a in pool], dtype=torch.long),
    }
    if points is not None:
        p = max([len(points.get(a.id, ())) for a in pool] + [1])
        coords = torch.zeros((len(pool), p, 2), dtype=torch.long)
        labels = torch.full((len(pool), p), -1, dtype=torch.long)
        steps = torch.full((len(pool), p), -1, dtype=torch.long)
        for g, a in enumerate(pool):
            for k, (x, y, lab, *step) in enumerate(points.get(a.id, ())):
                coords[g, k, 0], coords[g, k, 1], labels[g, k] = x, y, lab
                steps[g, k] = step[0] if step else 0
        target["points"], target["point_labels"], target["point_steps"] = coords, labels, steps
    mask_ids = mask_ids or set()
    pseudo_masks = pseudo_masks or {}
    real = [a.id in mask_ids for a in pool]
    pseudo = [not r and a.id in pseudo_masks for r, a in zip(real, pool, strict=True)]
    if any(real) or any(pseudo):
        masks = np.zeros((len(pool), image.height, image.width), dtype=np.uint8)
        for g, a in enumerate(pool):
            if real[g]:
                masks[g] = a.mask(image.height, image.width)
            elif pseudo[g]:
                pm = pseudo_masks[a.id]
                masks[g, pm.window.y0 : pm.window.y1, pm.window.x0 : pm.window.x1] = pm.mask
        target["masks"] = torch.from_numpy(masks)
        target["has_mask"] = torch.tensor([r or p for r, p in zip(real, pseudo, strict=True)], dtype=torch.bool)
        target["mask_is_pseudo"] = torch.tensor(pseudo, dtype=torch.bool)
        target["mask_weight"] = torch.tensor([pseudo_masks[a.id].weight if p else 1.0
                                              for p, a in zip(pseudo, pool, strict=True)], dtype=torch.float32)
        banded = [g for g, a in enumerate(pool) if pseudo[g] and pseudo_masks[a.id].band_weights is not None]
        if banded:
            # uint8 like the masks (a weight to 1/255): a DSB image holds a hundred nuclei at full size.
            weights = np.full((len(pool), image.height, image.width), 255, dtype=np.uint8)
            for g in banded:
                pm = pseudo_masks[pool[g].id]
                w = pm.window
                weights[g, w.y0 : w.y1, w.x0 : w.x1] = np.rint(pm.pixel_weights() * 255)
            target["mask_pixel_weights"] = torch.from_numpy(weights)
    return target


#: Bytes of built targets a :class:`TrainingSet` keeps (per process: each DataLoader worker and DDP rank has its
#: own). A target holds every instance's mask at the image's full size, so COCO's train2017 with pseudo masks
#: (860k objects at about 280k pixels each) would need some 240 GB; past the budget targets are built per sample.
TARGET_CACHE_BYTES = 2 << 30


def target_bytes(target: dict) -> int:
    """Bytes of a target's tensors."""
    return sum(v.nbytes for v in target.values() if isinstance(v, Tensor))


class TrainingSet(Dataset):
    """Items are ``(index, flip)`` pairs from :class:`IterationSampler`; returns ``(image, target)``.

    Built targets are kept while they fit ``cache_target_bytes`` (:data:`TARGET_CACHE_BYTES` by default), the
    first ones built; the others are built again each time they are drawn, the same tensors."""

    def __init__(
        self,
        dataset: CocoDataset,
        points: Mapping[int, PointList] | None = None,
        mask_ids: set[int] | None = None,
        cache_images: bool | None = None,
        pseudo_masks: Mapping[int, PseudoMask] | None = None,
        cache_target_bytes: int = TARGET_CACHE_BYTES,
    ):
        self.dataset = dataset
        self.images = [im for im in dataset.images if im.pool]
        self.classes = category_index(dataset)
        self.points = points
        self.mask_ids = mask_ids
        self.pseudo_masks = pseudo_masks
        if cache_images is None:  # decoded images of a small dataset fit in memory; COCO's do not
            cache_images = len(self.images) <= 5000
        self._cache: dict[int, Tensor] | None = {} if cache_images else None
        self._targets: dict[int, dict] = {}  # decoding masks is the slow part of a sample
        self._target_budget = cache_target_bytes
        self.cached_target_bytes = 0

    def __len__(self) -> int:
        return len(self.images)

    def _image(self, i: int) -> Tensor:
        if self._cache is None:
            return image_tensor(self.dataset, self.images[i])
        if i not in self._cache:
            # Kept as uint8 to hold a few thousand small images in memory cheaply.
            self._cache[i] = (image_tensor(self.dataset, self.images[i]) * 255).round().to(torch.uint8)
        return self._cache[i].float() / 255.0

    def __getitem__(self, item: tuple[int, bool]) -> tuple[Tensor, dict]:
        i, flip = item
        image = self._image(i)
        target = self._targets.get(i)
        if target is None:
            target = make_target(self.images[i], self.classes, self.points, self.mask_ids, self.pseudo_masks)
            size = target_bytes(target)
            if self.cached_target_bytes + size <= self._target_budget:
                self._targets[i] = target
                self.cached_target_bytes += size
        return hflip(image, target) if flip else (image, target)


@dataclass
class IterationSampler:
    """Batches of ``(index, flip)`` for iterations ``start, start+1, …, total-1``.

    Epoch ``e`` is a permutation drawn from a generator seeded with (seed, e); the flip of each item
    is drawn from the same generator. Batches run across epoch boundaries, so iteration ``i`` always
    holds items ``i·B … i·B+B−1`` of the endless stream: resuming at any iteration is exact.
    """

    size: int
    batch_size: int
    seed: int
    total: int
    start: int = 0
    flip: bool = True

    def _epoch(self, e: int) -> tuple[list[int], list[bool]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        order = torch.randperm(self.size, generator=g).tolist()
        flips = (torch.rand(self.size, generator=g) < 0.5).tolist() if self.flip else [False] * self.size
        return order, flips

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        if self.size == 0:
            raise ValueError("no training images with instances")
        cache: dict[int, tuple[list[int], list[bool]]] = {}
        for it in range(self.start, self.total):
            batch = []
            for k in range(it * self.batch_size, (it + 1) * self.batch_size):
                e, j = divmod(k, self.size)
                if e not in cache:
                    cache.clear()
                    cache[e] = self._epoch(e)
                order, flips = cache[e]
                batch.append((order[j], flips[j]))
            yield batch

    def __len__(self) -> int:
        return max(0, self.total - self.start)
