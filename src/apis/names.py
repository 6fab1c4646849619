"""The project's vocabulary: every name a config or a command line may hold, and how tables show it.

It sits at the bottom of the import graph (it imports nothing of the project) so that
:mod:`apis.config` can refuse a misspelt name before hours of training, and the modules that act on
a name (:mod:`apis.selection.points`, :mod:`apis.selection.select`, :mod:`apis.afis`,
:mod:`apis.pseudo_masks`, :mod:`apis.export`, the reports) read the same list without importing
each other. ``tests/test_layers.py`` pins that the implementations cover exactly these names.
"""

from __future__ import annotations

POINT_STRATEGIES: tuple[str, ...] = (
    "random", "entropy", "variance", "lowest_entropy", "max_error_gt", "least_error_gt",
)
"""``loop.strategies``: how a point is chosen inside each box (functions in :mod:`apis.selection.points`)."""

RANDOM_STRATEGY = "random"
"""The strategy whose points are drawn inside the box without looking at any mask (P0's are stored under it):
the only answers that estimate how often a mask is right over its whole box
(:meth:`apis.store.Store.random_answers`)."""

NEEDS_GT: frozenset[str] = frozenset({"max_error_gt", "least_error_gt"})
"""Strategies that read the GT mask (simulation diagnostics only)."""

DISPLAY_NAMES: dict[str, str] = {
    "random": "Random",
    "entropy": "Entropy",
    "variance": "Variance",
    "lowest_entropy": "Lowest entropy",
    "max_error_gt": "Max error*",
    "least_error_gt": "Least error*",
}
"""Names for tables and plots, as in the paper (* = uses the GT mask)."""

PREDICTION_SETS: tuple[str, ...] = ("A", "S", "M", "S+M")
"""``loop.prediction_set``. A: multiple anchors; S: A at three test scales, with and without flip;
M: A of ``loop.ensemble_size`` models; S+M: S of each member (:mod:`apis.selection.select`)."""

AFIS_LEVELS: tuple[str, ...] = ("instance", "image")
AFIS_MEASURES: tuple[str, ...] = ("entropy", "detection_quality", "detection_loss", "random")
AFIS_MEASURE_NAMES: dict[str, str] = {"entropy": "box entropy", "detection_quality": "detection quality",
                                      "detection_loss": "detection loss", "random": "random"}

PSEUDO_MASK_SOURCES: tuple[str, ...] = ("auto", "grabcut", "grabcut_points", "ellipse", "box", "refined")
"""``loop.pseudo_masks``: ``auto``, per dataset the no-model source (GrabCut from the box, the ellipse or the box)
that agrees best with the answers it was not seeded with, per object the next one where it fails the box check
(:mod:`apis.mask_checks`); GrabCut from each box, or seeded with the points answered so far; the ellipse
inscribed in each box, or the box filled (no image needed, no cut); or (from step 1 on) the masks M(s−1)
exports with the answers of steps ≤ s and ``loop.refine_masks`` (``auto``'s masks for M0). A named
source is learnt from at full weight, whatever the answers say of it (the run's source table says it)."""

REFINEMENTS: tuple[str, ...] = ("auto", "none", "grabcut")
"""``loop.refine_masks`` and ``apis export masks --refine``: the thresholded map, or GrabCut started from it;
``auto``: GrabCut where the answers say the image's colours can be trusted (GrabCut from the box is the most
accurate no-model source on them), else the map; either way an object whose mask fails the box check gets the
next candidate's (:mod:`apis.mask_checks`)."""


def uses_ensemble(kind: str) -> bool:
    """Whether prediction set ``kind`` needs several models (``loop.ensemble_size`` of them)."""
    return "M" in kind.split("+")


def afis_arm_name(level: str, measure: str) -> str:
    """The strategy name AFIS rows carry in ``results.csv``, e.g. ``afis_image_detection_quality``."""
    return f"afis_{level}_{measure}"


def parse_afis_arm(spec: str) -> tuple[str, str]:
    """``"instance/detection_quality"`` (as written in ``loop.afis``) → (level, measure); ValueError
    naming the choices otherwise."""
    level, _, measure = spec.partition("/")
    if level not in AFIS_LEVELS or measure not in AFIS_MEASURES:
        raise ValueError(f"AFIS arm {spec!r}: write LEVEL/MEASURE with LEVEL one of {', '.join(AFIS_LEVELS)} and "
                         f"MEASURE one of {', '.join(AFIS_MEASURES)}, e.g. instance/detection_quality")
    return level, measure


def afis_display_name(strategy: str) -> str | None:
    """'AFIS image (detection quality)' for an AFIS arm name, None for anything else."""
    for level in AFIS_LEVELS:
        prefix = f"afis_{level}_"
        if strategy.startswith(prefix) and strategy[len(prefix):] in AFIS_MEASURES:
            return f"AFIS {level} ({AFIS_MEASURE_NAMES[strategy[len(prefix):]]})"
    return None


REVIEW_ARM_SUFFIX = "+review"


def review_arm_name(strategy: str, per_step: int) -> str:
    """The name results.csv (and the arm's folder) gives a strategy run with the simulated reviewer judging
    ``per_step`` objects a step, e.g. ``entropy+review108``; without review (0) the strategy's own name."""
    return f"{strategy}{REVIEW_ARM_SUFFIX}{per_step}" if per_step > 0 else strategy


def review_display_name(arm: str) -> str | None:
    """'Entropy + review 108/step' for a review arm name, None for anything else."""
    strategy, sep, n = arm.partition(REVIEW_ARM_SUFFIX)
    if not sep or strategy not in DISPLAY_NAMES or not n.isdigit():
        return None
    return f"{DISPLAY_NAMES[strategy]} + review {n}/step"


def display_name(strategy: str) -> str:
    """The table and plot name of a strategy, of an AFIS arm (``afis_image_detection_quality`` →
    "AFIS image (detection quality)") or of a review arm; unknown names are shown as they are."""
    return DISPLAY_NAMES.get(strategy) or afis_display_name(strategy) or review_display_name(strategy) or strategy
