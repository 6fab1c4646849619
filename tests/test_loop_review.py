"""Review decisions flow into the loop: an accepted mask is final (exported byte for byte at later steps, never
asked about again), a rejected object gets ``loop.review_points`` extra points at the next selection and then
one a step again, the simulated reviewer judges the least trusted masks and resumes, and review time counts in
the hours."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_config
from stub_models import ConstantModel

from apis.config import ReviewConfig, preset
from apis.cost import budget, review_decisions
from apis.data.records import encode_mask
from apis.experiment import Row
from apis.export import export_masks, pool_mask_ious, trust_rank_correlation
from apis.geometry import omega
from apis.layout import review_phase
from apis.loop import ActiveRun, WaitingForPeople, mask_oracle
from apis.models import build_model
from apis.names import display_name, review_arm_name
from apis.oracle import SIMULATED_REVIEWER, MaskOracle, MaskReviewer
from apis.selection.select import Choice, select_points
from apis.step_plan import limit_choices
from apis.store import PointAnswer, Store
from apis.train import Schedule, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(steps: int = 0, **loop):
    cfg = preset("tiny")
    sched = Schedule(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=10, log_every=1)
    # No GrabCut (refinement, yardsticks): these tests are about decisions, not mask quality.
    return dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                               eval_batch_size=2, loop=dataclasses.replace(cfg.loop, steps=steps, refine_masks="none",
                                                                         yardstick_objects=0, **loop))


def _shown(export, inst, image) -> dict:
    """The mask a reviewer saw of ``inst``: its exported RLE, or an empty mask when the export has none."""
    ann = next(a for a in export.coco["annotations"] if a["id"] == inst.id)
    return ann.get("segmentation") or encode_mask(np.zeros((image.height, image.width), np.uint8))


def _export(root: Path, dataset, store: Store, step: int):
    return export_masks(load_model(root / "models" / f"step{step}" / "model_final.pt", "cpu"), dataset, store,
                        max_step=step, batch_size=2)


def _per_instance(choices: list[dict]) -> Counter:
    return Counter(c["instance_id"] for c in choices)


# ------------------------------------------------------------------------------------------- the loop
@pytest.mark.slow
def test_accepted_objects_are_final_and_rejected_ones_get_extra_points_once(tmp_path, small_train, small_val):
    oracle, gt = mask_oracle(small_train)
    root = tmp_path / "run"
    run = ActiveRun(root, _cfg(), small_train, small_val, "entropy", 0, oracle, gt, report=lambda m: None)
    run.run(steps=0)
    images = small_train.image_by_id()
    pool = small_train.instances()
    a, b, c = pool[0], pool[1], pool[2]
    with Store.open(root / "apis.sqlite") as store:
        m0 = _export(root, small_train, store, 0)
        accepted = _shown(m0, a, images[a.image_id])
        store.add_review(a.id, 0, "accept", "alice", accepted, apis_score=0.3)
        rejected = store.add_review(b.id, 0, "reject", "alice", _shown(m0, b, images[b.image_id]))
        store.add_review(c.id, 0, "skip", "alice", _shown(m0, c, images[c.image_id]))

    results = run.run(steps=2)

    n, k = len(pool), run.cfg.loop.review_points
    assert k == 2
    with Store.open(root / "apis.sqlite") as store:
        first, second = store.phase("select_1"), store.phase("select_2")
        want = Counter({i.id: 1 for i in pool if i.id != a.id})
        want[b.id] = 1 + k
        assert _per_instance(first["choices"]) == want, "none for the accepted, 1 + K for the rejected"
        assert first["review"]["rejects_used"] == [rejected.id] and first["review"]["accepted"] == [a.id]
        assert _per_instance(second["choices"]) == Counter({i.id: 1 for i in pool if i.id != a.id}), \
            "a reject is acted on once; an accept for good"
        assert second.get("review", {}).get("rejects_used", []) == []
        step1 = [p for p in store.points()[b.id] if p.step == 1]
        assert len(step1) == 1 + k and len({(p.x, p.y) for p in step1}) == 1 + k, "distinct pixels"
        assert store.point_count(max_step=1) - store.point_count(max_step=0) == n - 1 + k
        assert not [p for p in store.points()[a.id] if p.step > 0]

        # The accepted mask is exported byte for byte at every later step, whatever M(s) says now.
        for step in (1, 2):
            ann = next(x for x in _export(root, small_train, store, step).coco["annotations"] if x["id"] == a.id)
            assert json.dumps(ann["segmentation"]) == json.dumps(accepted)
            assert ann["apis_source"] == "reviewed" and ann["apis_score"] == 1.0
            assert ann["apis_review"] == {"decision": "accept", "step": 0, "reviewer": "alice"}
            assert ann["apis_forced_pixels"] == 0

    # Three decisions (a skip counts: someone looked) at the cost model's 3 s, from row 1 on.
    assert [r.reviews for r in results] == [0, 3, 3] and [r.accepted for r in results] == [0, 1, 1]
    with Store.open(root / "apis.sqlite") as store:
        points = store.point_count(max_step=1)
    assert results[1].annotation_hours == round((points * 0.9 + 3 * 3.0) / 3600, 4)
    assert results[1].review_hours == round(9.0 / 3600, 4)
    row = Row("entropy", 0, results[1]).as_dict()
    assert (row["reviews"], row["accepted"]) == (3, 1)

    # A late reject (about M0's export, made after selections 1 and 2) is acted on at the next selection.
    with Store.open(root / "apis.sqlite") as store:
        store.add_review(c.id, 0, "reject", "bob", _shown(m0, c, images[c.image_id]))
    run.run(steps=3)
    with Store.open(root / "apis.sqlite") as store:
        third = _per_instance(store.phase("select_3")["choices"])
    assert third == Counter({**{i.id: 1 for i in pool if i.id != a.id}, c.id: 1 + k})


@pytest.mark.slow
def test_simulated_reviewer_judges_the_least_trusted_and_resumes(tmp_path, small_train, small_val):
    oracle, gt = mask_oracle(small_train)
    root = tmp_path / "run"
    cfg = _cfg(review=ReviewConfig(per_step=3, accept_iou=0.05))
    run = ActiveRun(root, cfg, small_train, small_val, "entropy", 0, oracle, gt, report=lambda m: None)
    run.run(steps=0)
    m0 = root / "models" / "step0" / "model_final.pt"
    reviewer = MaskReviewer(gt, 0.05)
    with Store.open(root / "apis.sqlite") as store:
        scores = {e.annotation_id: e.score for e in _export(root, small_train, store, 0).instances}
        run.review(store, 0, m0)
        log = store.review_log(0)
        assert len(log) == 3 and {d.reviewer for d in log} == {SIMULATED_REVIEWER}
        least = sorted(scores, key=lambda i: (scores[i], i))[:3]
        assert [d.instance_id for d in log] == least, "the three least trusted, lowest score first"
        for d in log:
            decision, iou = reviewer.judge(d.instance_id, d.mask)
            assert d.decision == decision and (iou >= 0.05) == (decision == "accept")
        done = store.phase(review_phase(0))
        assert done["reviewed"] == 3 and done["accepted"] + done["rejected"] == 3

    # Killed after two decisions, before the phase mark: the rerun judges only the third again.
    with sqlite3.connect(root / "apis.sqlite") as conn:
        conn.execute("DELETE FROM reviews WHERE id = (SELECT MAX(id) FROM reviews)")
        conn.execute("DELETE FROM phases WHERE name = ?", (review_phase(0),))
    with Store.open(root / "apis.sqlite") as store:
        run.review(store, 0, m0)
        again = store.review_log(0)
        assert [d.instance_id for d in again] == [d.instance_id for d in log]
        assert [d.id for d in again[:2]] == [d.id for d in log[:2]], "the first two are not judged twice"
        assert store.phase(review_phase(0))["reviewed"] == 3

    results = run.run(steps=1)  # review_0 is done: straight to select_1
    with Store.open(root / "apis.sqlite") as store:
        assert len(store.review_log()) == 3, "the last step's export is not reviewed"
        standing = store.reviews()
        counts = _per_instance(store.phase("select_1")["choices"])
        for i, d in standing.items():
            assert counts[i] == (0 if d.decision == "accept" else 1 + cfg.loop.review_points)
    assert results[1].reviews == 3 and results[1].review_hours == round(9.0 / 3600, 4)


def test_the_simulated_reviewer_needs_gt_masks(tmp_path, small_train, small_val):
    cfg = _cfg(review=ReviewConfig(per_step=2))
    with pytest.raises(ValueError, match="simulation only"):
        ActiveRun(tmp_path / "p", cfg, small_train, small_val, "entropy", 0, oracle=None, report=lambda m: None,
                  people=True)


@pytest.mark.slow
def test_people_are_asked_the_extra_points_of_a_rejected_object(tmp_path, small_train, small_val):
    root = tmp_path / "p"
    run = ActiveRun(root, _cfg(), small_train, small_val, "entropy", 0, oracle=None, report=lambda m: None,
                    people=True)
    oracle = MaskOracle(small_train)
    with pytest.raises(WaitingForPeople):
        run.run(steps=0)
    with Store.open(root / "apis.sqlite") as store:
        for q in store.open_queries(0):
            store.answer_query(q.id, "yes" if oracle.mask(q.instance_id)[q.y, q.x] else "no", "ann")
    run.run(steps=0)
    pool = small_train.instances()
    b = pool[1]
    image = small_train.image_by_id()[b.image_id]
    with Store.open(root / "apis.sqlite") as store:
        store.add_review(b.id, 0, "reject", "ann", encode_mask(np.zeros((image.height, image.width), np.uint8)))
    with pytest.raises(WaitingForPeople) as e:
        run.run(steps=1)
    assert e.value.open_questions == len(pool) + run.cfg.loop.review_points
    with Store.open(root / "apis.sqlite") as store:
        assert len([q for q in store.open_queries(1) if q.instance_id == b.id]) == 1 + run.cfg.loop.review_points


# ---------------------------------------------------------------------------------------------- selection
def test_extra_points_are_the_strategys_next_best_and_leave_the_usual_one(small_train):
    torch.manual_seed(0)
    model = build_model(tiny_model_config())
    model.eval()
    pool = small_train.instances()
    b = pool[1].id
    plain = select_points(model, small_train, {}, "entropy", step=1, seed=3)
    more = select_points(model, small_train, {}, "entropy", step=1, seed=3, extra={b: 2})
    with_alternates = select_points(model, small_train, {}, "entropy", step=1, seed=3, extra={b: 2}, alternates=2)
    first = {c.instance_id: (c.x, c.y) for c in reversed(more)}  # each instance's first choice
    assert first == {c.instance_id: (c.x, c.y) for c in plain}, "the usual point is unchanged"
    mine = [c for c in more if c.instance_id == b]
    assert len(mine) == 3 and len({(c.x, c.y) for c in mine}) == 3
    images = small_train.image_by_id()
    win = omega(pool[1].box, images[pool[1].image_id].width, images[pool[1].image_id].height)
    assert all(win.contains(c.x, c.y) for c in mine)
    assert [(c.x, c.y) for c in with_alternates if c.instance_id == b] == [(c.x, c.y) for c in mine]
    rest = next(c for c in with_alternates if c.instance_id == b).alternates
    assert len(rest) == 2 and not {tuple(p) for p in rest} & {(c.x, c.y) for c in mine}


def test_a_point_budget_keeps_the_rejected_objects_points_beside_it():
    choices = [Choice(i, 1, i, 0, 1, 0.5) for i in (1, 2, 2, 2, 3, 4, 5)]
    kept = limit_choices(choices, 2, "random", seed=0, step=1, keep={2})
    assert [c.instance_id for c in kept].count(2) == 3
    assert len([c for c in kept if c.instance_id != 2]) == 2
    assert limit_choices(choices, 2, "random", 0, 1) == limit_choices(choices, 2, "random", 0, 1, keep=set())


# ------------------------------------------------------------------------------------------------- export
def test_export_keeps_an_accepted_mask_byte_for_byte(tmp_path, small_train):
    pool = small_train.instances()
    a, b = pool[0], pool[1]
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add_instances(small_train, "train")
        x0, y0 = int(a.box[0]) + 1, int(a.box[1]) + 1
        store.add_points([PointAnswer(a.id, x0, y0, 1, 0, "random")])
        shown = export_masks(ConstantModel(0.9), small_train, store, max_step=0)
        seg = {x["id"]: x for x in shown.coco["annotations"]}[a.id]["segmentation"]
        store.add_review(a.id, 0, "accept", "alice", seg, apis_score=0.2)
        store.add_review(b.id, 0, "reject", "alice", {x["id"]: x for x in shown.coco["annotations"]}[b.id]
                         ["segmentation"])
        # Later: another model and a "no" inside the accepted mask; the accepted mask stays as it was.
        store.add_points([PointAnswer(a.id, x0 + 1, y0, 0, 1, "entropy")])
        later = export_masks(ConstantModel(0.1), small_train, store, max_step=1)
        anns = {x["id"]: x for x in later.coco["annotations"]}
        assert json.dumps(anns[a.id]["segmentation"]) == json.dumps(seg)
        assert anns[a.id]["apis_source"] == "reviewed" and anns[a.id]["apis_points_agree"] == 0.5
        assert anns[b.id]["apis_source"] == "prediction_set" and anns[b.id]["apis_review"] is None
        # A reject leaves the object to the model: its map (0.1 everywhere) is empty, and no box is exported with
        # an empty mask, so the ellipse inscribed in the box stands in.
        assert anns[b.id]["apis_refinement"] == "ellipse" and anns[b.id]["area"] > 0
        assert pool_mask_ious(later, small_train)[a.id] == pool_mask_ious(shown, small_train)[a.id]
        # A decision counts from its step on, and an undone accept gives the object back to the model.
        assert {x["id"]: x for x in export_masks(ConstantModel(0.1), small_train, store,
                                                 reviews={}).coco["annotations"]}[a.id]["apis_source"] != "reviewed"
        store.undo_review("alice")  # the reject
        store.undo_review("alice")  # the accept
        again = {x["id"]: x for x in export_masks(ConstantModel(0.1), small_train, store).coco["annotations"]}
        assert again[a.id]["apis_source"] == "prediction_set"


def test_trust_rank_correlation():
    from apis.export import ExportResult, InstanceExport

    def result(scores):
        return ExportResult({}, [InstanceExport(i, 1, "prediction_set", s, None, 0, 0, 1, 1)
                                 for i, s in enumerate(scores)])

    assert trust_rank_correlation(result([0.1, 0.2, 0.3, 0.9]), {0: 0.1, 1: 0.5, 2: 0.6, 3: 0.7}) == pytest.approx(1)
    assert trust_rank_correlation(result([0.9, 0.2, 0.1]), {0: 0.1, 1: 0.5, 2: 0.6}) == pytest.approx(-1)
    assert trust_rank_correlation(result([0.5, 0.5, 0.5]), {0: 0.1, 1: 0.5, 2: 0.6}) is None
    # Ties share their mean rank: scores (1, 1, 2) against IoUs (1, 2, 3) → ranks (0.5, 0.5, 2) vs (0, 1, 2).
    assert trust_rank_correlation(result([1, 1, 2]), {0: 1, 1: 2, 2: 3}) == pytest.approx(0.8660254)


def test_worst_caught_counts_the_worst_tenth_in_the_least_trusted_tenth():
    from apis.export import ExportResult, InstanceExport, worst_caught

    def result(scores, reviewed=()):
        return ExportResult({}, [InstanceExport(i, 1, "reviewed" if i in reviewed else "prediction_set", s, None,
                                                0, 0, 1, 1) for i, s in enumerate(scores)])

    # 20 masks: IoU 0.05·i; the worst tenth is {0, 1}. Scores that follow the IoU find both, reversed none.
    ious = {i: 0.05 * i for i in range(20)}
    assert worst_caught(result([0.05 * i for i in range(20)]), ious) == 1.0
    assert worst_caught(result([1 - 0.05 * i for i in range(20)]), ious) == 0.0
    # One of the two: mask 0 least trusted, mask 1 trusted most.
    scores = [0.05 * i for i in range(20)]
    scores[1] = 2.0
    assert worst_caught(result(scores), ious) == 0.5
    # Reviewed masks are left out (their score is a person's); under 10 masks there is no tenth.
    assert worst_caught(result(scores, reviewed=set(range(11))), ious) is None
    assert worst_caught(result([0.1] * 9), {i: 0.1 for i in range(9)}) is None
    assert worst_caught(result(scores), ious, share=0.5) == 0.9


# -------------------------------------------------------------------------------------------- cost, names
def test_review_decisions_cost_their_seconds(tmp_path, small_train):
    assert budget({"points": 10, "reviews": 4}).seconds == pytest.approx(9 + 12)
    from apis.cost import CostModel

    assert budget({"reviews": 4}, CostModel(review_seconds=1.5)).seconds == 6.0
    with pytest.raises(ValueError, match="review_seconds"):
        CostModel(review_seconds=-1)
    image = small_train.image_by_id()[small_train.instances()[0].image_id]
    empty = encode_mask(np.zeros((image.height, image.width), np.uint8))
    ids = [i.id for i in small_train.instances()]
    with Store.open(tmp_path / "s.sqlite") as store:
        store.add_instances(small_train, "train")
        store.add_review(ids[0], 0, "accept", "ann", empty)
        store.add_review(ids[1], 0, "skip", "ann", empty)
        store.add_review(ids[2], 1, "reject", "ann", empty)
        store.add_review(ids[3], 1, "reject", "ben", empty)
        store.undo_review("ben")  # a slip of the key: not counted
        assert review_decisions(store) == 3 and review_decisions(store, max_step=0) == 2
        assert budget(store, split="train", max_step=0).reviews == 2


def test_review_arm_names():
    assert review_arm_name("entropy", 0) == "entropy"
    assert review_arm_name("entropy", 108) == "entropy+review108"
    assert display_name("entropy+review108") == "Entropy + review 108/step"
    assert display_name("entropy+reviewx") == "entropy+reviewx"


@pytest.mark.slow
def test_compare_pairs_arms_with_and_without_review_on_one_m0(tmp_path, small_train, small_val):
    from apis.experiment import compare, read_results

    out = tmp_path / "cmp"
    plain = dataclasses.replace(_cfg(steps=1), loop=dataclasses.replace(_cfg(steps=1).loop, strategies=["entropy"],
                                                                         seeds=[0]))
    compare(out, plain, small_train, small_val, report=lambda m: None)
    reviewed = dataclasses.replace(plain, loop=dataclasses.replace(plain.loop, review=ReviewConfig(per_step=2)))
    compare(out, reviewed, small_train, small_val, report=lambda m: None)
    rows = {(r["strategy"], r["step"]): r for r in read_results(out / "results.csv")}
    assert set(rows) == {(s, t) for s in ("entropy", "entropy+review2") for t in ("0", "1")}
    assert rows[("entropy", "0")]["AP"] == rows[("entropy+review2", "0")]["AP"], "one shared M0"
    assert rows[("entropy", "1")]["reviews"] == "0" and rows[("entropy+review2", "1")]["reviews"] == "2"
    assert float(rows[("entropy+review2", "1")]["review_hours"]) == round(6.0 / 3600, 4)
    assert float(rows[("entropy+review2", "1")]["annotation_hours"]) > float(rows[("entropy", "1")]["annotation_hours"])
    assert rows[("entropy", "1")]["trust_spearman"] != ""
