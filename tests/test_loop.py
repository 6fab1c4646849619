"""The active loop end to end on a tiny model: phases, exactly one new point per instance per step,
and a run killed with SIGKILL inside every phase resumes to the same store and metrics."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent(
    """
    import os, signal, sys, dataclasses, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from conftest import tiny_model_config
    from apis.config import preset
    from apis.data.coco import load_coco
    from apis.loop import ActiveRun, mask_oracle
    from apis.train import Schedule

    torch.set_num_threads(1)
    train_set, val_set = load_coco(Path({train!r})), load_coco(Path({val!r}))
    cfg = preset("tiny")
    sched = Schedule(iterations=4, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=2, log_every=1)
    cfg = dataclasses.replace(cfg, model=tiny_model_config(), initial=sched, finetune=sched, device="cpu",
                              eval_batch_size=2, loop=dataclasses.replace(cfg.loop, steps=2))
    kill = sys.argv[2]
    calls = {{}}

    def progress(label, done, total):
        calls[label] = calls.get(label, 0) + 1
        if label == kill and calls[label] == 2:  # inside the phase, after some of its work
            os.kill(os.getpid(), signal.SIGKILL)

    oracle, gt = mask_oracle(train_set)
    run = ActiveRun(Path(sys.argv[1]), cfg, train_set, val_set, {strategy!r}, 0, oracle, gt,
                    report=lambda m: None, progress=progress)
    run.run()
    """
)

PHASES = ["train M0", "evaluate M0", "select P1", "answer P1", "train M1", "evaluate M1", "select P2",
          "answer P2", "train M2", "evaluate M2"]


def _child(tmp: Path, out: Path, data: dict, kill: str, strategy: str = "entropy") -> int:
    script = tmp / "loop_child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent), train=str(data["train"]),
                                   val=str(data["val"]), strategy=strategy))
    return subprocess.run([sys.executable, str(script), str(out), kill], timeout=600).returncode


def _snapshot(db: Path) -> tuple[list, list]:
    with sqlite3.connect(db) as c:
        points = c.execute("SELECT instance_id, step, x, y, label, strategy FROM points "
                           "ORDER BY instance_id, step, x, y").fetchall()
        evals = c.execute("SELECT name, payload FROM phases WHERE name LIKE 'eval_%' OR name LIKE 'select_%' "
                          "ORDER BY name").fetchall()
    return points, [(n, _strip_seconds(p)) for n, p in evals]


def _strip_seconds(payload: str) -> dict:
    import json

    d = json.loads(payload)
    d.pop("seconds", None)
    return d


@pytest.mark.slow
def test_loop_killed_in_every_phase_resumes_to_the_same_result(tmp_path, small_synthetic):
    straight = tmp_path / "straight"
    assert _child(tmp_path, straight, small_synthetic, kill="never") == 0
    killed = tmp_path / "killed"
    kills = 0
    for phase in PHASES:
        rc = _child(tmp_path, killed, small_synthetic, kill=phase)
        if rc == -signal.SIGKILL:
            kills += 1
        else:
            assert rc == 0
    assert kills >= 8, "the child should have been killed inside most phases"
    assert _child(tmp_path, killed, small_synthetic, kill="never") == 0
    a, b = _snapshot(straight / "apis.sqlite"), _snapshot(killed / "apis.sqlite")
    assert a[0] == b[0], "the same answers, none lost, none twice"
    assert a[1] == b[1], "the same selections and metrics"

    points = a[0]
    instances = {p[0] for p in points}
    for step in (0, 1, 2):
        per = [p for p in points if p[1] == step]
        assert len(per) == len(instances), f"step {step}: one point per instance"
    # Never the same pixel twice for one instance (the store refuses it; the loop never asks it).
    assert len({(p[0], p[2], p[3]) for p in points}) == len(points)
