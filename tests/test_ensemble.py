"""Prediction set M: an ensemble of models trained with different seeds, concatenated per instance,
trained as separate lineages by the loop, and used by selection and export alike."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest
import torch
from conftest import tiny_model_config

from apis.batches import pool_target
from apis.config import ConfigError, load_config, preset
from apis.data.loader import category_index, image_tensor
from apis.export import load_step_model
from apis.loop import ActiveRun, mask_oracle
from apis.models.condinst import CondInst
from apis.models.ensemble import Ensemble
from apis.selection.select import prediction_sets
from apis.store import Store
from apis.train import Schedule


def _models(n: int) -> list[CondInst]:
    out = []
    for j in range(n):
        torch.manual_seed(100 + j)
        out.append(CondInst(tiny_model_config()).eval())
    return out


def _batch(small_train):
    im = next(i for i in small_train.images if i.pool)
    return [image_tensor(small_train, im)], [pool_target(im, category_index(small_train))]


def test_ensemble_concatenates_every_members_maps(small_train, one_thread) -> None:
    a, b = _models(2)
    images, targets = _batch(small_train)
    ens = Ensemble([a, b])
    got = prediction_sets(ens, images, targets, "M")[0]
    one, two = a.prediction_sets(images, targets)[0], b.prediction_sets(images, targets)[0]
    assert len(got) == len(targets[0]["windows"])
    for g, maps in enumerate(got):
        assert maps.shape[0] == one[g].shape[0] + two[g].shape[0]
        assert torch.equal(maps, torch.cat([one[g], two[g]], 0))
    # S+M is S of each member: twice the maps of S of one member when both members are the same model.
    s_one = prediction_sets(a, images, targets, "S")[0]
    s_twice = prediction_sets(Ensemble([a, a]), images, targets, "S+M")[0]
    assert all(t.shape[0] == 2 * s.shape[0] for s, t in zip(s_one, s_twice, strict=True))
    # Detections are the main member's.
    torch.testing.assert_close(ens(images)[0]["scores"], a(images)[0]["scores"])


def test_set_and_model_must_agree(small_train) -> None:
    a, b = _models(2)
    images, targets = _batch(small_train)
    with pytest.raises(ValueError, match="needs an Ensemble"):
        prediction_sets(a, images, targets, "M")
    with pytest.raises(ValueError, match="needs a single model"):
        prediction_sets(Ensemble([a, b]), images, targets, "A")
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([a])


def test_config_refuses_an_ensemble_of_one(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("loop: {prediction_set: M, ensemble_size: 1}\n")
    with pytest.raises(ConfigError, match="ensemble_size"):
        load_config(p)
    p.write_text("loop: {prediction_set: S+M, ensemble_size: 2}\n")
    assert load_config(p).loop.ensemble_size == 2


@pytest.mark.slow
def test_loop_trains_member_lineages_and_selects_with_all(tmp_path, small_synthetic, small_train, small_val,
                                                         one_thread) -> None:
    cfg = preset("tiny")
    sched = Schedule(iterations=3, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=3, log_every=1)
    cfg = dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                              eval_batch_size=2,
                              loop=dataclasses.replace(cfg.loop, steps=1, prediction_set="M", ensemble_size=2))
    oracle, gt = mask_oracle(small_train)
    root = tmp_path / "run"
    ActiveRun(root, cfg, small_train, small_val, "entropy", 0, oracle, gt, report=lambda m: None).run()

    with sqlite3.connect(root / "apis.sqlite") as c:
        phases = {n for (n,) in c.execute("SELECT name FROM phases")}
    assert {"train_0", "train_0_m1", "train_1", "train_1_m1", "select_1", "answer_1", "eval_1"} <= phases
    assert (root / "models/step1/member1/model_final.pt").is_file()
    # Members start from different weights (another seed), so their maps differ.
    with Store.open(root / "apis.sqlite") as store:
        ens = load_step_model(root, store, 0, "M", 2, "cpu")
        assert isinstance(ens, Ensemble) and len(ens) == 2
        w0, w1 = (dict(m.named_parameters())["head.controller.weight"] for m in ens.members)
        assert not torch.equal(w0, w1)
        # Member 1 of step 1 was fine-tuned from member 1 of step 0, not from M0.
        m1_step1 = load_step_model(root, store, 1, "M", 2, "cpu").members[1]
        assert _closer(m1_step1, ens.members[1], ens.members[0])
        choices = store.phase("select_1")["choices"]
    # Every choice read both members' maps: K is the sum of the members' positives.
    images = {im.id: im for im in small_train.images}
    classes = category_index(small_train)
    for c in choices[:5]:
        im = images[c["image_id"]]
        t = pool_target(im, classes)
        g = [a.id for a in im.pool].index(c["instance_id"])
        ks = [m.prediction_sets([image_tensor(small_train, im)], [t])[0][g].shape[0] for m in ens.members]
        assert c["k"] == sum(ks)


def _closer(model: CondInst, same: CondInst, other: CondInst) -> bool:
    """True when ``model``'s weights are nearer ``same``'s than ``other``'s (it was fine-tuned from it)."""
    def dist(a: CondInst, b: CondInst) -> float:
        return sum(float((p - q).detach().pow(2).sum()) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    return dist(model, same) < dist(model, other)
