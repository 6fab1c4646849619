"""The box-only start's colour cue: BoxInst's pairwise term tried where the pseudo masks lack the colours, judged
against GrabCut's masks that pass the box check, kept or trained away, and resumed after a kill."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from conftest import tiny_model_config

from apis import box_start, mask_checks
from apis.box_start import (
    PairwiseCheck,
    PairwiseJudge,
    box_start_pairwise,
    pairwise_judge,
    train_judged,
    trial_weight,
)
from apis.config import preset
from apis.cost import CostModel
from apis.layout import PAIRWISE_PHASE
from apis.loop import ActiveRun, mask_oracle
from apis.mask_checks import cross_agreement
from apis.pseudo_masks import no_model_masks
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


def test_the_term_is_kept_only_when_the_masks_beat_the_shape() -> None:
    assert PairwiseCheck("ellipse", 0.84, 0.67, 47).kept
    assert not PairwiseCheck("ellipse", 0.78, 0.835, 914).kept  # DSB's collapsed masks
    assert not PairwiseCheck("ellipse", 0.7, 0.7, 30).kept  # level: the term bought nothing
    assert not PairwiseCheck("ellipse", None, None, 12).kept  # nothing to judge with
    line = PairwiseCheck("ellipse", 0.843, 0.667, 47).line(1.0)
    assert "84.3%" in line and "66.7%" in line and "47 masks" in line and "kept" in line


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
    """train_with for train_judged: records the weights it trained with and writes a final model file."""

    def __init__(self, out: Path):
        self.out, self.weights = out, []

    def __call__(self, w: float):
        self.weights.append(w)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "model_final.pt").write_text(str(w))
        return f"model {w}", f"result {w}"


def _judged(tmp_path, verdicts: dict, ready: bool, lines: list, moved: list | None = None):
    out = tmp_path / "step0"
    trainer = Trainer(out)
    judge = PairwiseJudge("ellipse", {}, 0.7 if ready else None, None)
    result = train_judged(1.0, 0.0, "ellipse", lambda: judge, out, trainer, lambda: verdicts.get("v"),
                          lambda v: verdicts.__setitem__("v", v), lines.append,
                          move_aside=lambda a, b: (moved.append((a, b)) if moved is not None else None,
                                                   box_start.set_aside(a, b)))
    return trainer, result, out


@pytest.mark.parametrize("maps, kept", [(0.9, True), (0.6, False)])
def test_train_judged_keeps_the_trial_or_trains_again_without_it(maps, kept, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(box_start, "check_pairwise", lambda model, judge, *a: PairwiseCheck("ellipse", maps, 0.7, 40))
    verdicts, lines = {}, []
    trainer, result, out = _judged(tmp_path, verdicts, True, lines)
    assert trainer.weights == ([1.0, 1.0] if kept else [1.0, 0.0])  # kept: the second call returns at once
    assert result == ("model 1.0", "result 1.0") if kept else ("model 0.0", "result 0.0")
    assert verdicts["v"]["kept"] is kept and verdicts["v"]["weight"] == 1.0
    rejected = tmp_path / "step0-pairwise-rejected"
    assert rejected.exists() is (not kept)
    if not kept:  # the trial is kept aside, M0's place holds the model trained without the term
        assert (rejected / "model_final.pt").read_text() == "1.0" and (out / "model_final.pt").read_text() == "0.0"
    assert any("tries BoxInst's colour-pairwise term" in x for x in lines)


def test_train_judged_resumes_from_the_kept_verdict_without_judging_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(box_start, "check_pairwise", lambda model, judge, *a: PairwiseCheck("ellipse", 0.6, 0.7, 40))
    verdicts, lines, moved = {}, [], []
    _judged(tmp_path, verdicts, True, lines, moved)
    # Killed after the verdict was kept, before the trial was moved aside: the resumed command moves it once,
    # does not train or judge the trial again, and trains M0 without the term.
    shutil.rmtree(tmp_path / "step0")
    (tmp_path / "step0-pairwise-rejected").rename(tmp_path / "step0")

    def no_check(*a):
        raise AssertionError("judged twice")

    monkeypatch.setattr(box_start, "check_pairwise", no_check)
    trainer, result, out = _judged(tmp_path, verdicts, True, lines, moved)
    assert trainer.weights == [0.0] and result == ("model 0.0", "result 0.0")
    assert len(moved) == 2 and (tmp_path / "step0-pairwise-rejected" / "model_final.pt").read_text() == "1.0"
    # Killed once more after that: nothing left to move.
    trainer, _, _ = _judged(tmp_path, verdicts, True, lines, moved)
    assert trainer.weights == [0.0] and (tmp_path / "step0-pairwise-rejected" / "model_final.pt").read_text() == "1.0"


def test_train_judged_without_a_judge_never_tries_the_term(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(box_start, "check_pairwise", lambda *a: pytest.fail("nothing to judge with"))
    verdicts, lines = {}, []
    trainer, result, _ = _judged(tmp_path, verdicts, False, lines)
    assert trainer.weights == [0.0] and verdicts["v"]["kept"] is False and verdicts["v"]["maps"] is None
    assert not (tmp_path / "step0-pairwise-rejected").exists()
    assert any("nothing could judge" in x for x in lines)


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
@pytest.mark.parametrize("maps", [0.99, None])
def test_loop_follows_the_verdict_in_every_phase(maps, tmp_path, small_train, small_val, monkeypatch,
                                                 one_thread) -> None:
    """Boxes only and the ellipse: M0 tries the term; kept, M0 and M1 learn with it; rejected (the real check
    on this tiny model), both learn without it and the trial is kept aside."""
    monkeypatch.setattr(mask_checks, "MIN_CROSS_CHECKED", 1)
    if maps is not None:
        monkeypatch.setattr(box_start, "check_pairwise",
                            lambda model, judge, *a: PairwiseCheck(judge.shape, maps, judge.bar, len(judge.cuts)))
    lines, models, verdict = _run(tmp_path, small_train, small_val, initial_points=0, pseudo_masks="ellipse")
    kept = verdict["kept"]
    if maps is not None:
        assert kept
    assert verdict["shape"] == "ellipse" and verdict["objects"] > 0 and 0.0 <= verdict["maps"] <= 1.0
    assert [m.cfg.pairwise_weight for m in models] == ([1.0, 1.0] if kept else [0.0, 0.0])
    assert (tmp_path / "run" / "models" / "step0-pairwise-rejected").exists() is (not kept)
    assert sum("tries BoxInst's colour-pairwise term" in x for x in lines) == 1
    assert sum("the term is " + ("kept" if kept else "left out") in x for x in lines) == 1


@pytest.mark.slow
@pytest.mark.parametrize("initial, source, why", [
    (0, "auto", "the built-in set: GrabCut's masks pass the box check, so auto learns the colours from them"),
    (1, "ellipse", "a P0 start: the answers teach what the shape misses"),
    (0, "ellipse", "under 30 of GrabCut's masks pass the box check: nothing could judge the term"),
])
def test_loop_leaves_the_term_out_where_it_is_not_needed_or_cannot_be_judged(
        initial, source, why, tmp_path, small_train, small_val, one_thread) -> None:
    lines, models, verdict = _run(tmp_path, small_train, small_val, initial_points=initial, pseudo_masks=source)
    assert [m.cfg.pairwise_weight for m in models] == [0.0, 0.0], why
    assert not any("tries BoxInst's colour-pairwise term" in x for x in lines), why
    if initial == 0 and source == "ellipse":
        assert verdict is not None and verdict["kept"] is False and verdict["maps"] is None
        assert any("nothing could judge" in x for x in lines)
    else:
        assert verdict is None

