"""Point strategies: choose the one pixel of an instance's Ω to ask the oracle about next.

Each strategy is a pure function ``strategy(cand, rng) -> (x, y)`` of one :class:`Candidate` (the
instance's prediction set over Ω, which pixels of Ω already have an answer and, for the oracle-aware
diagnostics only, the GT mask) and a ``torch.Generator``. It returns an integer pixel ``(x, y) =
(column, row)`` of the *original* image (see :mod:`apis.geometry`) that lies in Ω and has no answer
yet. Rules shared by all strategies (docs/paper.md, "The method in one page"):

* the score is taken over the unlabelled pixels of Ω only; exact ties are broken uniformly at random
  with ``rng``, so a run is reproducible from its seed;
* K = 0 (the instance was not predicted) falls back to random; variance with K = 1 falls back to
  entropy, since one map cannot disagree with itself;
* when every pixel of Ω is labelled the instance has nothing left to ask: :class:`OmegaExhausted`.

The strategies that read the GT mask (``max_error_gt``, ``least_error_gt``; "Max error*" and
"Least error*" in the paper) exist for diagnostics; they say so in their name and raise ValueError
when the candidate carries no mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from apis.geometry import PixelWindow
from apis.names import NEEDS_GT
from apis.selection.uncertainty import entropy_of_mean, error_map, variance


class OmegaExhausted(Exception):
    """Every pixel of an instance's Ω already has an answer, so no new point can be asked."""

    def __init__(self, window: PixelWindow, instance_id: int | None = None) -> None:
        self.window = window
        self.instance_id = instance_id
        who = "instance" if instance_id is None else f"instance {instance_id}"
        super().__init__(
            f"{who}: all {window.width * window.height} pixels of Ω (columns [{window.x0}, {window.x1}), "
            f"rows [{window.y0}, {window.y1})) are already labelled; skip this instance"
        )


@dataclass(frozen=True)
class Candidate:
    """One instance's selection input; every map is over the pixel window ``window`` (Ω).

    Attributes:
        probs: K×h×w mask probabilities in [0, 1] over ``window`` at original resolution
            (``h = window.height``, ``w = window.width``). K may be 0 (instance not predicted); an
            empty set may then have any trailing shape.
        window: Ω of the instance in original-image pixels (:func:`apis.geometry.omega`).
        labelled: bool h×w, True where a pixel already has an answer (:func:`labelled_mask`).
        gt_mask: h×w {0, 1} GT mask over ``window``; only the oracle-aware diagnostics read it.
        instance_id: optional id used in error messages.
    """

    probs: Tensor
    window: PixelWindow
    labelled: Tensor
    gt_mask: Tensor | None = None
    instance_id: int | None = None

    def __post_init__(self) -> None:
        hw = (self.window.height, self.window.width)
        who = "candidate" if self.instance_id is None else f"candidate for instance {self.instance_id}"
        if self.window.empty:
            raise ValueError(f"{who}: Ω {self.window} is empty; build it with apis.geometry.omega")
        empty_set = self.probs.dim() >= 1 and self.probs.shape[0] == 0
        if self.probs.dim() != 3 and not empty_set:
            raise ValueError(f"{who}: probs must be K×h×w, got shape {tuple(self.probs.shape)}")
        if not empty_set and tuple(self.probs.shape[1:]) != hw:
            raise ValueError(
                f"{who}: probs cover {tuple(self.probs.shape[1:])} pixels but Ω is {hw} (h, w); "
                "crop or resample the prediction set to Ω"
            )
        if self.labelled.dtype != torch.bool or tuple(self.labelled.shape) != hw:
            raise ValueError(
                f"{who}: labelled must be a bool tensor of shape {hw}, got {self.labelled.dtype} "
                f"{tuple(self.labelled.shape)}"
            )
        if self.gt_mask is not None and tuple(self.gt_mask.shape) != hw:
            raise ValueError(
                f"{who}: gt_mask has shape {tuple(self.gt_mask.shape)} but Ω is {hw} (h, w); crop it to Ω"
            )

    @property
    def k(self) -> int:
        """Size of the prediction set."""
        return int(self.probs.shape[0])


def labelled_mask(window: PixelWindow, points: Iterable[tuple[int, int]]) -> Tensor:
    """bool h×w over ``window``: True at each (x, y) point, in original-image pixels, that lies in it.

    Points outside the window are ignored: a P0 point drawn uniformly inside the box can fall on a
    pixel whose centre is outside the box, hence outside Ω.
    """
    mask = torch.zeros(window.height, window.width, dtype=torch.bool)
    for x, y in points:
        if window.contains(int(x), int(y)):
            mask[int(y) - window.y0, int(x) - window.x0] = True
    return mask


