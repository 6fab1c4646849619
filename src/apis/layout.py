"""Where things are in a run folder: its store, the names of its phases, and each model's checkpoint.

The one answer to "where is M(s), ensemble member j": the loop and AFIS write there, and export, the
reports and the review read from there. A run folder holds::

    apis.sqlite                      the store: points, queries, and one row per finished phase
    config.yaml                      the run's configuration
    models/step{s}/model_final.pt    M(s), trained in phase ``train_{s}``
    models/step{s}/member{j}/…       ensemble member j of step s (prediction sets M, S+M): ``train_{s}_m{j}``
    exports/step{s}.json             M(s)'s mask export as the review page shows it (``apis serve --review-step``)

A ``train_*`` phase records its model's path relative to the run folder (so a moved or copied run, or a
compare arm forked from a shared P0, still finds it); runs from before that hold absolute paths, which
the join below keeps as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from apis.store import DB_NAME

STORE_FILE = DB_NAME
"""The store's file name inside a run folder."""

PhaseLookup = Callable[[str], dict | None]
"""``store.phase`` or ``phases_dict.get``: a phase's recorded payload by name, None if not finished."""


class ModelNotFound(FileNotFoundError):
    """A model a command needs was never trained (or its file is gone); the message names the fix."""


PAIRWISE_PHASE = "pairwise_check"
"""Phase name of the box-only start's verdict on BoxInst's pairwise term (:mod:`apis.box_start`), before M0."""


def train_phase(step: int, member: int = 0) -> str:
    """Phase name of the training of ensemble member ``member`` at ``step`` (member 0 is M(step))."""
    return f"train_{step}" if member == 0 else f"train_{step}_m{member}"


def eval_phase(step: int) -> str:
    return f"eval_{step}"


def select_phase(step: int) -> str:
    return f"select_{step}"


def answer_phase(step: int) -> str:
    return f"answer_{step}"


def review_phase(step: int) -> str:
    """Phase name of the simulated review of M(step)'s export (``loop.review``)."""
    return f"review_{step}"


def model_dir(root: Path, step: int, member: int = 0) -> Path:
    """The folder M(step) (or member ``member``) trains into: its checkpoints, log.csv and model_final.pt."""
    out = Path(root) / "models" / f"step{step}"
    return out / f"member{member}" if member else out


def export_path(root: Path, step: int) -> Path:
    """Where the mask export of M(step) that people review is kept (a COCO file, :mod:`apis.export`)."""
    return Path(root) / "exports" / f"step{step}.json"


def recorded_model(root: Path, phase: PhaseLookup, step: int, member: int = 0) -> Path | None:
    """The model path the ``train`` phase of (step, member) recorded, None if that phase has not finished."""
    done = phase(train_phase(step, member))
    if done is None or not done.get("model"):
        return None
    return Path(root) / done["model"]


def trained_steps(phase_names: Iterable[str]) -> list[int]:
    """The steps whose M(step) finished training, from a store's phase names."""
    return sorted(int(n.split("_", 1)[1]) for n in phase_names
                  if n.startswith("train_") and n.split("_", 1)[1].isdigit())


def find_model(root: Path, phase: PhaseLookup, phase_names: Iterable[str], step: int, member: int = 0) -> Path:
    """The checkpoint of M(step) (or of member ``member``): the store's record, else the default place
    under :func:`model_dir` (a run copied without its store rows). :class:`ModelNotFound` names the
    trained steps and the command that trains the missing one."""
    root = Path(root)
    candidates = [p for p in [recorded_model(root, phase, step, member)] if p is not None]
    candidates.append(model_dir(root, step, member) / "model_final.pt")
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    what = f"model for step {step}" + (f" (ensemble member {member})" if member else "")
    raise ModelNotFound(f"{root}: no {what} (looked at {looked}); trained steps: "
                        f"{trained_steps(phase_names) or 'none'}. Run `apis run {root}` to train it, "
                        "or pick a trained step")
