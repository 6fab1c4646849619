"""Test projects for the labelling server: a tiny synthetic dataset, its instances stored, questions posted."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from apis.data.coco import load_coco
from apis.data.records import CocoDataset, Instance
from apis.data.synthetic import SyntheticConfig, generate
from apis.store import Store, StoredInstance

TOKENS = {"tok-alice-0123456789": "alice", "tok-bob-0123456789ab": "bob"}
"""Annotator tokens of the test servers: token → name."""
ALICE = {"Authorization": "Bearer tok-alice-0123456789"}
BOB = {"Authorization": "Bearer tok-bob-0123456789ab"}
"""Request headers of alice and bob (:data:`TOKENS`)."""


class Clock:
    """A settable clock (seconds) for leases: pass it as ``create_app(..., clock=)`` and move ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_project(root: Path, copies: int = 1, image_size: int = 64) -> Path:
    """A project folder with ``config.yaml`` (naming the synthetic train json) and ``apis.sqlite`` holding the
    train instances. ``copies`` > 1 stores each instance that many times under new ids (same image and box),
    for load tests that need many questions."""
    paths = generate(root / "data", SyntheticConfig(image_size=image_size, train_images=4, val_images=2))
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "config.yaml").write_text(f"preset: tiny\ndata: {{train: {paths['train']}, val: {paths['val']}}}\n")
    dataset = load_coco(paths["train"])
    if copies > 1:
        dataset = _replicated(dataset, copies)
    with Store.open(project) as store:
        store.add_instances(dataset, "train")
    return project


def _replicated(dataset: CocoDataset, copies: int) -> CocoDataset:
    next_id = max(a.id for a in dataset.instances()) + 1
    images = []
    for image in dataset.images:
        extra: list[Instance] = []
        for _ in range(copies - 1):
            for a in image.pool:
                extra.append(dataclasses.replace(a, id=next_id))
                next_id += 1
        images.append(dataclasses.replace(image, instances=image.instances + tuple(extra)))
    return dataclasses.replace(dataset, images=images)


@dataclasses.dataclass(frozen=True)
class Pick:
    """A chosen pixel, shaped like a selection Choice."""

    instance_id: int
    x: int
    y: int


def centre_pixel(inst: StoredInstance) -> tuple[int, int]:
    w = inst.omega
    return (w.x0 + w.x1 - 1) // 2, (w.y0 + w.y1 - 1) // 2


def ranking(inst: StoredInstance, n: int) -> list[tuple[int, int]]:
    """The centre pixel of Ω, then up to ``n`` - 1 other pixels of Ω (row-major from the top-left)."""
    first = centre_pixel(inst)
    w = inst.omega
    rest = ((x, y) for y in range(w.y0, w.y1) for x in range(w.x0, w.x1) if (x, y) != first)
    return [first, *itertools.islice(rest, n - 1)]


def post_step(project: Path, step: int = 1, alternates: int = 3, limit: int | None = None) -> int:
    """Post one question per stored instance (its Ω's centre pixel) for ``step``, with ``alternates`` next pixels."""
    from apis import queue

    with Store.open(project) as store:
        insts = store.instances("train")[:limit]
        ranked = {i.id: ranking(i, alternates + 1) for i in insts}
        picks = [Pick(i.id, *ranked[i.id][0]) for i in insts]
        return queue.post(store, step, picks, ranked, strategy="entropy")


class Server:
    """``apis serve`` in a subprocess on a free loopback port; ``url`` is its base URL."""

    def __init__(self, project: Path, tokens: dict[str, str], lease_s: float = 120.0, timeout_s: float = 120.0,
                 args: Sequence[str] = ()):
        tokens_file = project / "tokens.txt"
        tokens_file.write_text("".join(f"{name}={token}\n" for token, name in tokens.items()))
        cmd = [sys.executable, "-m", "apis.cli", "serve", str(project), "--port", "0", "--tokens-file",
               str(tokens_file), "--lease-seconds", str(lease_s), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.output: list[str] = []
        deadline = time.monotonic() + timeout_s
        self.url = ""
        while not self.url:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("apis serve exited before listening:\n" + "".join(self.output))
            self.output.append(line)
            found = re.search(r"(http://127\.0\.0\.1:\d+)/login\?token=", line)
            if found:
                self.url = found.group(1)
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("apis serve did not start in time:\n" + "".join(self.output))
        # Keep reading what the server prints, so a full pipe never blocks it.
        threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True).start()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or power cut."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
