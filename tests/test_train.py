"""Trainer: schedules, and a run killed with SIGKILL resumes to exactly the uninterrupted weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from apis.train import Schedule, lr_at

CHILD = textwrap.dedent(
    """
    import os, signal, sys, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import tiny_model_config
    from apis.data.coco import load_coco
    from apis.data.loader import TrainingSet
    from apis.models.condinst import CondInst
    from apis.oracle import MaskOracle, initial_answers
    from apis.train import Schedule, train

    torch.set_num_threads(1)
    ds = load_coco(Path({train_json!r}))
    pts = {{}}
    for a in initial_answers(ds, MaskOracle(ds), seed=0, k=2):
        pts.setdefault(a.instance_id, []).append((a.x, a.y, a.label))
    torch.manual_seed(0)
    model = CondInst(tiny_model_config())
    sched = Schedule(iterations=8, batch_size=2, lr=0.01, warmup_iters=2, decay_at=(6,), checkpoint_every=2,
                     log_every=1)
    kill_at = int(sys.argv[2])

    def progress(done, total, losses):
        if done == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train(model, TrainingSet(ds, points=pts), sched, Path(sys.argv[1]), seed=5, progress=progress)
    """
)


def test_lr_schedule_warmup_and_decay():
    s = Schedule(iterations=100, lr=0.1, warmup_iters=10, warmup_factor=0.0, decay_at=(50, 80), gamma=0.1)
    assert lr_at(s, 0) == pytest.approx(0.0)
    assert lr_at(s, 5) == pytest.approx(0.05)
    assert lr_at(s, 10) == pytest.approx(0.1)
    assert lr_at(s, 49) == pytest.approx(0.1)
    assert lr_at(s, 50) == pytest.approx(0.01)
    assert lr_at(s, 80) == pytest.approx(0.001)


def _run(tmp: Path, out: Path, train_json: Path, kill_at: int) -> int:
    script = tmp / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent), train_json=str(train_json)))
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at)], timeout=300).returncode


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(tmp_path, small_synthetic):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _run(tmp_path, straight, small_synthetic["train"], kill_at=-1) == 0
    # Killed after iteration 5: the last checkpoint is at 4, so iteration 5 is redone on resume.
    rc = _run(tmp_path, killed, small_synthetic["train"], kill_at=5)
    assert rc == -signal.SIGKILL
    assert (killed / "checkpoint.pt").is_file() and not (killed / "model_final.pt").exists()
    assert _run(tmp_path, killed, small_synthetic["train"], kill_at=-1) == 0
    a = torch.load(straight / "model_final.pt", weights_only=False)["model"]
    b = torch.load(killed / "model_final.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The log has each iteration exactly once, as if never interrupted.
    log = (killed / "log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, 9))
    assert not (killed / "checkpoint.pt").exists()
    assert os.path.getsize(killed / "model_final.pt") > 0


@pytest.mark.slow
def test_pairwise_warmup_ramps_the_pairwise_loss_in(tmp_path, small_train, one_thread):
    """The first iteration's pairwise loss, identical before any step, is logged at 1/warmup of its weight; the
    other losses are untouched."""
    import csv
    import dataclasses

    from conftest import tiny_model_config

    from apis.data.loader import TrainingSet
    from apis.models.condinst import CondInst
    from apis.train import train

    rows = {}
    for warmup in (0, 10):
        torch.manual_seed(0)
        model = CondInst(dataclasses.replace(tiny_model_config(), box_projection_weight=1.0, pairwise_weight=1.0))
        sched = Schedule(iterations=1, batch_size=2, warmup_iters=1, log_every=1, pairwise_warmup=warmup)
        train(model, TrainingSet(small_train), sched, tmp_path / str(warmup), seed=3)
        with open(tmp_path / str(warmup) / "log.csv") as f:
            rows[warmup] = next(csv.DictReader(f))
    full, ramped = rows[0], rows[10]
    assert float(full["loss_pairwise"]) > 0
    assert float(ramped["loss_pairwise"]) == pytest.approx(float(full["loss_pairwise"]) / 10, rel=1e-4)
    assert float(ramped["loss_proj"]) == pytest.approx(float(full["loss_proj"]), rel=1e-6)
