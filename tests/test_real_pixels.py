"""Real pixels (tests/data/dsb2018: 20 DSB 2018 nuclei images, CC0): the checks that would have caught GrabCut's
empty masks on real photos, where the built-in set never showed them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_config

from apis.data.coco import load_coco
from apis.data.importers import import_dataset
from apis.export import export_masks, pool_mask_ious
from apis.mask_checks import source_weight
from apis.models import build_model
from apis.oracle import MaskOracle, initial_answers
from apis.pseudo_masks import auto_pseudo_masks, judge_no_model_sources
from apis.yardsticks import window_iou

DSB = Path(__file__).parent / "data" / "dsb2018" / "stage1_train"


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "dsb"
    import_dataset(DSB, out, category="nucleus", val_fraction=0.0)
    ds = load_coco(out / "train" / "annotations.json")
    answers: dict[int, list[tuple[int, int, int]]] = {}
    for p in initial_answers(ds, MaskOracle(ds), seed=0, k=3):
        answers.setdefault(p.instance_id, []).append((p.x, p.y, p.label))
    return ds, answers


def true_ious(ds, masks) -> dict[int, float]:
    where = {a.id: (im, a) for im in ds.images for a in im.pool}
    return {i: window_iou(m, w, where[i][1].mask(where[i][0].height, where[i][0].width)) for i, (w, m) in masks.items()}


def test_answers_rank_the_no_model_sources_as_the_gt_does(nuclei, tmp_path):
    ds, answers = nuclei
    choice, masks = judge_no_model_sources(tmp_path, ds, answers)
    iou = {s: float(np.mean(list(true_ious(ds, m).values()))) for s, m in masks.items()}
    # On nuclei GrabCut from the box is the worst free mask (cells beside cells share its colours) and the
    # ellipse the best: the answers, which none of the three saw, say the same without any GT mask.
    assert iou["ellipse"] > iou["box"] > iou["grabcut"]
    assert choice.ranked == sorted(iou, key=iou.get, reverse=True)
    scores = {s.source: s for s in choice.scores}
    assert scores["grabcut"].failing_share > 0.5 > scores["ellipse"].failing_share


def test_auto_pseudo_masks_are_never_empty_and_match_the_best_free_mask(nuclei, tmp_path):
    ds, answers = nuclei
    masks, choice = auto_pseudo_masks(tmp_path, ds, answers)
    assert choice.chosen == "ellipse" and len(masks) == sum(len(im.pool) for im in ds.images)
    assert all(m.mask.any() for m in masks.values())
    got = np.mean(list(true_ious(ds, {i: (m.window, m.mask) for i, m in masks.items()}).values()))
    _, free = judge_no_model_sources(tmp_path, ds, answers)
    ellipse = np.mean(list(true_ious(ds, free["ellipse"]).values()))
    assert got >= ellipse - 0.01
    # Each mask is learnt with its own source's weights, from that source's agreement with the answers in each band
    # of the box: its pixels weighed by their band, the mask by its pixels' mean weight.
    scores = {s.source: s for s in choice.scores}
    assert choice.weight("ellipse") == source_weight(scores["ellipse"].accuracy)
    bands = {s: choice.band_weights(s) for s in choice.ranked}
    assert all(m.band_weights in bands.values() for m in masks.values())
    assert sum(m.band_weights == bands["ellipse"] for m in masks.values()) >= choice.used["ellipse"]
    assert all(m.weight == pytest.approx(float(m.pixel_weights().mean())) for m in masks.values())
    # One weight per source without the bands (the rule before).
    flat, _ = auto_pseudo_masks(tmp_path, ds, answers, by_band=False)
    weights = [m.weight for m in flat.values()]
    assert all(m.band_weights is None for m in flat.values())
    assert sum(w == choice.weight("ellipse") for w in weights) >= choice.used["ellipse"]
    assert all(w in {choice.weight(s) for s in choice.ranked} for w in weights)


@pytest.mark.parametrize("refine", ["none", "grabcut", "auto"])
def test_export_never_writes_an_empty_mask_for_a_box(nuclei, refine, one_thread):
    ds, answers = nuclei
    torch.manual_seed(0)
    model = build_model(tiny_model_config(num_classes=1, size=128))  # untrained: its maps say little
    result = export_masks(model, ds, answers, refine=refine)
    written = [a for a in result.coco["annotations"] if "segmentation" in a]
    assert written and all(a["area"] > 0 for a in written)
    assert len(written) + len(result.missing) == len(result.coco["annotations"])
    if refine == "auto":
        # GrabCut from the box loses to the ellipse on these answers: the export does not cut with the colours.
        assert result.coco["info"]["apis_export"]["colours_trusted"] is False
        assert all(a["apis_refinement"] in (None, "ellipse") for a in written)
        # Each mask fills its box (a forced "no" answer may cut a side off a nucleus a few pixels wide).
        assert np.mean([a["apis_box_sides"] >= 3 for a in written]) > 0.97, sorted(a["apis_box_sides"] for a in written)
        ious = pool_mask_ious(result, ds)
        assert np.mean([ious[a["id"]] for a in written]) > 0.5


def test_the_tiny_preset_tests_small_nuclei_at_a_larger_size(nuclei):
    """Nuclei under 16 px across at the tiny preset's 160: the model is configured to evaluate, select and export at
    a larger size (training sizes unchanged), and keeps it in its checkpoint."""
    from apis.config import load_config
    from apis.data.sizes import MIN_OBJECT_PIXELS, box_objects, median_side_at
    from apis.models import model_config_for

    ds, _ = nuclei
    tiny = load_config().model
    assert median_side_at(box_objects(ds), tiny.test_min_size, tiny.max_size) < MIN_OBJECT_PIXELS
    cfg = model_config_for(tiny, ds)
    assert cfg.num_classes == 1 and cfg.train_min_sizes == tiny.train_min_sizes
    assert tiny.test_min_size < cfg.test_min_size <= 2 * tiny.test_min_size
    assert cfg.max_size == round(tiny.max_size * cfg.test_min_size / tiny.test_min_size)
    assert (median_side_at(box_objects(ds), cfg.test_min_size, cfg.max_size) >= MIN_OBJECT_PIXELS
            or cfg.test_min_size == 2 * tiny.test_min_size)
    import dataclasses
    assert model_config_for(dataclasses.replace(tiny, max_test_upscale=1.0), ds).test_min_size == tiny.test_min_size