def _uniform_pick(allowed: Tensor, rng: torch.Generator) -> int:
    """Flat index of a pixel drawn uniformly among the True entries of ``allowed`` (h×w bool)."""
    idx = allowed.flatten().nonzero().flatten()
    if idx.numel() == 0:
        raise RuntimeError("no pixel to choose from")  # callers check exhaustion first
    j = torch.randint(int(idx.numel()), (1,), generator=rng, device=rng.device)
    return int(idx[int(j)])


def _to_image(cand: Candidate, flat: int) -> tuple[int, int]:
    """Window-frame flat index → (x, y) in original-image pixels."""
    row, col = divmod(flat, cand.window.width)
    return cand.window.x0 + col, cand.window.y0 + row


def _free(cand: Candidate) -> Tensor:
    """bool h×w of the pixels that may be asked; raises OmegaExhausted when there are none."""
    free = ~cand.labelled
    if not bool(free.any()):
        raise OmegaExhausted(cand.window, cand.instance_id)
    return free


def _best(cand: Candidate, score: Tensor, rng: torch.Generator, largest: bool) -> tuple[int, int]:
    """Pixel of the unlabelled part of Ω with the largest (or smallest) ``score`` (h×w).

    Only exact ties are randomised: near-equal scores are real (if tiny) preferences.
    """
    free = _free(cand).to(score.device)
    if bool(torch.isnan(score[free]).any()):
        raise ValueError(
            f"instance {cand.instance_id}: the prediction set has NaN probabilities inside Ω; "
            "check the model output before selection"
        )
    fill = float("-inf") if largest else float("inf")
    masked = score.masked_fill(~free, fill)
    target = masked.max() if largest else masked.min()
    # A free pixel whose score is ±inf would equal the fill; keep such ties limited to free pixels.
    tied = (masked == target) & free
    return _to_image(cand, _uniform_pick(tied.cpu(), rng))


def _require_gt(cand: Candidate, name: str) -> Tensor:
    if cand.gt_mask is None:
        raise ValueError(
            f"strategy {name!r} is oracle-aware and needs the GT mask; build the Candidate with gt_mask "
            "(simulation only: people answering points have no mask)"
        )
    return cand.gt_mask


def random_point(cand: Candidate, rng: torch.Generator) -> tuple[int, int]:
    """Uniform over the unlabelled pixels of Ω."""
    return _to_image(cand, _uniform_pick(_free(cand), rng))


def entropy_point(cand: Candidate, rng: torch.Generator) -> tuple[int, int]:
    """argmax H(p̄): the pixel the set is least sure about (the paper's best). K = 0 → random."""
    if cand.k == 0:
        return random_point(cand, rng)
    return _best(cand, entropy_of_mean(cand.probs), rng, largest=True)


def variance_point(cand: Candidate, rng: torch.Generator) -> tuple[int, int]:
    """argmax Var_k(p^k): the pixel the K maps disagree on most. K = 1 → entropy, K = 0 → random."""
    if cand.k <= 1:
        return entropy_point(cand, rng)
    return _best(cand, variance(cand.probs), rng, largest=True)


def lowest_entropy_point(cand: Candidate, rng: torch.Generator) -> tuple[int, int]:
    """argmin H(p̄): the pixel the set is surest about (an ablation). K = 0 → random."""
    if cand.k == 0:
        return random_point(cand, rng)
    return _best(cand, entropy_of_mean(cand.probs), rng, largest=False)


def max_error_gt_point(cand: Candidate, rng: torch.Generator) -> tuple[int, int]:
    """Oracle-aware: argmax |p̄ − gt|, the most confidently wrong pixel ("Max error*"). K = 0 → random."""
    gt = _require_gt(cand, "max_error_gt")
    if cand.k == 0:
        return random_point(cand, rng)
    return _best(cand, error_map(cand.probs, gt), rng, largest=True)


def least_error_gt_point(cand: Candidate, rng: torch.Generator) -> tuple[int, int]:
    """Oracle-aware: argmin |p̄ − gt|, the most confidently right pixel ("Least error*"). K = 0 → random."""
    gt = _require_gt(cand, "least_error_gt")
    if cand.k == 0:
        return random_point(cand, rng)
    return _best(cand, error_map(cand.probs, gt), rng, largest=False)


PointStrategy = Callable[[Candidate, torch.Generator], tuple[int, int]]

