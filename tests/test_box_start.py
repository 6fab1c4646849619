"""The box-only start's colour cue: BoxInst's pairwise term tried where the pseudo masks lack the colours, judged
against GrabCut's masks that pass the box check, kept or trained away, and resumed after a kill."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model_config

from apis import box_start, mask_checks
from apis import loop as loop_module
from apis import pseudo_masks as pseudo_masks_module
from apis.box_start import (
    PairwiseCheck,
    PairwiseJudge,
    box_start_pairwise,
    box_teaches_masks,
    pairwise_judge,
    start_weight,
    train_judged,
    trial_weight,
)
from apis.config import preset
from apis.cost import CostModel
from apis.data.loader import PseudoMask
from apis.layout import PAIRWISE_PHASE
from apis.loop import ActiveRun, mask_oracle
from apis.mask_checks import cross_agreement
from apis.pseudo_masks import auto_pseudo_masks, no_model_masks
from apis.store import Store
from apis.train import Schedule, load_model


def test_box_start_pairwise_only_where_the_pseudo_masks_lack_the_colours() -> None:
    assert box_start_pairwise(1.0, "ellipse") == 1.0
    assert box_start_pairwise(0.5, "box") == 0.5
    assert box_start_pairwise(1.0, None) == 1.0  # no pseudo masks: BoxInst's two terms alone
    # GrabCut's masks follow the colours already; a model's refined export does too.
    assert box_start_pairwise(1.0, "grabcut") == 0.0
    assert box_start_pairwise(1.0, "grabcut_points") == 0.0
    assert box_start_pairwise(1.0, "refined") == 0.0
    assert box_start_pairwise(0.0, "ellipse") == 0.0
    with pytest.raises(ValueError, match="≥ 0"):
        box_start_pairwise(-1.0, "ellipse")
    # Tried only above the config's model.pairwise_weight, which applies anyway.
    assert trial_weight(1.0, 0.0, "ellipse") == 1.0
    assert trial_weight(1.0, 1.0, "ellipse") is None
    assert trial_weight(1.0, 0.0, "grabcut") is None
    # The config's weight for each start; nothing for Mask R-CNN, which has no BoxInst losses to train with.
    loop = dataclasses.replace(preset("tiny").loop, box_start_pairwise=0.5, p0_pairwise=1.0)
    assert start_weight(loop, True) == 0.5 and start_weight(loop, False) == 1.0
    assert start_weight(loop, True, "maskrcnn") == 0.0 and start_weight(loop, False, "maskrcnn") == 0.0


def test_the_box_teaches_masks_where_boxinsts_two_terms_are_learnt() -> None:
    tiny = preset("tiny")
    assert tiny.model.box_projection_weight > 0 and tiny.model.pairwise_weight == 0
    assert box_teaches_masks(tiny.model, tiny.loop, box_only=True)  # the term tried from the boxes alone
    assert box_teaches_masks(tiny.model, tiny.loop, box_only=False)  # and from P0
    no_trial = dataclasses.replace(tiny.loop, box_start_pairwise=0.0, p0_pairwise=0.0)
    assert not box_teaches_masks(tiny.model, no_trial, box_only=True)  # the projection alone draws crosses
    assert box_teaches_masks(dataclasses.replace(tiny.model, pairwise_weight=1.0), no_trial, box_only=True)
    assert not box_teaches_masks(dataclasses.replace(tiny.model, box_projection_weight=0.0), tiny.loop, True)
    assert not box_teaches_masks(dataclasses.replace(tiny.model, architecture="maskrcnn"), tiny.loop, True)


def _empty_cuts(cache_dir, dataset, points=None, instance_ids=None, progress=None):
    """GrabCut's masks as on photos whose neighbours share the object's colours: empty, failing the box check."""
    wins = no_model_masks(None, dataset, instance_ids, sources=("box",))["box"]
    return {i: PseudoMask(w, np.zeros_like(m)) for i, (w, m) in wins.items()}


def test_a_shape_nothing_judges_is_not_taught_where_the_box_teaches(small_train, tmp_path, monkeypatch) -> None:
    """Boxes only, GrabCut's masks failing everywhere (as on real photos whose neighbours share the colours): the
    ellipse is chosen and nothing judges it. Where BoxInst's terms teach the masks its objects get no pseudo mask
    and the table says why; where they do not, it is the only cue and is taught at full weight, as before."""
    monkeypatch.setattr(pseudo_masks_module, "cached_grabcut_pseudo_masks", _empty_cuts)
    ids = {a.id for a in small_train.instances()}
    masks, choice = auto_pseudo_masks(tmp_path, small_train, None, box_teaches=True)
    assert choice.chosen == "ellipse" and choice.untaught == {"ellipse", "box"} and choice.taught is None
    assert masks == {} and choice.weight("ellipse") == 0.0 and choice.used["ellipse"] == len(ids)
    assert all(s["weight"] == 0.0 for s in choice.to_json()["sources"] if s["source"] != "grabcut")
    lines = choice.table_lines()
    assert any(x.startswith("not taught: nothing judges the ellipse") and f"their {len(ids)} objects" in x
               for x in lines)
    taught, blind = auto_pseudo_masks(tmp_path, small_train, None, box_teaches=False)
    assert set(taught) == ids and all(m.weight == 1.0 for m in taught.values()) and not blind.untaught
    assert blind.taught == "ellipse"
    assert not any(x.startswith("not taught") for x in blind.table_lines())


def test_a_judged_shape_is_taught_where_the_box_teaches_too(small_train, tmp_path, monkeypatch) -> None:
    """Enough of GrabCut's masks pass to judge the shapes (or answers at random points judge them): nothing is left
    untaught, and every object learns its mask as without ``box_teaches``."""
    monkeypatch.setattr(mask_checks, "MIN_CROSS_CHECKED", 1)
    masks, choice = auto_pseudo_masks(tmp_path, small_train, None, box_teaches=True)
    plain, _ = auto_pseudo_masks(tmp_path, small_train, None)
    assert not choice.untaught and set(masks) == set(plain) == {a.id for a in small_train.instances()}
    assert all(masks[i].weight == plain[i].weight for i in masks)
    monkeypatch.setattr(mask_checks, "MIN_CROSS_CHECKED", 10_000)
    # GrabCut chosen (it passes the box check on most of the set): the term is not tried, so a shape is the only mask
    # of the objects whose cut fails, unjudged or not.
    masks, choice = auto_pseudo_masks(tmp_path, small_train, None, box_teaches=True)
    assert choice.chosen == "grabcut" and not choice.untaught and set(masks) == set(plain)
    first = small_train.instances()[0]
    win, _ = no_model_masks(None, small_train, [first.id], sources=("box",))["box"][first.id]
    answered = {first.id: [(win.x0 + win.width // 2, win.y0 + win.height // 2, 1)]}
    masks, choice = auto_pseudo_masks(tmp_path, small_train, answered, box_teaches=True)
    assert not choice.untaught and set(masks) == {a.id for a in small_train.instances()}


def test_the_term_is_kept_only_when_the_masks_beat_the_model_without_it() -> None:
    assert PairwiseCheck("ellipse", 0.852, 0.726, 0.667, 47).kept  # Penn-Fudan
    # DSB 2018 (seed 0): the trial beats the ellipse but not M0 without the term, which is 1.8 AP better.
    assert not PairwiseCheck("ellipse", 0.844, 0.863, 0.835, 914).kept
    assert not PairwiseCheck("ellipse", 0.8, 0.8, 0.7, 30).kept  # level: the term bought nothing
    unjudged = PairwiseCheck("ellipse", None, None, None, 12)  # nothing to judge with: learnt untried
    assert unjudged.kept and not unjudged.judged and PairwiseCheck("ellipse", 0.8, 0.7, 0.7, 30).judged
    assert "only 12 of GrabCut's masks" in unjudged.line(1.0) and "M0 learns with it" in unjudged.line(1.0)
    line = PairwiseCheck("ellipse", 0.852, 0.726, 0.667, 47).line(1.0)
    assert all(x in line for x in ("85.2%", "72.6%", "66.7%", "47 masks", "the term is kept"))
    assert "left out" in PairwiseCheck("ellipse", 0.844, 0.863, 0.835, 914).line(1.0)


def test_the_judge_is_the_cuts_that_pass_the_box_check(small_synthetic, small_train, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(mask_checks, "MIN_CROSS_CHECKED", 1)
    judge = pairwise_judge(tmp_path, small_train, "ellipse")
    masks = no_model_masks(tmp_path, small_train, None, sources=("grabcut", "ellipse"))
    passing = {i for i, (w, m) in masks["grabcut"].items() if mask_checks.check_mask(m, w).passes_box}
    assert judge.ready and set(judge.cuts) == passing and 0 < len(passing) <= len(masks["grabcut"])
    assert judge.bar == pytest.approx(cross_agreement(masks["ellipse"], masks["grabcut"]).share)
    assert pairwise_judge(tmp_path, small_train, None).shape == "ellipse"  # no pseudo masks: the free shape
    monkeypatch.setattr(mask_checks, "MIN_CROSS_CHECKED", len(passing) + 1)
    assert not pairwise_judge(tmp_path, small_train, "box").ready


class Trainer:
    """train_with for train_judged: trains (records the weight and folder, writes a final model file holding the
    weight) unless the folder has a final model already, as train() returns at once from it; returns the model in
    the folder. ``fail_at``: a weight whose training is killed."""

    def __init__(self, fail_at: float | None = None):
        self.trained, self.fail_at = [], fail_at

    def __call__(self, w: float, folder: Path):
        final = folder / "model_final.pt"
        if not final.exists():
            if w == self.fail_at:
                raise KeyboardInterrupt
            self.trained.append((w, folder.name))
            folder.mkdir(parents=True, exist_ok=True)
            final.write_text(str(w))
        return f"model {final.read_text()}", f"result {w}"


def _agreement(trial: float, without: float):
    """model_agreement by the weight the (fake) model was trained with."""
    return lambda model, judge, *a: trial if model == "model 1.0" else without


def _judged(tmp_path, verdicts: dict, ready: bool, lines: list, trainer: Trainer | None = None):
    out = tmp_path / "step0"
    trainer = trainer or Trainer()
    judge = PairwiseJudge("ellipse", {}, 0.7 if ready else None, None)
    result = train_judged(1.0, 0.0, "ellipse", lambda: judge, out, trainer, lambda: verdicts.get("v"),
                          lambda v: verdicts.__setitem__("v", v), lines.append)
    return trainer, result, out


def _folders(tmp_path) -> dict[str, str]:
    """Folder name → the weight its final model was trained with."""
    return {d.name: (d / "model_final.pt").read_text() for d in sorted(tmp_path.iterdir()) if d.is_dir()}


@pytest.mark.parametrize("trial, kept", [(0.9, True), (0.75, False)])
def test_train_judged_keeps_the_better_of_the_two_models(trial, kept, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(box_start, "model_agreement", _agreement(trial, 0.8))
    verdicts, lines = {}, []
    trainer, result, out = _judged(tmp_path, verdicts, True, lines)
    # Each model trained once: M0 without the term in M0's place, the trial beside it.
    assert trainer.trained == [(0.0, "step0"), (1.0, "step0-pairwise")]
    assert result == (("model 1.0", "result 1.0") if kept else ("model 0.0", "result 0.0"))
    v = verdicts["v"]
    assert (v["kept"], v["weight"], v["maps"], v["without"], v["bar"]) == (kept, 1.0, trial, 0.8, 0.7)
    # M0's place holds the winner; the other is kept beside it under a name that says why.
    assert _folders(tmp_path) == ({"step0": "1.0", "step0-without-pairwise": "0.0"} if kept
                                  else {"step0": "0.0", "step0-pairwise-rejected": "1.0"})
    assert sum("tries BoxInst's colour-pairwise term" in x for x in lines) == 1
    assert sum(("the term is kept" if kept else "the term is left out") in x for x in lines) == 1


@pytest.mark.parametrize("kept", [True, False])
def test_train_judged_resumes_without_training_or_judging_again(kept, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(box_start, "model_agreement", _agreement(0.9 if kept else 0.7, 0.8))
    verdicts, lines = {}, []
    _judged(tmp_path, verdicts, True, lines)
    settled = _folders(tmp_path)
    monkeypatch.setattr(box_start, "model_agreement", lambda *a: pytest.fail("judged twice"))
    # Killed after the verdict was kept, before the folders were settled ...
    trial, rejected, without = box_start.trial_folders(tmp_path / "step0")
    if kept:
        (tmp_path / "step0").rename(trial)
        without.rename(tmp_path / "step0")
    else:
        rejected.rename(trial)
    states = [_folders(tmp_path)]
    # ... and, where the trial was kept, between its two moves.
    if kept:
        (tmp_path / "step0").rename(without)
        states.append(_folders(tmp_path))
    for state in states:
        for name in list(_folders(tmp_path)):
            shutil.rmtree(tmp_path / name)
        for name, w in state.items():
            (tmp_path / name).mkdir()
            (tmp_path / name / "model_final.pt").write_text(w)
        trainer, result, _ = _judged(tmp_path, verdicts, True, lines)
        assert trainer.trained == [] and _folders(tmp_path) == settled
        assert result[0] == ("model 1.0" if kept else "model 0.0")
    # Resumed once more: nothing left to move.
    trainer, result, _ = _judged(tmp_path, verdicts, True, lines)
    assert trainer.trained == [] and _folders(tmp_path) == settled


def test_train_judged_resumes_a_trial_killed_in_training(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(box_start, "model_agreement", _agreement(0.9, 0.8))
    verdicts, lines = {}, []
    with pytest.raises(KeyboardInterrupt):
        _judged(tmp_path, verdicts, True, lines, Trainer(fail_at=1.0))
    assert "v" not in verdicts and _folders(tmp_path) == {"step0": "0.0"}
    trainer, result, _ = _judged(tmp_path, verdicts, True, lines)
    assert trainer.trained == [(1.0, "step0-pairwise")] and result[0] == "model 1.0" and verdicts["v"]["kept"]


def test_train_judged_without_a_judge_learns_with_the_term_once(tmp_path, monkeypatch) -> None:
    """Too few passing cuts: one M0, with the term, no model without it beside it, its verdict kept before it trains
    (what a killed run resumes from); resumed, nothing more."""
    monkeypatch.setattr(box_start, "model_agreement", lambda *a: pytest.fail("nothing to judge with"))
    verdicts, lines = {}, []

    class Checked(Trainer):
        def __call__(self, w, folder):
            assert verdicts["v"]["kept"] is True, "the verdict is kept before M0 trains"
            return super().__call__(w, folder)

    trainer, result, _ = _judged(tmp_path, verdicts, False, lines, Checked())
    assert trainer.trained == [(1.0, "step0")] and result[0] == "model 1.0"
    assert verdicts["v"]["kept"] is True and verdicts["v"]["maps"] is None and verdicts["v"]["without"] is None
    assert _folders(tmp_path) == {"step0": "1.0"}
    assert sum("nothing can judge" in x for x in lines) == 1
    trainer, result, _ = _judged(tmp_path, verdicts, False, lines)
    assert trainer.trained == [] and result[0] == "model 1.0" and _folders(tmp_path) == {"step0": "1.0"}


def test_train_judged_without_a_judge_resumes_a_kill_in_training(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(box_start, "model_agreement", lambda *a: pytest.fail("nothing to judge with"))
    verdicts, lines = {}, []
    with pytest.raises(KeyboardInterrupt):
        _judged(tmp_path, verdicts, False, lines, Trainer(fail_at=1.0))
    assert verdicts["v"]["kept"] is True and _folders(tmp_path) == {}
    monkeypatch.setattr(box_start, "pairwise_judge", lambda *a: pytest.fail("the verdict is kept: no judge again"))
    trainer, result, _ = _judged(tmp_path, verdicts, False, lines)
    assert trainer.trained == [(1.0, "step0")] and result[0] == "model 1.0" and _folders(tmp_path) == {"step0": "1.0"}
    assert sum("nothing can judge" in x for x in lines) == 1


def test_train_judged_keeps_an_old_runs_unjudged_verdict(tmp_path, monkeypatch) -> None:
    """A run whose store holds the verdict of before 2026-12-07's second sitting (nothing judged, left out) resumes
    without the term: a verdict, once kept, is what every later phase follows."""
    monkeypatch.setattr(box_start, "model_agreement", lambda *a: pytest.fail("judged again"))
    old = {"weight": 1.0, "shape": "ellipse", "maps": None, "without": None, "bar": None, "objects": 7, "kept": False}
    verdicts, lines = {"v": old}, []
    trainer, result, _ = _judged(tmp_path, verdicts, False, lines)
    assert trainer.trained == [(0.0, "step0")] and result[0] == "model 0.0" and lines == []


def _cfg(**loop):
    cfg = preset("tiny")
    sched = Schedule(iterations=3, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=3, log_every=1)
    model = dataclasses.replace(tiny_model_config(), pseudo_mask_weight=1.0, box_projection_weight=1.0)
    return dataclasses.replace(cfg, model=model, initial=sched, finetune=sched, device="cpu", eval_batch_size=2,
                               cost=CostModel(point_s=0.9, mask_s=3.0),
                               loop=dataclasses.replace(cfg.loop, steps=1, refine_masks="none", **loop))


def _run(tmp_path, small_train, small_val, **loop) -> tuple[list[str], list, dict | None]:
    cfg = _cfg(**loop)
    assert cfg.loop.box_start_pairwise == 1.0 and cfg.model.pairwise_weight == 0.0  # the tiny preset's
    lines: list[str] = []
    oracle, gt = mask_oracle(small_train)
    ActiveRun(tmp_path / "run", cfg, small_train, small_val, "random", 0, oracle, gt, report=lines.append).run()
    with Store.open(tmp_path / "run" / "apis.sqlite") as store:
        models = [load_model(tmp_path / "run" / store.phase(f"train_{s}")["model"]) for s in (0, 1)]
        return lines, models, store.phase(PAIRWISE_PHASE)


@pytest.mark.slow
@pytest.mark.parametrize("judged, initial", [("kept", 0), ("real", 0), ("kept", 1)])
def test_loop_follows_the_verdict_in_every_phase(judged, initial, tmp_path, small_train, small_val, monkeypatch,
                                                 one_thread) -> None:
    """Boxes only (or P0) and the ellipse: M0 is trained without and with the term; kept, M0 and M1 learn with it;
    left out (or whatever the real check on these tiny models says), both learn without it; the other M0 is kept
    aside."""
    monkeypatch.setattr(mask_checks, "MIN_CROSS_CHECKED", 1)
    if judged == "kept":
        monkeypatch.setattr(box_start, "model_agreement",
                            lambda model, judge, *a: 0.9 if model.cfg.pairwise_weight > 0 else 0.6)
    lines, models, verdict = _run(tmp_path, small_train, small_val, initial_points=initial, pseudo_masks="ellipse")
    kept = verdict["kept"]
    if judged == "kept":
        assert kept
    assert verdict["shape"] == "ellipse" and verdict["objects"] > 0
    assert 0.0 <= verdict["maps"] <= 1.0 and 0.0 <= verdict["without"] <= 1.0
    assert kept is (verdict["maps"] > verdict["without"])
    assert [m.cfg.pairwise_weight for m in models] == ([1.0, 1.0] if kept else [0.0, 0.0])
    aside = tmp_path / "run" / "models" / ("step0-without-pairwise" if kept else "step0-pairwise-rejected")
    assert load_model(aside / "model_final.pt").cfg.pairwise_weight == (0.0 if kept else 1.0)
    assert not (tmp_path / "run" / "models" / "step0-pairwise").exists()
    assert sum("tries BoxInst's colour-pairwise term" in x for x in lines) == 1
    assert sum("the term is " + ("kept" if kept else "left out") in x for x in lines) == 1
    start = "boxes only" if initial == 0 else "1 answered point per object"
    assert any(x.startswith(f"step 0: {start} and its pseudo masks are the ellipse") for x in lines)


@pytest.mark.slow
@pytest.mark.parametrize("initial, source, weight, why", [
    (0, "auto", 0.0, "the built-in set: GrabCut's masks pass the box check, so auto learns the colours from them"),
    (0, "ellipse", 1.0, "under 30 of GrabCut's masks pass the box check: nothing can judge the term, learnt untried"),
    (1, "ellipse", 1.0, "a P0 start, and the same: nothing can judge the term, learnt untried"),
    (1, "grabcut", 0.0, "a P0 start that learns from GrabCut's masks: they carry the colours"),
])
def test_loop_tries_nothing_where_the_term_is_not_needed_or_cannot_be_judged(
        initial, source, weight, why, tmp_path, small_train, small_val, one_thread) -> None:
    lines, models, verdict = _run(tmp_path, small_train, small_val, initial_points=initial, pseudo_masks=source)
    assert [m.cfg.pairwise_weight for m in models] == [weight, weight], why
    assert not any("tries BoxInst's colour-pairwise term" in x for x in lines), why
    assert not [d.name for d in (tmp_path / "run" / "models").iterdir() if d.name.startswith("step0-")], why
    if source == "ellipse":
        assert verdict is not None and verdict["kept"] is True and verdict["maps"] is None
        start = "boxes only" if initial == 0 else "1 answered point per object"
        assert any(x.startswith(f"step 0: {start} and") and "nothing can judge" in x for x in lines)
    else:
        assert verdict is None


@pytest.mark.slow
def test_a_box_only_start_nothing_judges_learns_its_masks_from_the_boxes(tmp_path, small_train, small_val,
                                                                         monkeypatch, one_thread) -> None:
    """Boxes only, every cut failing the box check: M0 learns from no pseudo mask, with the pairwise term untried,
    and the run says so; M1 (Random: answers at random points now judge the ellipse) learns the ellipse again."""
    monkeypatch.setattr(pseudo_masks_module, "cached_grabcut_pseudo_masks", _empty_cuts)
    seen: list = []
    real = loop_module.TrainingSet

    def recording(*args, **kwargs):
        seen.append(kwargs.get("pseudo_masks"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "TrainingSet", recording)
    lines, models, verdict = _run(tmp_path, small_train, small_val, initial_points=0, pseudo_masks="auto")
    assert seen[0] == {} and len(seen[1]) == len(small_train.instances())
    assert [m.cfg.pairwise_weight for m in models] == [1.0, 1.0]
    assert verdict["kept"] is True and verdict["maps"] is None
    assert any("not taught: nothing judges the ellipse" in x for x in lines)
    assert any(x.startswith("step 0: boxes only and it learns from no pseudo mask") for x in lines)
