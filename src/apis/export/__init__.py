"""Masks as the product: one mask per pool instance from a trained model, with its trust score, as a drop-in
COCO file or a folder people read (``apis export masks``; what the file holds is in docs/people.md).

By concern, bottom up:

* :mod:`~apis.export.results`: what an export makes (:class:`InstanceExport`, :class:`ExportResult`), the model
  interface it needs, its error;
* :mod:`~apis.export.trust`: ``apis_score`` and the review list;
* :mod:`~apis.export.candidates`: the masks an object can get (the prediction set's map, the detection fallback,
  GrabCut's refinements, the ellipse);
* :mod:`~apis.export.checks`: which of them is exported (accepts, the fallbacks' order, answers forced);
* :mod:`~apis.export.writers`: the COCO file, the review list, the folder formats through :mod:`apis.data.writers`;
* :mod:`~apis.export.masks`: the pass over the pool (:func:`export_masks`);
* :mod:`~apis.export.quality`: the pool's mask IoU against GT masks and how well the trust score ranks them;
* :mod:`~apis.export.command`: ``apis export masks`` (:func:`export_masks_cli`, :func:`summary`).
"""

from apis.export.candidates import (
    MASK_THRESHOLD,
    MIN_MAP_CELLS,
    REFINE_MIN_AGREEMENT,
    Candidate,
    best_detection,
    candidate_masks,
    cut_agreement,
    grabcut_refinements,
    instance_map,
    logit_cell_px,
    map_mask,
    pick_refinement,
)
from apis.export.checks import (
    check_answers_inside,
    finish_instance,
    first_passing,
    force_answers,
    reviewed_instance,
)
from apis.export.command import export_masks_cli, load_step_model, model_for_step, summary
from apis.export.masks import (
    JUDGE_OBJECTS,
    colours_trusted,
    export_masks,
    export_pseudo_masks,
    judge_colours,
    judged_sample,
)
from apis.export.quality import (
    _mask_iou,  # noqa: F401  (benchmarks/trust_scores.py)
    _ranks,  # noqa: F401  (benchmarks/trust_candidates.py, trust_rank.py, trust_scores.py)
    pool_iou_for_step,
    pool_mask_iou,
    pool_mask_ious,
    trust_rank_correlation,
    worst_caught,
)
from apis.export.results import Answer, ExportError, ExportResult, InstanceExport, MaskModel, Progress
from apis.export.trust import (
    CUT_REFINEMENTS,
    Vote,
    evidence_words,
    instance_trust,
    log_odds,
    own_source,
    pixel_belief,
    review_list,
    review_reason,
    trust_score,
)
from apis.export.writers import check_output, coco_with_masks, review_path, write_export, write_product
from apis.names import REFINEMENTS

__all__ = [
    "CUT_REFINEMENTS",
    "JUDGE_OBJECTS",
    "MASK_THRESHOLD",
    "MIN_MAP_CELLS",
    "REFINEMENTS",
    "REFINE_MIN_AGREEMENT",
    "Answer",
    "Candidate",
    "ExportError",
    "ExportResult",
    "InstanceExport",
    "MaskModel",
    "Progress",
    "Vote",
    "best_detection",
    "candidate_masks",
    "check_answers_inside",
    "check_output",
    "coco_with_masks",
    "colours_trusted",
    "cut_agreement",
    "evidence_words",
    "export_masks",
    "export_masks_cli",
    "export_pseudo_masks",
    "finish_instance",
    "first_passing",
    "force_answers",
    "grabcut_refinements",
    "instance_map",
    "instance_trust",
    "judge_colours",
    "judged_sample",
    "load_step_model",
    "log_odds",
    "logit_cell_px",
    "map_mask",
    "model_for_step",
    "own_source",
    "pick_refinement",
    "pixel_belief",
    "pool_iou_for_step",
    "pool_mask_iou",
    "pool_mask_ious",
    "review_list",
    "review_path",
    "review_reason",
    "reviewed_instance",
    "summary",
    "trust_rank_correlation",
    "trust_score",
    "worst_caught",
    "write_export",
    "write_product",
]
