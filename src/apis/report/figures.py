"""Figures of a report beyond AP: diagnostics of the chosen points per step (paper Fig. 4c and the share
the previous model misclassified) and the model's accuracy on random vs acquired points while it trains
(Fig. 4b). Every function writes one PNG, also when there is nothing to draw: then the image says why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from apis.layout import train_phase  # noqa: E402
from apis.models.condinst import POINT_GROUPS  # noqa: E402
from apis.names import display_name  # noqa: E402
from apis.report.plots import _series  # noqa: E402
from apis.report.runs import Source, phases, training_log  # noqa: E402

GROUP_STYLE = {"random": ("P0: random points", "tab:blue", "--"),
               "acquired": ("steps ≥ 1: points the strategy chose", "tab:red", "-")}


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig, path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    fig.tight_layout(rect=rect)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_vs_step(rows: list[dict], metric: str, ylabel: str, path: Path, percent: bool = False,
                 missing: str = "not measured") -> Path:
    """``metric`` of the points chosen at each step s ≥ 1 (mean ± sd over seeds) per strategy."""
    rows = [r for r in rows if int(r["step"]) >= 1 and r.get(metric, "") != ""]
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    if not rows:
        _message(ax, f"{ylabel}: {missing}")
        return _save(fig, path)
    k = 100.0 if percent else 1.0
    for strategy, (x, y, s) in _series(rows, "step", metric).items():
        ax.plot(x, y * k, marker="o", label=display_name(strategy))
        ax.fill_between(x, (y - s) * k, (y + s) * k, alpha=0.15)
    ax.set_xticks(sorted({int(r["step"]) for r in rows}))
    ax.set_xlabel("step s (points chosen with M(s−1))")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def point_accuracy_curves(source: Source) -> tuple[dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], list[int]]:
    """Per strategy, per point group: (global iteration, accuracy averaged over seeds). Iterations run on
    across steps (M0's, then each fine-tuning's). Also returns the iterations where each step's training
    began. Groups without logged values are left out."""
    values: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    starts: list[int] = []
    for arm in source.arms:
        done = phases(arm.store)
        offset, arm_starts, step = 0, [], 0
        while train_phase(step) in done:
            log = training_log(arm, done, step)
            arm_starts.append(offset)
            for r in log:
                for g in POINT_GROUPS:
                    if r.get(f"point_acc_{g}", "") not in ("", None):
                        values[arm.strategy][g][offset + int(r["iteration"])].append(float(r[f"point_acc_{g}"]))
            offset += max((int(r["iteration"]) for r in log), default=0)
            step += 1
        starts = max(starts, arm_starts, key=len)
    curves = {s: {g: (np.array(sorted(v)), np.array([np.mean(v[i]) for i in sorted(v)])) for g, v in groups.items()}
              for s, groups in values.items()}
    return curves, starts


def plot_point_accuracy(source: Source, path: Path) -> Path:
    """Paper Fig. 4b: while each model trains, the share of its labelled points it gets right (mean mask
    probability on the label's side of 0.5), P0's random points against the points chosen at later steps,
    one panel per strategy. Logs written before apis logged it make the figure say "not logged"; arms
    whose logs hold no point accuracy (trained on masks, say) are named under the panels."""
    curves, starts = point_accuracy_curves(source)
    strategies = [s for s in source.strategies if s in curves]
    missing = [display_name(s) for s in source.strategies if s not in curves]
    if not curves:
        fig, ax = plt.subplots(figsize=(6.5, 3), dpi=120)
        _message(ax, "point accuracy per point group: not logged\n(the models were trained by an apis that did not "
                     "log it:\nlog.csv has no point_acc_random / point_acc_acquired columns)")
        return _save(fig, path)
    cols = min(3, len(strategies))
    rows = math.ceil(len(strategies) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), dpi=110, sharey=True, squeeze=False)
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        ax.set_title(display_name(strategy))
        groups = curves[strategy]
        for g in POINT_GROUPS:
            if g in groups:
                label, colour, style = GROUP_STYLE[g]
                ax.plot(*groups[g], style, color=colour, label=label)
        for s, x in enumerate(starts):
            ax.axvline(x, color="0.6", lw=0.8, ls=":")
            ax.text(x, 1.0, f" M{s}", va="top", fontsize=8, color="0.4")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training iteration (all steps)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(strategies):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy on labelled points")
    axes.flat[0].legend(loc="lower right", fontsize=8)
    if missing:
        fig.text(0.01, 0.005, f"no point accuracy in the logs of: {', '.join(missing)}", fontsize=8, color="0.3")
    return _save(fig, path, rect=(0, 0.05, 1, 1) if missing else (0, 0, 1, 1))
