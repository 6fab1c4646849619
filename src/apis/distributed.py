"""Several processes, one run: ``torchrun`` launches, DDP trains, selection is sharded, rank 0 writes.

    torchrun --nproc-per-node 4 -m apis run myrun --preset coco
    torchrun --nproc-per-node 4 -m apis train out/ --preset coco --supervision masks

``torchrun`` starts one process per GPU (or per CPU share) and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` joins them into a process group
(NCCL on GPUs, each process on GPU ``LOCAL_RANK``; gloo on the CPU). Then, in a run:

* training (:func:`apis.train.train`): every rank trains a DistributedDataParallel copy on its slice of
  each global batch; rank 0 writes checkpoints, the log and the model;
* selection (:func:`select_sharded`): rank ``r`` of ``W`` scores batches r, r + W, r + 2W, … of the
  batches one process would form; the choices are gathered and put back in pool order, so they equal one
  process's choice by choice (each image meets the same batch, hence the same padding, and each instance
  draws from its own generator);
* everything that reads or writes the store (P0, answers, questions for people, phase marks) and the
  evaluation run on rank 0 alone; what the other ranks need from the store (completed phases, the
  point set) is read by rank 0 and broadcast (:class:`RankZeroStore`). Only rank 0 opens the store.

A stop on rank 0 (questions waiting for people, a run resumed with another strategy, an error) is
passed on: the other ranks raise :class:`Stopped` with the exit code rank 0 will use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from itertools import chain
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from apis.data.records import CocoDataset
from apis.layout import STORE_FILE
from apis.loop import ActiveRun, StepResult, WaitingForPeople
from apis.selection.select import Choice, select_points
from apis.store import Store

# Ranks wait for rank 0 while it evaluates, exports pool masks or answers alone: hours on COCO. A crashed
# rank does not leave the others waiting this long: torchrun stops every process when one fails.
WAIT = timedelta(hours=12)

_objects: dist.ProcessGroup | None = None  # the gloo group that carries Python objects (None: the default)


class Stopped(Exception):
    """Rank 0 stopped the run; this rank stops too and exits with ``code`` (3: waiting for people,
    2: a refused setting, 1: an error; rank 0 prints the reason)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def launched() -> bool:
    """Whether this process is one of several that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "auto") -> bool:
    """Join the process group of a ``torchrun`` launch; False (and nothing done) for a single process.

    ``device``: the run config's device. ``auto`` or ``cuda`` use NCCL with this process on GPU
    ``LOCAL_RANK`` (``torch.device("cuda")`` then means that GPU); ``cpu`` (or no GPU) uses gloo."""
    global _objects
    if not launched():
        return False
    if dist.is_initialized():
        return True
    if device.startswith("cuda:"):
        raise ValueError(f"device {device!r}: under torchrun each process uses GPU LOCAL_RANK; set device: cuda")
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ValueError("device 'cuda': no GPU is visible to this process")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=WAIT)
    # NCCL moves tensors between GPUs; the objects (point sets, choices, phase records) go over gloo.
    _objects = dist.new_group(backend="gloo", timeout=WAIT) if cuda else None
    return True


def shutdown() -> None:
    global _objects
    if dist.is_initialized():
        dist.destroy_process_group()
    _objects = None


def rank_world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) without a process group."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main() -> bool:
    return rank_world()[0] == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier(group=_objects)


def broadcast(obj: Any = None) -> Any:
    """Rank 0's ``obj`` on every rank (the others' argument is ignored)."""
    if not dist.is_initialized():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0, group=_objects)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_objects)
    return out


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes the synthetic dataset or config.yaml), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


# --------------------------------------------------------------------------------------- selection
def merge_shards(shards: Sequence[Sequence[Choice]], dataset: CocoDataset) -> list[Choice]:
    """The choices of all shards in one process's order: by the image's place in ``dataset``, then (each
    image being in one shard) in the shard's own order, which is the image's pool order."""
    position = {im.id: i for i, im in enumerate(dataset.images)}
    return sorted(chain.from_iterable(shards), key=lambda c: position[c.image_id])


def select_sharded(model, dataset: CocoDataset, *args, **kwargs) -> list[Choice]:
    """:func:`apis.selection.select.select_points` over this rank's shard of the pool, then every rank's
    choices gathered and merged: the same list on every rank, equal to a single process's."""
    rank, world = rank_world()
    if world == 1:
        return select_points(model, dataset, *args, **kwargs)
    mine = select_points(model, dataset, *args, shard=(rank, world), **kwargs)
    return merge_shards(all_gather(mine), dataset)


