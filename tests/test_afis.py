"""The paper's variants that change what is bought or when: AFIS (masks instead of points), fewer
points per step (appendix C) and the box-only start (P'(s))."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import tiny_model_config

from apis.afis import AfisRun
from apis.config import ConfigError, load_config, preset
from apis.cost import CostModel
from apis.experiment import compare, read_results
from apis.loop import ActiveRun, mask_oracle
from apis.names import afis_display_name, parse_afis_arm
from apis.names import display_name as strategy_label
from apis.selection.instances import (
    UNDETECTED_DETECTION_LOSS,
    UNDETECTED_GIOU_LOSS,
    detection_losses,
    group_mean,
    instance_scores,
    mean_box_entropy,
    spend,
)
from apis.store import Store
from apis.train import Schedule, load_model


# ----------------------------------------------------------------------------------- pure maths
def test_detection_losses_take_the_best_matching_detection_of_the_class() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    labels = torch.tensor([0, 1, 2])
    det = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 5.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                        [20.0, 20.0, 25.0, 30.0]])
    det_labels = torch.tensor([0, 0, 0, 1])  # the exact box of GT 1 has the wrong class
    scores = torch.tensor([0.9, 0.99, 0.8, 0.6])
    giou, loss = detection_losses(gt, labels, det, det_labels, scores)
    # GT 0: the exact box (IoU 1) wins over the higher-scoring half box.
    assert giou[0] == pytest.approx(0.0) and loss[0] == pytest.approx(0.1)
    # GT 1: only the half box of its class: IoU 0.5, the hull is the GT box, so GIoU = 0.5.
    assert giou[1] == pytest.approx(0.5) and loss[1] == pytest.approx(0.5 + 0.4)
    # GT 2: nothing of its class.
    assert giou[2] == UNDETECTED_GIOU_LOSS and loss[2] == UNDETECTED_DETECTION_LOSS
    empty = detection_losses(gt, labels, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert (empty[0] == UNDETECTED_GIOU_LOSS).all()


def test_mean_box_entropy_by_hand() -> None:
    assert mean_box_entropy(torch.zeros(0, 3, 3)) == pytest.approx(math.log(2))
    assert mean_box_entropy(torch.zeros(2, 3, 3)) == 0.0
    # Mean of {0, 1} is 0.5 on the left column, certain elsewhere: a third of ln 2.
    maps = torch.zeros(2, 3, 3)
    maps[0, :, 0] = 1.0
    assert mean_box_entropy(maps) == pytest.approx(math.log(2) / 3)


def test_spend_never_exceeds_and_skips_what_does_not_fit() -> None:
    costs = {1: 30.0, 2: 50.0, 3: 20.0, 4: 10.0}
    assert spend([1, 2, 3, 4], costs, 60.0) == [1, 3, 4]
    assert spend([2, 1], costs, 49.0) == [1]
    assert spend([2], costs, 49.0) == []
    assert spend([4, 3], costs, 30.0) == [4, 3]  # exactly the budget is allowed
    assert group_mean([1.0, 3.0, 5.0], [7, 7, 8]) == {7: 2.0, 8: 5.0}


def test_arm_names_and_config_checks(tmp_path) -> None:
    assert parse_afis_arm("image/detection_quality") == ("image", "detection_quality")
    assert afis_display_name("afis_image_detection_quality") == "AFIS image (detection quality)"
    assert afis_display_name("entropy") is None
    assert strategy_label("afis_instance_random") == "AFIS instance (random)"
    assert strategy_label("entropy") == "Entropy" and strategy_label("mine") == "mine"
    with pytest.raises(ValueError, match="LEVEL/MEASURE"):
        parse_afis_arm("images/quality")
    p = tmp_path / "c.yaml"
    p.write_text("loop: {afis: [pixel/entropy]}\n")
    with pytest.raises(ConfigError, match="loop.afis"):
        load_config(p)
    p.write_text("model: {pseudo_mask_weight: 0.0, box_projection_weight: 0.0}\nloop: {initial_points: 0}\n")
    with pytest.raises(ConfigError, match="pseudo_mask_weight"):
        load_config(p)
    p.write_text("model: {pseudo_mask_weight: 0.0}\nloop: {initial_points: 0}\n")  # the preset's projection term
    assert load_config(p).model.box_projection_weight == 1.0
    p.write_text("loop: {initial_points: 0}\n")  # the tiny preset learns masks from GrabCut's masks of the boxes
    assert load_config(p).loop.initial_points == 0
    p.write_text("loop: {points_per_step: 5, instance_choice: hardest}\n")
    with pytest.raises(ConfigError, match="instance_choice"):
        load_config(p)


# ------------------------------------------------------------------------------------ tiny runs
def _cfg(**loop):
    cfg = preset("tiny")
    sched = Schedule(iterations=3, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=3, log_every=1)
    # Masks cost 3 s here, so a step's point budget (one point per instance) buys a few of them.
    return dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                               eval_batch_size=2, cost=CostModel(point_s=0.9, mask_s=3.0),
                               loop=dataclasses.replace(cfg.loop, steps=2, **loop))


@pytest.mark.slow
@pytest.mark.parametrize("level", ["instance", "image"])
def test_afis_stays_within_budget_and_buys_whole_units(tmp_path, small_train, small_val, level, one_thread) -> None:
    cfg = _cfg()
    run = AfisRun(tmp_path / level, cfg, small_train, small_val, level, "detection_quality", 0, report=lambda m: None)
    results = run.run()
    q = sum(len(im.pool) for im in small_train.images)
    pool_of = {im.id: {a.id for a in im.pool} for im in small_train.images}
    with Store.open(tmp_path / level / "apis.sqlite") as store:
        bought: list[int] = []
        for s in range(3):
            phase = store.phase(f"buy_{s}")
            bought += phase["instances"]
            assert run.spent(store, s) <= (s + 1) * q * 0.9 + 1e-9  # never over the budget
            assert phase["seconds"] == pytest.approx(len(phase["instances"]) * 3.0)
            if level == "image":  # whole images only
                ids = set(phase["instances"])
                assert all(pool <= ids or not pool & ids for pool in pool_of.values())
            assert results[s].annotation_hours == pytest.approx(run.spent(store, s) / 3600, abs=1e-4)
        assert len(bought) == len(set(bought)) and bought  # no mask bought twice
    # A second run resumes from the store: same results, nothing retrained.
    again = AfisRun(tmp_path / level, cfg, small_train, small_val, level, "detection_quality", 0,
                    report=lambda m: pytest.fail(m)).run()
    assert [r.segm for r in again] == [r.segm for r in results]


@pytest.mark.slow
def test_fewer_points_spend_exactly_the_budget_on_the_best_detected(tmp_path, small_train, small_val,
                                                                   one_thread) -> None:
    cfg = _cfg(points_per_step=3, instance_choice="detection_loss")
    oracle, gt = mask_oracle(small_train)
    root = tmp_path / "few"
    ActiveRun(root, cfg, small_train, small_val, "entropy", 0, oracle, gt, report=lambda m: None).run()
    with Store.open(root / "apis.sqlite") as store:
        for s in (1, 2):
            assert store.point_count(max_step=s) - store.point_count(max_step=s - 1) == 3
        m0 = load_model(root / store.phase("train_0")["model"])
        chosen = {c["instance_id"] for c in store.phase("select_1")["choices"]}
    scores = instance_scores(m0, small_train, "cpu", batch_size=2)
    best = sorted(scores, key=lambda i: (scores[i].detection_loss, i))[:3]
    assert chosen == set(best)


@pytest.mark.slow
def test_box_only_start_has_s_points_at_step_s(tmp_path, small_train, small_val, one_thread) -> None:
    cfg = _cfg(initial_points=0)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, box_projection_weight=1.0,
                                                             pairwise_weight=1.0))
    oracle, gt = mask_oracle(small_train)
    results = ActiveRun(tmp_path / "box", cfg, small_train, small_val, "entropy", 0, oracle, gt,
                        report=lambda m: None).run()
    assert [r.points_per_instance for r in results] == [0.0, 1.0, 2.0]


@pytest.mark.slow
def test_compare_runs_afis_arms_beside_the_strategies(tmp_path, small_train, small_val, one_thread) -> None:
    cfg = _cfg(strategies=["random"], afis=["image/random"])
    cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, steps=1))
    compare(tmp_path / "cmp", cfg, small_train, small_val, report=lambda m: None)
    rows = read_results(tmp_path / "cmp" / "results.csv")
    assert {(r["strategy"], int(r["step"])) for r in rows} == {
        ("random", 0), ("random", 1), ("afis_image_random", 0), ("afis_image_random", 1)}
    afis = [r for r in rows if r["strategy"] == "afis_image_random"]
    assert all(float(r["points_per_instance"]) == 0.0 for r in afis)

