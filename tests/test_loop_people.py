"""The active loop with people as the oracle: it stops while questions are open, takes the answers
through the store's queue, and a "can't tell" moves the question to the next-best pixel."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_model_config

from apis.config import preset
from apis.loop import ActiveRun, WaitingForPeople
from apis.oracle import MaskOracle
from apis.store import Store
from apis.train import Schedule


def _answer_all(store: Store, oracle: MaskOracle, step: int, skip_first: bool = False) -> int:
    """A person answering every open question of ``step`` from the GT masks; returns answers given."""
    given = 0
    skipped = not skip_first
    while qs := store.open_queries(step):
        for q in qs:
            if not skipped:
                store.answer_query(q.id, "skip", "alice")
                skipped = True
                continue
            label = int(oracle.mask(q.instance_id)[q.y, q.x])
            store.answer_query(q.id, "yes" if label else "no", "alice")
            given += 1
    return given


@pytest.mark.slow
def test_people_loop_waits_then_continues(tmp_path, small_train, small_val):
    torch.set_num_threads(1)
    cfg = preset("tiny")
    sched = Schedule(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=10, log_every=1)
    cfg = dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                              eval_batch_size=2, loop=dataclasses.replace(cfg.loop, steps=1))
    run = ActiveRun(tmp_path / "p", cfg, small_train, small_val, "entropy", 0, oracle=None, report=lambda m: None,
                    people=True)
    oracle = MaskOracle(small_train)
    n = len(small_train.instances())

    with pytest.raises(WaitingForPeople) as e:
        run.run()
    assert e.value.step == 0 and e.value.open_questions == n
    with Store.open(tmp_path / "p" / "apis.sqlite") as store:
        assert store.point_count() == 0, "nothing is answered before people answer"
        _answer_all(store, oracle, 0)

    with pytest.raises(WaitingForPeople) as e:
        run.run()  # trains M0, selects P1, posts its questions
    assert e.value.step == 1 and e.value.open_questions == n
    with Store.open(tmp_path / "p" / "apis.sqlite") as store:
        first = store.open_queries(1)[0]
        assert len(first.alternates) >= 1, "next-best pixels are kept for 'can't tell'"
        given = _answer_all(store, oracle, 1, skip_first=True)
    assert given == n, "the skipped question was replaced by its next-best pixel and answered"

    results = run.run()
    assert [r.step for r in results] == [0, 1]
    with Store.open(tmp_path / "p" / "apis.sqlite") as store:
        assert store.point_count(max_step=0) == n
        assert store.point_count() == 2 * n
        assert store.phase("answer_1")["answered"] == n
        points = store.points()
        replaced = [p for p in points[first.instance_id] if p.step == 1]
        assert len(replaced) == 1 and (replaced[0].x, replaced[0].y) != (first.x, first.y)
        assert all(p.annotator == "alice" for ps in points.values() for p in ps)