# ------------------------------------------------------------------------------------- active run
class RankZeroStore:
    """The run's store as every rank sees it: rank 0 holds the open :class:`Store`; reads run there and
    their result is broadcast; writes run on rank 0 only. Every rank must make the same calls in the same
    order, which holds when they run the same code on the values these reads return."""

    def __init__(self, local: Store | None):
        self.local = local  # the open store on rank 0, None elsewhere

    def __enter__(self) -> RankZeroStore:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.local is not None:
            self.local.close()

    def _read(self, name: str, *args, **kwargs) -> Any:
        return broadcast(getattr(self.local, name)(*args, **kwargs) if self.local is not None else None)

    def _write(self, name: str, *args, **kwargs) -> Any:
        return getattr(self.local, name)(*args, **kwargs) if self.local is not None else None

    def phase(self, name: str) -> dict | None:
        return self._read("phase", name)

    def points(self, max_step: int | None = None) -> dict:
        return self._read("points", max_step=max_step)

    def random_answers(self, max_step: int | None = None) -> dict:
        return self._read("random_answers", max_step=max_step)

    def instances(self, split: str | None = None) -> list:
        return self._read("instances", split)

    def point_count(self, max_step: int | None = None) -> int:
        return self._read("point_count", max_step=max_step)

    def reviews(self, max_step: int | None = None, masks: bool = True) -> dict:
        return self._read("reviews", max_step=max_step, masks=masks)

    def review_log(self, step: int | None = None, masks: bool = True) -> list:
        return self._read("review_log", step, masks=masks)

    def mark_phase(self, name: str, payload: dict) -> None:
        self._write("mark_phase", name, payload)

    def add_points(self, answers, **kwargs) -> int | None:
        return self._write("add_points", answers, **kwargs)

    def add_instances(self, dataset: CocoDataset, split: str) -> int | None:
        return self._write("add_instances", dataset, split)


def exit_code(error: BaseException) -> int:
    if isinstance(error, WaitingForPeople):
        return 3
    return 2 if isinstance(error, ValueError) else 1


class DistributedRun(ActiveRun):
    """:class:`~apis.loop.ActiveRun` on every rank of a ``torchrun`` launch (call :func:`setup` first).
    The phases run in the loop's order on every rank: training on all of them (DDP), selection sharded,
    and P0, the answers and the evaluation on rank 0 while the others wait for its result. The loop's parts
    follow the phases: the answerer, the step measures and the simulated reviewer are called on rank 0 only
    (inside :meth:`initial_points`, :meth:`answer`, :meth:`evaluate_step`, :meth:`review`), and the mask policy
    on every rank, reading the store through :class:`RankZeroStore` and settling a judged M0 with
    :meth:`settle_m0`."""

    choose_points = staticmethod(select_sharded)

    def __post_init__(self) -> None:
        with main_first():  # rank 0 writes config.yaml; the others find it
            super().__post_init__()

    def open_store(self) -> RankZeroStore:
        return RankZeroStore(Store.open(Path(self.root) / STORE_FILE) if is_main() else None)

    def check_identity(self, store: RankZeroStore, steps: int) -> None:
        self._on_main(super().check_identity, store, steps)

    def initial_points(self, store: RankZeroStore) -> None:
        self._on_main(super().initial_points, store)

    def answer(self, store: RankZeroStore, step: int, choices: list[Choice]) -> None:
        self._on_main(super().answer, store, step, choices)

    def evaluate_step(self, store: RankZeroStore, step: int, model_path: Path) -> StepResult:
        return self._on_main(super().evaluate_step, store, step, model_path)

    def review(self, store: RankZeroStore, step: int, model_path: Path) -> None:
        self._on_main(super().review, store, step, model_path)

    def settle_m0(self, out: Path, kept: bool) -> None:
        with main_first():  # rank 0 moves the folders; the others find them moved
            super().settle_m0(out, kept)

    def _on_main(self, phase, store: RankZeroStore, *args) -> Any:
        """Run ``phase`` with the real store on rank 0 and give its result (or its stop) to every rank."""
        if is_main():
            try:
                result = phase(store.local, *args)
            except BaseException as e:
                broadcast(("stop", exit_code(e), str(e)))
                raise
            return broadcast(("ok", result))[1]
        outcome = broadcast()
        if outcome[0] == "stop":
            raise Stopped(outcome[1], outcome[2])
        return outcome[1]
