"""Paired comparisons: strategies of one seed share P0 and M0; arms find the shared model; results.csv
grows across invocations; a resumed run refuses another strategy or seed."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from conftest import tiny_model_config

from apis.config import preset
from apis.experiment import compare, read_results
from apis.loop import ActiveRun, RunMismatch, mask_oracle
from apis.store import Store
from apis.train import Schedule


def _cfg(strategies, steps=1):
    cfg = preset("tiny")
    sched = Schedule(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=10, log_every=1)
    return dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                               eval_batch_size=2, loop=dataclasses.replace(cfg.loop, strategies=strategies,
                                                                           steps=steps, seeds=[0]))


@pytest.mark.slow
def test_compare_shares_p0_and_m0_and_merges_results(tmp_path, small_train, small_val):
    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    compare(out, _cfg(["random", "entropy"]), small_train, small_val, report=lambda m: None)
    rows = read_results(out / "results.csv")
    assert {(r["strategy"], r["step"]) for r in rows} == {(s, t) for s in ("random", "entropy") for t in ("0", "1")}
    step0 = {r["strategy"]: r["AP"] for r in rows if r["step"] == "0"}
    assert step0["random"] == step0["entropy"], "both arms start from the same M0"
    # Every row carries the no-model yardsticks of the same pool; the point-free ones are the same in every
    # row, GrabCut with points uses that row's answers.
    n_pool = len(small_train.instances())
    for r in rows:
        assert int(r["yardstick_objects"]) == n_pool
        caught = r["trust_worst_tenth"]
        assert caught == "" if n_pool < 10 else 0.0 <= float(caught) <= 1.0
        for m in ("box", "ellipse", "grabcut", "grabcut_points"):
            assert 0.0 < float(r[f"pool_iou_{m}"]) <= 1.0 and float(r[f"pool_iou_{m}_se"]) >= 0.0
    for m in ("box", "ellipse", "grabcut"):
        assert len({r[f"pool_iou_{m}"] for r in rows}) == 1
    assert len({r["pool_iou_grabcut_points"] for r in rows if r["step"] == "0"}) == 1, "P0 is shared"
    assert list((out / "cache").glob("grabcut-*.npz")), "GrabCut masks are cached once for the comparison"
    with Store.open(out / "seed0" / "random" / "apis.sqlite") as a, \
            Store.open(out / "seed0" / "entropy" / "apis.sqlite") as b:
        assert a.points(max_step=0) == b.points(max_step=0), "the same P0"
        assert (out / "seed0" / "entropy" / a.phase("train_0")["model"]).resolve() == \
            (out / "seed0" / "shared" / "models" / "step0" / "model_final.pt").resolve()
    # Moving the whole comparison keeps it resumable: model paths are relative.
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    compare(moved, _cfg(["variance"]), small_train, small_val, report=lambda m: None)
    rows = read_results(moved / "results.csv")
    assert {r["strategy"] for r in rows} == {"random", "entropy", "variance"}, "earlier rows are kept"


@pytest.mark.slow
def test_resumed_run_refuses_another_strategy_or_seed(tmp_path, small_train, small_val):
    torch.set_num_threads(1)
    oracle, gt = mask_oracle(small_train)
    cfg = _cfg(["entropy"])
    ActiveRun(tmp_path / "r", cfg, small_train, small_val, "entropy", 0, oracle, gt, report=lambda m: None).run()
    with pytest.raises(RunMismatch, match="entropy"):
        ActiveRun(tmp_path / "r", cfg, small_train, small_val, "random", 0, oracle, gt, report=lambda m: None).run()
    with pytest.raises(RunMismatch, match="seed"):
        ActiveRun(tmp_path / "r", cfg, small_train, small_val, "entropy", 1, oracle, gt, report=lambda m: None).run()


def test_an_arm_starts_from_m0s_source_table_and_does_not_print_it_again(tmp_path, small_train, small_val):
    # Entropy's step 1 is judged on P0's answers alone, as M0's sources were: one line, not the table again.
    torch.set_num_threads(1)
    cfg = _cfg(["entropy"])
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pseudo_mask_weight=1.0))
    out, lines = tmp_path / "cmp", []
    compare(out, cfg, small_train, small_val, report=lines.append)
    shared = (out / "seed0" / "shared" / "pseudo_masks" / "sources-P0.json").read_text()
    assert (out / "seed0" / "entropy" / "pseudo_masks" / "sources-P0.json").read_text() == shared
    arm = lines[lines.index("seed 0: entropy"):]
    assert any(ln.startswith("step 1: mask sources judged as at step 0") for ln in arm)
    assert not any("← chosen" in ln for ln in arm) and any("← chosen" in ln for ln in lines)
