"""What each model learns from (apis.mask_policy): pseudo masks per loop.pseudo_masks, the source table printed
only when it changes, the colour evidence, the kept refined masks, and the box-only start's pairwise trial."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from apis.config import preset
from apis.data.loader import PseudoMask
from apis.geometry import omega
from apis.layout import PAIRWISE_PHASE
from apis.mask_checks import NO_MODEL_SOURCES
from apis.mask_policy import MaskPolicy, Targets
from apis.oracle import MaskOracle, initial_answers
from apis.pseudo_masks import save_pseudo_masks
from apis.store import Store
from apis.train import TrainResult


def _cfg(model: dict | None = None, **loop):
    cfg = preset("tiny")  # pseudo_mask_weight 1, pseudo_masks and refine_masks auto, box_start_pairwise 1
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **(model or {})),
                               loop=dataclasses.replace(cfg.loop, **loop))


def _points(store: Store, step: int) -> dict:
    return {i: [(p.x, p.y, p.label, p.step) for p in ps] for i, ps in store.points(max_step=step).items()}


def _no_model():
    pytest.fail("the previous model is read only for refined masks not kept yet")


@pytest.fixture
def answered(tmp_path, small_train):
    """A store of the pool with P0 (one random point per object, seed 0)."""
    store = Store.open(tmp_path / "apis.sqlite")
    store.add_instances(small_train, "train")
    store.add_points(initial_answers(small_train, MaskOracle(small_train), 0), phase="p0", phase_payload={})
    yield store
    store.close()


def test_no_pseudo_masks_without_their_weight(tmp_path, small_train, answered):
    lines = []
    policy = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg({"pseudo_mask_weight": 0.0}),
                        report=lines.append)
    assert policy.targets(answered, 0, 0, _points(answered, 0), _no_model) == Targets(None, None)
    assert lines == [] and not (tmp_path / "pseudo_masks").exists()


def test_auto_masks_every_object_and_prints_its_table_only_when_it_changes(tmp_path, small_train, answered):
    lines = []
    policy = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(), report=lines.append)
    pool = {a.id for a in small_train.instances()}
    t = policy.targets(answered, 0, 0, _points(answered, 0), _no_model)
    kept = json.loads((tmp_path / "pseudo_masks" / "sources-P0.json").read_text())
    assert set(t.pseudo) == pool and t.learnt_from == kept["chosen"] and t.learnt_from in NO_MODEL_SOURCES
    assert lines[0] == "step 0: mask sources judged on the answers they were not seeded with (loop.pseudo_masks: auto)"
    assert any("← chosen" in line for line in lines)
    shown = len(lines)
    assert policy.targets(answered, 0, 1, _points(answered, 0), _no_model).learnt_from == t.learnt_from
    assert len(lines) == shown, "another ensemble member of the same step adds nothing"

    # Step 1 asks where the model is unsure: the random answers that judge the sources are P0's still.
    oracle = MaskOracle(small_train)
    p1 = [a for a in initial_answers(small_train, oracle, 9) if _new(answered, a)]
    answered.add_points([dataclasses.replace(a, step=1, strategy="entropy") for a in p1])
    policy.targets(answered, 1, 0, _points(answered, 1), _no_model)
    assert len(lines) == shown + 1 and lines[shown].startswith(
        "step 1: mask sources judged as at step 0 (pseudo_masks/sources-P1.json); per object: ")
    used = json.loads((tmp_path / "pseudo_masks" / "sources-P1.json").read_text())["used"]
    assert lines[shown].endswith(", ".join(f"{s} {n}" for s, n in used.items() if n))
    assert json.loads((tmp_path / "pseudo_masks" / "sources-P1.json").read_text())["sources"] == kept["sources"]
    # A resumed run (a fresh policy) compares with the table kept for the step before too.
    again = []
    MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(), report=again.append).targets(
        answered, 1, 0, _points(answered, 1), _no_model)
    assert again == lines[shown:]

    # Random answers at step 2 judge the sources anew: the table is printed again.
    p2 = [a for a in initial_answers(small_train, oracle, 11) if _new(answered, a)]
    answered.add_points([dataclasses.replace(a, step=2) for a in p2])
    policy.targets(answered, 2, 0, _points(answered, 2), _no_model)
    assert lines[shown + 1].startswith("step 2: mask sources judged on the answers")
    assert json.loads((tmp_path / "pseudo_masks" / "sources-P2.json").read_text())["sources"] != kept["sources"]


def _new(store: Store, answer) -> bool:
    return all((p.x, p.y) != (answer.x, answer.y) for p in store.points().get(answer.instance_id, []))


def test_a_named_shape_is_learnt_at_weight_one_and_judged_beside_the_other_shape(tmp_path, small_train, answered):
    lines = []
    policy = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(pseudo_masks="box"), report=lines.append)
    t = policy.targets(answered, 0, 0, _points(answered, 0), _no_model)
    images = small_train.image_by_id()
    assert t.learnt_from == "box"
    for a in small_train.instances():
        im = images[a.image_id]
        m = t.pseudo[a.id]
        assert m.window == omega(a.box, im.width, im.height) and m.mask.all() and m.weight == 1.0
    table = json.loads((tmp_path / "pseudo_masks" / "sources-P0.json").read_text())
    assert [s["source"] for s in table["sources"]] in (["ellipse", "box"], ["box", "ellipse"])
    shown = len(lines)
    policy.targets(answered, 0, 1, _points(answered, 0), _no_model)
    assert len(lines) == shown and shown > 0


def test_colour_evidence_follows_refine_masks(tmp_path, small_train, answered):
    pool = {a.id for a in small_train.instances()}

    def policy(refine):
        return MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(refine_masks=refine))

    assert policy("none").colour_evidence(answered, 0) == (None, None)
    assert policy("none").trust_colours(answered, 0) is None
    trust, fit = policy("grabcut").colour_evidence(answered, 0)
    assert trust is None and set(fit) == pool and all(0.0 <= v <= 1.0 for v in fit.values())
    trust, fit = policy("auto").colour_evidence(answered, 0)
    assert trust == (policy("auto").source_choice(answered, 0).chosen == "grabcut") == policy("auto").trust_colours(
        answered, 0)
    assert (fit is not None) == trust


def test_refined_masks_kept_for_a_step_are_read_back_without_the_model(tmp_path, small_train, answered):
    a = small_train.instances()[0]
    im = small_train.image_by_id()[a.image_id]
    win = omega(a.box, im.width, im.height)
    mask = np.zeros((win.height, win.width), bool)
    mask[0, 0] = True
    save_pseudo_masks({a.id: PseudoMask(win, mask)}, tmp_path / "pseudo_masks" / "P1.npz")
    t = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(pseudo_masks="refined")).targets(
        answered, 1, 0, _points(answered, 1), _no_model)
    assert t.learnt_from == "refined" and set(t.pseudo) == {a.id}
    assert t.pseudo[a.id].window == win and (t.pseudo[a.id].mask == mask).all()


def test_the_pairwise_trial_is_m0s_where_it_learns_from_a_shape(tmp_path, small_train, answered):
    box_only = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(initial_points=0))
    assert box_only.pairwise_trial(0, 0, "ellipse") == 1.0 and box_only.pairwise_trial(0, 0, None) == 1.0
    assert box_only.pairwise_trial(0, 0, "grabcut") is None, "GrabCut's masks carry the colours"
    assert box_only.pairwise_trial(1, 0, "ellipse") is None and box_only.pairwise_trial(0, 1, "ellipse") is None
    with_p0 = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(initial_points=1, p0_pairwise=0.5))
    assert with_p0.pairwise_trial(0, 0, "ellipse") == 0.5, "a P0 start tries its own weight, loop.p0_pairwise"
    assert with_p0.pairwise_trial(0, 0, "grabcut") is None and with_p0.pairwise_trial(1, 0, "ellipse") is None
    off = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(initial_points=1, p0_pairwise=0.0))
    assert off.pairwise_trial(0, 0, "ellipse") is None
    assert with_p0.start_words() == "1 answered point per object" and box_only.start_words() == "boxes only"
    assert box_only.pairwise_weight(answered) == 0.0
    answered.mark_phase(PAIRWISE_PHASE, {"weight": 1.0, "kept": False})
    assert box_only.pairwise_weight(answered) == 0.0
    answered.mark_phase(PAIRWISE_PHASE, {"weight": 1.0, "kept": True})
    assert box_only.pairwise_weight(answered) == 1.0


def test_a_trial_nothing_can_judge_trains_m0_once_with_the_term(tmp_path, small_train, answered):
    """Under 30 of GrabCut's masks pass the box check on the small pool: M0 is trained once, with the term,
    saying its test size, and the verdict (kept, unjudged) is in the store before the folders are settled."""
    lines, fits, settled = [], [], []
    out = tmp_path / "models" / "step0"

    def fit(w, folder, label, say_size):
        fits.append((w, folder, label, say_size))
        return None, TrainResult(folder / "model_final.pt", 3, 0.1)

    def settle(folder, kept):
        settled.append((folder, kept, answered.phase(PAIRWISE_PHASE)["kept"]))

    policy = MaskPolicy(tmp_path, tmp_path / "cache", small_train, _cfg(initial_points=0), report=lines.append)
    result = policy.train_m0_judged(answered, out, 1.0, "ellipse", fit, settle)
    assert result.final == out / "model_final.pt"
    assert fits == [(1.0, out, "train M0", True)] and settled == [(out, True, True)]  # one M0: its usual label
    assert answered.phase(PAIRWISE_PHASE)["weight"] == 1.0 and answered.phase(PAIRWISE_PHASE)["maps"] is None
    assert policy.pairwise_weight(answered) == 1.0  # every later phase learns with it too
    assert len(lines) == 1 and lines[0].startswith("step 0: boxes only and its pseudo masks are the ellipse")
    assert "nothing can judge BoxInst's colour-pairwise term, so M0 learns with it" in lines[0]