STRATEGIES: dict[str, PointStrategy] = {
    "random": random_point,
    "entropy": entropy_point,
    "variance": variance_point,
    "lowest_entropy": lowest_entropy_point,
    "max_error_gt": max_error_gt_point,
    "least_error_gt": least_error_gt_point,
}
"""One function per name of :data:`apis.names.POINT_STRATEGIES` (tests/test_layers.py pins it)."""


def get_strategy(name: str) -> PointStrategy:
    """The strategy called ``name``; ValueError listing the known names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown point strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None


def choose_points(
    cands: Sequence[Candidate], strategy: str, generator: torch.Generator
) -> list[tuple[int, int]]:
    """One (x, y) point, in original-image pixels, per candidate, in order.

    The candidates draw from ``generator`` one after another, so the result depends on their order
    as well as on the seed. An instance whose Ω is exhausted raises :class:`OmegaExhausted`; filter
    those out beforehand (or catch it) when that can happen.
    """
    fn = get_strategy(strategy)
    if strategy in NEEDS_GT:
        missing = [i if c.instance_id is None else c.instance_id for i, c in enumerate(cands)
                   if c.gt_mask is None]
        if missing:
            # Fail before drawing anything, rather than after half of the instances got points.
            raise ValueError(
                f"strategy {strategy!r} is oracle-aware and needs the GT mask; "
                f"{len(missing)} candidate(s) have none (first: {missing[:5]})"
            )
    return [fn(c, generator) for c in cands]


def _score_map(cand: Candidate, name: str) -> tuple[Tensor, bool] | None:
    """The h×w score ``name`` ranks Ω by and whether larger is better; None where it draws at random.

    Follows the strategies' fallbacks: K = 0 → random, variance with K = 1 → entropy.
    """
    if name == "random" or cand.k == 0:
        return None
    if name == "variance" and cand.k >= 2:
        return variance(cand.probs), True
    if name in ("entropy", "variance", "lowest_entropy"):
        return entropy_of_mean(cand.probs), name != "lowest_entropy"
    gt = _require_gt(cand, name)
    return error_map(cand.probs, gt), name == "max_error_gt"


def ranked_points(cand: Candidate, strategy_name: str, rng: torch.Generator, n: int) -> list[tuple[int, int]]:
    """The ``n`` best unlabelled pixels of Ω by ``strategy_name``, best first, as ``(x, y)`` original-image pixels.

    The first is the pixel the strategy itself returns from the same ``rng`` state (it is drawn by the strategy,
    so its tie-break is the same): ranking instead of choosing leaves the chosen point unchanged. The others
    follow by the strategy's score, exact ties in an order drawn from ``rng``; for ``random`` (and K = 0) they
    are a uniformly random order. Used to give a question its next-best pixels, asked when a person cannot
    tell. Returns fewer than ``n`` when Ω has fewer unlabelled pixels; raises :class:`OmegaExhausted` when it
    has none.
    """
    if n < 1:
        raise ValueError(f"n (pixels to rank) must be at least 1, got {n}")
    choose = get_strategy(strategy_name)
    scored = _score_map(cand, strategy_name)
    # A scoring strategy is exactly _best(score); calling it here computes the score once, with the same draws.
    first = choose(cand, rng) if scored is None else _best(cand, scored[0], rng, largest=scored[1])
    free = _free(cand).clone()
    free[first[1] - cand.window.y0, first[0] - cand.window.x0] = False
    free = free.flatten()
    left = int(free.sum())
    if n == 1 or left == 0:
        return [first]
    if scored is None:
        idx = free.nonzero().flatten()
        order = idx[torch.randperm(int(idx.numel()), generator=rng, device=rng.device).cpu()]
    else:
        score, largest = scored
        flat = score.detach().flatten().cpu()
        masked = flat.masked_fill(~free, float("-inf") if largest else float("inf"))
        # Only pixels scoring at least as well as the (n-1)-th best can come next; keeping all of them (ties
        # included) before ordering leaves the ranking exact and cheap for large boxes.
        kth = torch.topk(masked, min(n - 1, left), largest=largest).values[-1]
        idx = (((masked >= kth) if largest else (masked <= kth)) & free).nonzero().flatten()
        idx = idx[torch.randperm(int(idx.numel()), generator=rng, device=rng.device).cpu()]  # random tie order
        order = idx[torch.sort(flat[idx], descending=largest, stable=True).indices]
    return [first] + [_to_image(cand, int(i)) for i in order[: n - 1]]
