"""Who answers (apis.answerers): the oracle answers P0 and a step at once, people through the queue, one interface;
and ActiveRun uses the answerer it is given."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_model_config

from apis import queue
from apis.answerers import OracleAnswerer, PeopleAnswerer, WaitingForPeople
from apis.config import preset
from apis.oracle import MaskOracle, initial_points
from apis.selection.select import Choice
from apis.store import Store
from apis.train import Schedule


def _store(tmp_path, dataset) -> Store:
    store = Store.open(tmp_path / "apis.sqlite")
    store.add_instances(dataset, "train")
    return store


def _describe(choices, labels) -> dict:
    return {"labels": list(labels), "asked": [(c.instance_id, c.x, c.y) for c in choices]}


def _choices(dataset, n: int = 3) -> list[Choice]:
    """The P0 pixel of seed 7 for the first ``n`` pool objects, as a step's choices (p_mean 0.5), each with two
    other pixels of its Ω as alternates."""
    spare: dict[int, list[tuple[int, int]]] = {}
    for q in initial_points(dataset, 8, k=4):
        spare.setdefault(q.instance_id, []).append((q.x, q.y))
    return [Choice(q.instance_id, q.image_id, q.x, q.y, 1, 0.5,
                   [p for p in spare[q.instance_id] if p != (q.x, q.y)][:2]) for q in initial_points(dataset, 7)[:n]]


def test_oracle_answers_p0_and_a_step_from_the_gt_masks(tmp_path, small_train):
    oracle = MaskOracle(small_train)
    lines, calls = [], []
    answerer = OracleAnswerer(oracle, "entropy", lines.append, lambda label: lambda d, t: calls.append((label, d, t)))
    assert answerer.reserve == 0 and not answerer.people
    n = len(small_train.instances())
    with _store(tmp_path, small_train) as store:
        answerer.initial_points(store, small_train, seed=3, k=2)
        assert store.phase("p0") == {"points": 2 * n, "seed": 3}
        p0 = [p for ps in store.points().values() for p in ps]
        assert len(p0) == 2 * n and {p.strategy for p in p0} == {"random"}
        assert all(p.label == oracle.mask(p.instance_id)[p.y, p.x] for p in p0)
        choices = _choices(small_train)
        answerer.answer(store, 1, choices, _describe)
        payload = store.phase("answer_1")
        truth = [int(oracle.mask(c.instance_id)[c.y, c.x]) for c in choices]
        assert payload["answered"] == 3 and payload["labels"] == truth
        step1 = sorted((p.instance_id, p.x, p.y, p.label, p.strategy) for ps in store.points().values() for p in ps
                       if p.step == 1)
        assert step1 == sorted((c.instance_id, c.x, c.y, y, "entropy") for c, y in zip(choices, truth, strict=True))
    # Answered, then stored: progress says 0 of 3 twice (asked, answered) before 3 of 3.
    assert calls == [("answer P1", 0, 3), ("answer P1", 0, 3), ("answer P1", 3, 3)]
    assert lines == [f"P0: {2 * n} points answered", "step 1: 3 points answered (entropy)"]


@pytest.mark.parametrize("make", [lambda: OracleAnswerer(None, "random"), lambda: PeopleAnswerer("random")])
def test_no_initial_points_records_an_empty_p0_whoever_answers(tmp_path, small_train, make):
    lines = []
    answerer = dataclasses.replace(make(), report=lines.append)
    with _store(tmp_path, small_train) as store:
        answerer.initial_points(store, small_train, seed=4, k=0)
        assert store.phase("p0") == {"points": 0, "seed": 4} and store.point_count() == 0
        assert store.queries() == []
    assert lines == ["P0: none (M0 learns from boxes alone)"]


def test_people_are_not_asked_what_they_cannot_answer(small_train, tmp_path):
    with pytest.raises(ValueError, match="reads GT masks"):
        PeopleAnswerer("max_error_gt")
    with _store(tmp_path, small_train) as store, pytest.raises(ValueError, match="loop.initial_points 2.*set 1 or 0"):
        PeopleAnswerer("random", report=lambda s: None).initial_points(store, small_train, 0, k=2)


def test_people_answer_p0_and_a_step_through_the_queue(tmp_path, small_train):
    oracle = MaskOracle(small_train)
    lines = []
    answerer = PeopleAnswerer("entropy", lines.append)
    assert answerer.reserve == queue.ALTERNATES and answerer.people
    n = len(small_train.instances())
    with _store(tmp_path, small_train) as store:
        with pytest.raises(WaitingForPeople) as e:
            answerer.initial_points(store, small_train, seed=2, k=1)
        assert (e.value.step, e.value.open_questions) == (0, n) and store.phase("p0") is None
        posted = store.open_queries(0)
        # The asked pixel is the simulation's P0 pixel of the same seed; its reserve pixels differ from it.
        assert sorted((q.instance_id, q.x, q.y) for q in posted) == \
            sorted((q.instance_id, q.x, q.y) for q in initial_points(small_train, 2))
        assert all(q.alternates and (q.x, q.y) not in [tuple(p) for p in q.alternates] for q in posted)
        for q in posted:
            store.answer_query(q.id, "yes" if oracle.mask(q.instance_id)[q.y, q.x] else "no", "ann")
        answerer.initial_points(store, small_train, seed=2, k=1)
        assert store.phase("p0") == {"points": n, "seed": 2}

        choices = _choices(small_train)
        with pytest.raises(WaitingForPeople):
            answerer.answer(store, 1, choices, _describe)
        first = store.open_queries(1)[0]
        store.answer_query(first.id, "skip", "ann")  # can't tell: asked at its next pixel instead
        while open_ := store.open_queries(1):
            for q in open_:
                store.answer_query(q.id, "yes" if oracle.mask(q.instance_id)[q.y, q.x] else "no", "ann")
        answerer.answer(store, 1, choices, _describe)
        payload = store.phase("answer_1")
    # The replaced question's answer is not judged against the pixel first chosen: only the two asked are described.
    assert payload["answered"] == 3 and len(payload["asked"]) == 2
    assert (first.instance_id, first.x, first.y) not in [tuple(a) for a in payload["asked"]]
    assert lines == [f"P0: {n} questions posted for people", "step 1: 3 questions posted for people",
                     "step 1: 3 answers from people taken"]


@pytest.mark.slow
def test_active_run_asks_the_answerer_it_is_given(tmp_path, small_train, small_val):
    """The run calls its answerer for P0 and for every step, with the choices it recorded and the measures'
    diagnostics; the answerer's reserve sets the alternates the selection ranks."""
    from apis.loop import ActiveRun

    torch.set_num_threads(1)

    @dataclasses.dataclass(frozen=True)
    class Recording(OracleAnswerer):
        log: list = dataclasses.field(default_factory=list)
        reserve = 2

        def initial_points(self, store, dataset, seed, k):
            self.log.append(("p0", seed, k))
            super().initial_points(store, dataset, seed, k)

        def answer(self, store, step, choices, describe):
            self.log.append(("answer", step, len(choices), sorted(describe(choices, [1] * len(choices)))))
            super().answer(store, step, choices, describe)

    cfg = preset("tiny")
    sched = Schedule(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=10, log_every=1)
    cfg = dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                              eval_batch_size=2, loop=dataclasses.replace(cfg.loop, steps=1, yardstick_objects=0))
    oracle = MaskOracle(small_train)
    answerer = Recording(oracle, "random", lambda s: None)
    run = ActiveRun(tmp_path / "r", cfg, small_train, small_val, "random", 5, None, oracle.mask,
                    report=lambda s: None, answerer=answerer)
    run.run()
    n = len(small_train.instances())
    assert answerer.log == [("p0", 5, 1), ("answer", 1, n, ["boundary_distance", "misclassified"])]
    with Store.open(tmp_path / "r" / "apis.sqlite") as store:
        chosen = store.phase("select_1")["choices"]
        assert store.phase("arm")["people"] is False
    assert len(chosen) == n and all(len(c["alternates"]) == 2 for c in chosen)
