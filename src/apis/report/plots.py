"""Plots of a comparison: mask AP against step and against annotation hours, mean ± spread over seeds."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from apis.names import display_name  # noqa: E402


def _series(rows: list[dict], x_key: str, metric: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    by: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["strategy"]][int(r["step"])].append((float(r[x_key]), float(r[metric])))
    out = {}
    for strategy, steps in by.items():
        keys = sorted(steps)
        x = np.array([np.mean([p[0] for p in steps[k]]) for k in keys])
        y = np.array([np.mean([p[1] for p in steps[k]]) for k in keys])
        s = np.array([np.std([p[1] for p in steps[k]]) for k in keys])
        out[strategy] = (x, y, s)
    return out


def plot_comparison(rows: list[dict], out_dir: Path, metric: str = "AP", point_s: float = 0.9) -> list[Path]:
    """Writes ``ap_vs_step.png`` and ``ap_vs_hours.png`` into ``out_dir``; returns their paths."""
    paths = []
    for x_key, name, xlabel in (("step", "ap_vs_step.png", "step (points per instance − 1)"),
                                ("annotation_hours", "ap_vs_hours.png", f"annotation hours ({point_s:g} s per point)")):
        fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
        for strategy, (x, y, s) in _series(rows, x_key, metric).items():
            label = display_name(strategy)
            ax.plot(x, y, marker="o", label=label)
            ax.fill_between(x, y - s, y + s, alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"mask {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(out_dir) / name
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_pool_iou(rows: list[dict], out_dir: Path, pool_size: int, mask_seconds: float = 79.2) -> Path | None:
    """``pool_iou_vs_hours.png``: pool mask IoU of the exported masks against annotation hours, beside
    what polygon masks cost for the same IoU if every bought mask is perfect and the rest count 0
    (IoU x needs x · pool_size masks), and the no-model yardsticks of the rows that have them (grey
    lines: box, ellipse, GrabCut; dotted, per strategy: GrabCut with that strategy's answered points).
    Returns None when no row has a pool IoU."""
    rows = [r for r in rows if r.get("pool_iou", "") != ""]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    top = 0.0
    for strategy, (x, y, s) in _series(rows, "annotation_hours", "pool_iou").items():
        line, = ax.plot(x, y, marker="o", label=f"{display_name(strategy)} (model)")
        ax.fill_between(x, y - s, y + s, alpha=0.15)
        top = max(top, float(y.max()))
        with_points = [r for r in rows if r["strategy"] == strategy and r.get("pool_iou_grabcut_points", "") != ""]
        if with_points:
            gx, gy, _ = _series(with_points, "annotation_hours", "pool_iou_grabcut_points")[strategy]
            ax.plot(gx, gy, ":", marker=".", color=line.get_color(),
                    label=f"GrabCut + {display_name(strategy)}'s points (no model)")
            top = max(top, float(gy.max()))
    for column, label, style in (("pool_iou_box", "box filled", (0, (1, 3))), ("pool_iou_ellipse", "ellipse", "-."),
                                 ("pool_iou_grabcut", "GrabCut from the box", (0, (5, 2, 1, 2)))):
        values = [float(r[column]) for r in rows if r.get(column, "") != ""]
        if values:
            ax.axhline(float(np.mean(values)), color="0.45", linestyle=style, linewidth=1, label=f"{label} (no model)")
            top = max(top, float(np.mean(values)))
    iou = np.linspace(0, max(top, 0.05), 50)
    ax.plot(iou * pool_size * mask_seconds / 3600, iou, "k--", label=f"polygon masks ({mask_seconds:g} s each)")
    ax.set_xscale("log")
    ax.set_xlabel("annotation hours (log scale)")
    ax.set_ylabel("pool mask IoU")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(out_dir) / "pool_iou_vs_hours.png"
    fig.savefig(path)
    plt.close(fig)
    return path
