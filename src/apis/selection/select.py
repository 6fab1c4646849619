"""One selection pass: prediction sets of model M(s−1) over the pool, one point per instance (and the
strategy's next-best pixels too, for an instance a reviewer rejected).

Costs about one inference pass: each image batch is forwarded once (per test scale/flip for set S),
each instance's maps are read only over its Ω, and nothing is kept between batches but the chosen
pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from apis.batches import image_batches
from apis.data.records import CocoDataset
from apis.geometry import hflip_boxes, hflip_window
from apis.models.condinst import CondInst
from apis.models.ensemble import Ensemble
from apis.names import NEEDS_GT, PREDICTION_SETS, uses_ensemble
from apis.selection.points import Candidate, OmegaExhausted, get_strategy, labelled_mask, ranked_points
from apis.selection.uncertainty import mean_probability


# A: multiple anchors of one forward; S: A at three test scales, with and without flip; M: A of each model of
# an ensemble trained with different seeds; S+M: S of each model. Sets from several sources are concatenated.
@dataclass(frozen=True)
class Choice:
    """A chosen pixel (original image pixels) and what M(s−1) believed there: ``p_mean`` is the mean
    of the prediction set at the pixel (None when K = 0)."""

    instance_id: int
    image_id: int
    x: int
    y: int
    k: int
    p_mean: float | None
    alternates: list[tuple[int, int]] = field(default_factory=list)  # next-best pixels, for "can't tell"


def instance_generator(seed: int, step: int, instance_id: int) -> torch.Generator:
    """Each instance draws from its own stream, so choices do not depend on batch order or sharding."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_000_003 + instance_id) % (2**63))


@torch.no_grad()
def prediction_sets(model: CondInst | Ensemble, images: list[Tensor], targets: list[dict], kind: str = "A",
                    scales: Sequence[float] = (0.8, 1.0, 1.2)) -> list[list[Tensor]]:
    """Per image, per instance, K×h×w maps over Ω. ``A``: the positives of one forward at the test
    size. ``S``: A at each test scale, with and without a horizontal flip, concatenated. ``M`` and
    ``S+M``: A or S of every member of an :class:`~apis.models.ensemble.Ensemble`, concatenated."""
    if kind not in PREDICTION_SETS:
        raise ValueError(f"unknown prediction set {kind!r}; choose one of {', '.join(PREDICTION_SETS)}")
    if uses_ensemble(kind) != isinstance(model, Ensemble):
        need = "an Ensemble of models trained with different seeds" if uses_ensemble(kind) else "a single model"
        raise ValueError(f"prediction set {kind!r} needs {need}, got {type(model).__name__}")
    if kind in ("A", "M"):
        return model.prediction_sets(images, targets)
    base = model.cfg.test_min_size
    sets: list[list[list[Tensor]]] = [[[] for _ in t["windows"]] for t in targets]
    for scale in scales:
        size = max(32, int(round(base * scale)))
        for flip in (False, True):
            ims, tgs = images, targets
            if flip:
                ims = [im.flip(-1) for im in images]
                tgs = []
                for im, t in zip(images, targets, strict=True):
                    w = im.shape[-1]
                    tgs.append({**t, "boxes": hflip_boxes(t["boxes"], w),
                                "windows": [hflip_window(win, w) for win in t["windows"]]})
            out = model.prediction_sets(ims, tgs, min_size=size)
            for b, per_image in enumerate(out):
                for g, maps in enumerate(per_image):
                    sets[b][g].append(maps.flip(-1) if flip else maps)
    return [[torch.cat(ms, 0) for ms in per_image] for per_image in sets]


def select_points(
    model: CondInst | Ensemble,
    dataset: CocoDataset,
    labelled: Mapping[int, Sequence[tuple[int, int]]],
    strategy: str,
    step: int,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    prediction_set: str = "A",
    gt_masks: Callable[[int], np.ndarray] | None = None,
    instance_ids: set[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    alternates: int = 0,
    shard: tuple[int, int] | None = None,
    extra: Mapping[int, int] | None = None,
) -> list[Choice]:
    """Choose one new pixel for every pool instance (or those in ``instance_ids``).

    ``labelled``: instance id → already answered pixels (x, y). ``gt_masks``: instance id → H×W mask,
    required by the oracle-aware strategies. Instances whose Ω is fully answered are skipped.
    ``alternates`` > 0 also ranks that many next-best pixels per instance (asked when a person cannot
    tell); the chosen pixel is the same either way. ``extra``: instance id → how many further pixels to
    choose for it beside the usual one (a rejected mask's extra questions): the strategy's next best after
    it, distinct, as :func:`apis.selection.points.ranked_points` ranks them; they come right after the
    instance's usual choice, and every choice of the instance gets the alternates ranked after them all.
    ``shard`` = (rank, world) scores only batches rank,
    rank + world, … of those one process forms: the ranks' choices together are exactly one process's (an
    image meets the same batch, and each instance draws from its own generator);
    :func:`apis.distributed.merge_shards` restores their order.
    """
    choose = get_strategy(strategy)
    if strategy in NEEDS_GT and gt_masks is None:
        raise ValueError(f"strategy {strategy!r} reads ground-truth masks; it needs a mask oracle")
    images = [im for im in dataset.images if any(_wanted(a.id, instance_ids) for a in im.pool)]
    model.eval()
    choices: list[Choice] = []
    for batch in image_batches(dataset, device, batch_size, images=images, targets=True, shard=shard,
                               progress=progress):
        # Random reads the model too: its choice ignores the maps, but the diagnostics (did M(s-1) get the
        # chosen pixel right?) need them, and the paper's 23% vs 51% comparison is between these two.
        sets = prediction_sets(model, batch.tensors, batch.model_targets(), prediction_set)
        for im, t, per_image in zip(batch.images, batch.targets, sets, strict=True):
            for inst, win, probs in zip(im.pool, t["windows"], per_image, strict=True):
                if not _wanted(inst.id, instance_ids):
                    continue
                gt = None
                if gt_masks is not None and strategy in NEEDS_GT:
                    gt = torch.from_numpy(gt_masks(inst.id)[win.y0:win.y1, win.x0:win.x1].astype(np.float32))
                cand = Candidate(probs, win, labelled_mask(win, labelled.get(inst.id, ())), gt, inst.id)
                asked = 1 + (extra.get(inst.id, 0) if extra else 0)
                try:
                    if alternates or asked > 1:
                        # The ranking's first pixel is the strategy's own choice from the same generator, so
                        # the usual point does not depend on alternates or extra points being asked.
                        ranked = ranked_points(cand, strategy, instance_generator(seed, step, inst.id),
                                               asked + alternates)
                        picked, rest = ranked[:asked], [tuple(p) for p in ranked[asked:]]
                    else:
                        picked, rest = [choose(cand, instance_generator(seed, step, inst.id))], []
                except OmegaExhausted:
                    continue
                mean = mean_probability(probs) if cand.k > 0 else None
                for x, y in picked:
                    p = None if mean is None else float(mean[y - win.y0, x - win.x0])
                    choices.append(Choice(inst.id, im.id, x, y, cand.k, p, rest))
    return choices


def _wanted(instance_id: int, ids: set[int] | None) -> bool:
    return ids is None or instance_id in ids


def boundary_distance(mask: np.ndarray, x: int, y: int) -> float:
    """Euclidean distance in pixels from pixel (x, y) to the nearest pixel on the mask's boundary
    (an object pixel with a 4-neighbour outside the object). ``inf`` for an empty mask."""
    m = mask.astype(bool)
    if not m.any():
        return float("inf")
    pad = np.pad(m, 1, constant_values=False)
    interior = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    ys, xs = np.nonzero(m & ~interior)
    return float(np.sqrt(((xs - x) ** 2 + (ys - y) ** 2).min()))
