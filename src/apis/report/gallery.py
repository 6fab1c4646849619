"""A gallery of chosen points (paper Fig. 4a): for a few pool instances, the GT mask, what M(s−1) predicted
(the mean p̄ of its prediction set, the maps selection scores), the entropy H(p̄) with the point the strategy
chose and its answer, and what M(s) predicts after fine-tuning on it.

Maps are read over a window a little larger than the box, with the run's own prediction set, so the
middle panels show exactly what selection saw inside the box (dashed). Points are drawn at pixel centres
of original-image pixels: green = "yes, on the object", red = "no".
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from apis.data.coco import load_coco  # noqa: E402
from apis.data.loader import category_index, image_tensor  # noqa: E402
from apis.data.records import CocoDataset, Instance  # noqa: E402
from apis.geometry import PixelWindow  # noqa: E402
from apis.layout import select_phase, train_phase  # noqa: E402
from apis.names import display_name, uses_ensemble  # noqa: E402
from apis.report.runs import Arm, ReportError, Source, model_path, phases, points  # noqa: E402
from apis.selection.select import prediction_sets  # noqa: E402
from apis.selection.uncertainty import binary_entropy, mean_probability  # noqa: E402
from apis.train import load_model  # noqa: E402

YES, NO = "#1a9641", "#d7191c"  # answer colours: on the object / off it
GT_COLOUR = "#00e5ff"
# Preferred instances: boxes of at least MIN_SIDE pixels a side (small ones show little) covering at most
# MAX_SHARE of the image (the built-in set has objects whose box is the whole image; their rows read poorly).
MIN_SIDE = 16
MAX_SHARE = 0.5


def train_dataset(source: Source) -> CocoDataset:
    """The pool's COCO file: ``data.train`` of the config, or the built-in set that ``apis run`` / ``apis
    compare`` generated under the folder when the config names none."""
    path = Path(source.cfg.data.train) if source.cfg.data.train else source.root / "data" / "train" / "annotations.json"
    if not path.is_file():
        raise ReportError(f"{path}: the training json is not there; the gallery needs the pool's images and masks: "
                          f"set data.train in {source.root / 'config.yaml'} to where it is now")
    return load_coco(path)


def gallery_arms(source: Source) -> list[Arm]:
    """The arms of the first seed that choose points (AFIS arms buy masks: they have no selection phases)."""
    arms = [a for a in source.arms if a.seed == source.seeds[0]]
    return [a for a in arms if any(name.startswith("select_") for name in phases(a.store))]


def gallery_step(arms: list[Arm], step: int) -> int | None:
    """``step`` if every arm has chosen points there and trained on them, else the last such step before it
    (None if there is none)."""
    done = [phases(a.store) for a in arms]
    if not done:
        return None
    common = [s for s in range(1, step + 1) if all(select_phase(s) in d and train_phase(s) in d for d in done)]
    return common[-1] if common else None


def pick_instances(arms: list[Arm], dataset: CocoDataset, step: int, n: int = 6, seed: int = 0) -> list[int]:
    """``n`` instances, the same for every arm: drawn (seeded) among those every arm asked about at ``step``,
    preferring boxes of at least :data:`MIN_SIDE` pixels a side that cover at most :data:`MAX_SHARE` of
    their image. Sorted by id."""
    common: set[int] | None = None
    for a in arms:
        ids = {c["instance_id"] for c in phases(a.store)[select_phase(step)]["choices"]}
        common = ids if common is None else common & ids
    instances = {a.id: a for a in dataset.instances()}
    images = dataset.image_by_id()
    ids = sorted(i for i in common or () if i in instances)

    def presentable(i: int) -> bool:
        w, h = _side(instances[i])
        im = images[instances[i].image_id]
        return min(w, h) >= MIN_SIDE and w * h <= MAX_SHARE * im.width * im.height

    preferred = [i for i in ids if presentable(i)]
    pool = preferred if len(preferred) >= n else ids
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def plot_gallery(source: Source, dataset: CocoDataset, arm: Arm, step: int, instance_ids: list[int], path: Path,
                 device: torch.device | str = "cpu") -> Path:
    """One row per instance of ``instance_ids``: GT, M(step−1)'s p̄ with the points known before, H(p̄) with
    the chosen point, M(step)'s p̄ with every point. Writes ``path``."""
    done = phases(arm.store)
    kind = source.cfg.loop.prediction_set
    before = _selection_model(arm, done, step - 1, kind, device)
    after = _selection_model(arm, done, step, kind, device)
    chosen = {c["instance_id"]: c for c in done[select_phase(step)]["choices"]}
    answered = points(arm.store)
    instances = {a.id: a for a in dataset.instances()}
    images = dataset.image_by_id()
    classes = category_index(dataset)
    names = dataset.category_names

    n = len(instance_ids)
    fig, axes = plt.subplots(max(n, 1), 4, figsize=(9.6, 2.45 * max(n, 1) + 0.5), dpi=100, squeeze=False)
    fig.suptitle(f"{display_name(arm.strategy)}, seed {arm.seed}: step {step} "
                 f"(points chosen with M{step - 1}, then M{step} fine-tuned)", fontsize=11)
    titles = ("image + GT mask", f"M{step - 1}: mean mask p̄", "entropy H(p̄) + chosen point",
              f"M{step}: after fine-tuning")
    for ax, t in zip(axes[0], titles, strict=True):
        ax.set_title(t, fontsize=9)
    for row, iid in zip(axes[:n], instance_ids, strict=True):
        inst = instances[iid]
        im = images[inst.image_id]
        win = _display_window(inst, im.width, im.height)
        # Every object of the image goes in: the model's label assignment, and so the prediction set, depends
        # on all boxes, as it did when selection ran.
        tensor = image_tensor(dataset, im)
        target = {"boxes": torch.tensor([a.box for a in im.pool], dtype=torch.float32).reshape(-1, 4).to(device),
                  "labels": torch.tensor([classes[a.category_id] for a in im.pool], dtype=torch.long),
                  "windows": [win if a.id == iid else _display_window(a, im.width, im.height) for a in im.pool]}
        g = [a.id for a in im.pool].index(iid)
        maps = [prediction_sets(m, [tensor.to(device)], [target], kind)[0][g] for m in (before, after)]
        rgb = tensor[:, win.y0:win.y1, win.x0:win.x1].permute(1, 2, 0).numpy()
        gt = inst.mask(im.height, im.width)[win.y0:win.y1, win.x0:win.x1] if inst.segmentation is not None else None
        pts = answered.get(iid, [])
        choice = chosen.get(iid)
        label = next((lab for x, y, lab, s in pts if s == step and choice and (x, y) == (choice["x"], choice["y"])),
                     None)
        _panel_gt(row[0], rgb, gt, win, inst)
        row[0].set_ylabel(f"#{iid} {names.get(inst.category_id, '')}", fontsize=8)
        _panel_probability(row[1], maps[0], win, inst, [p for p in pts if p[3] < step], step - 1)
        _panel_entropy(row[2], maps[0], win, inst, choice, label)
        _panel_probability(row[3], maps[1], win, inst, [p for p in pts if p[3] <= step], step,
                           new=(choice["x"], choice["y"]) if choice else None)
        for ax in row:
            _gt_outline(ax, gt, win)
    if not instance_ids:
        axes[0, 0].text(0.5, 0.5, "no instance was asked about at this step", transform=axes[0, 0].transAxes)
    fig.tight_layout()
    save_compact(fig, path)
    return path


def save_compact(fig, path: Path) -> None:
    """Save as a 256-colour PNG: image crops and heat maps make full-colour PNGs of about 1 MB, and
    the report embeds every gallery."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


# ------------------------------------------------------------------------------------------ helpers
def _side(inst: Instance) -> tuple[float, float]:
    x0, y0, x1, y1 = inst.box
    return x1 - x0, y1 - y0


def _display_window(inst: Instance, width: int, height: int) -> PixelWindow:
    """The box and a margin of a quarter of its longer side (at least 3 pixels), inside the image."""
    x0, y0, x1, y1 = inst.box
    m = max(3.0, 0.25 * max(x1 - x0, y1 - y0))
    return PixelWindow(max(0, math.floor(x0 - m)), max(0, math.floor(y0 - m)),
                       min(width, math.ceil(x1 + m)), min(height, math.ceil(y1 + m)))


def _selection_model(arm: Arm, done: dict, step: int, kind: str, device: torch.device | str):
    """M(step) of ``arm`` as selection used it: one model, or for prediction set M the ensemble of its members."""
    path = model_path(arm, done, step)
    if path is None:
        raise ReportError(f"{arm.store}: M{step} is not trained; finish the run or make the gallery of an earlier step")
    model = load_model(path, device)
    if not uses_ensemble(kind):
        return model
    from apis.models.ensemble import Ensemble

    members = [model]
    while (p := model_path(arm, done, step, len(members))) is not None:
        members.append(load_model(p, device))
    return Ensemble(members)


def _frame(ax, win: PixelWindow, inst: Instance) -> tuple[float, float, float, float]:
    """Image-pixel axes: pixel (i, j) covers [i, i+1) × [j, j+1); the box dashed."""
    x0, y0, x1, y1 = inst.box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=1.0, ec="#ffd000"))
    ax.set_xlim(win.x0, win.x1)
    ax.set_ylim(win.y1, win.y0)
    ax.set_xticks([])
    ax.set_yticks([])
    return (win.x0, win.x1, win.y1, win.y0)


def _panel_gt(ax, rgb: np.ndarray, gt: np.ndarray | None, win: PixelWindow, inst: Instance) -> None:
    extent = (win.x0, win.x1, win.y1, win.y0)
    ax.imshow(rgb, extent=extent, interpolation="nearest")
    if gt is None:
        ax.text(0.5, 0.05, "no GT mask", ha="center", transform=ax.transAxes, color="w", fontsize=8)
    else:
        # Outside the object dimmed, so the object stands out whatever its colours.
        shade = np.zeros((*gt.shape, 4))
        shade[~gt.astype(bool)] = (0.0, 0.0, 0.0, 0.55)
        ax.imshow(shade, extent=extent, interpolation="nearest")
    _frame(ax, win, inst)


def _gt_outline(ax, gt: np.ndarray | None, win: PixelWindow) -> None:
    """The GT mask's outline (cyan) at pixel edges' midpoints: the level 0.5 of the mask."""
    if gt is not None and 0 < gt.sum() < gt.size:
        ys, xs = np.mgrid[win.y0:win.y1, win.x0:win.x1] + 0.5
        ax.contour(xs, ys, gt.astype(float), levels=[0.5], colors=GT_COLOUR, linewidths=1.0)


def _points(ax, pts: list[tuple[int, int, int, int]], size: float = 28) -> None:
    for x, y, label, _ in pts:
        ax.scatter([x + 0.5], [y + 0.5], s=size, c=YES if label else NO, marker="o", edgecolors="w", linewidths=0.8,
                   zorder=3)


def _no_prediction(ax, win: PixelWindow, inst: Instance, model: str) -> None:
    ax.set_facecolor("0.85")
    ax.text(0.5, 0.5, f"{model} predicted\nnothing here (K = 0)", ha="center", va="center", transform=ax.transAxes,
            fontsize=8)
    _frame(ax, win, inst)


def _panel_probability(ax, maps: torch.Tensor, win: PixelWindow, inst: Instance, pts: list, step: int,
                       new: tuple[int, int] | None = None) -> None:
    if maps.shape[0] == 0:
        _no_prediction(ax, win, inst, f"M{step}")
        return
    p = mean_probability(maps).numpy()
    extent = _frame(ax, win, inst)
    ax.imshow(p, extent=extent, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    if 0.0 < p.min() < 0.5 < p.max():
        ys, xs = np.mgrid[win.y0:win.y1, win.x0:win.x1] + 0.5
        ax.contour(xs, ys, p, levels=[0.5], colors="w", linewidths=0.8)
    _points(ax, [q for q in pts if (q[0], q[1]) != new])
    _points(ax, [q for q in pts if (q[0], q[1]) == new], size=90)
    ax.text(0.02, 0.02, f"K = {maps.shape[0]}", transform=ax.transAxes, color="w", fontsize=7)


def _panel_entropy(ax, maps: torch.Tensor, win: PixelWindow, inst: Instance, choice: dict | None,
                   label: int | None) -> None:
    if maps.shape[0] == 0:
        _no_prediction(ax, win, inst, "the model")
    else:
        extent = _frame(ax, win, inst)
        ax.imshow(binary_entropy(mean_probability(maps)).numpy(), extent=extent, cmap="magma", vmin=0.0,
                  vmax=math.log(2), interpolation="nearest")
    if choice is None:
        ax.text(0.5, 0.05, "no point chosen", ha="center", transform=ax.transAxes, color="w", fontsize=8)
        return
    colour = "0.5" if label is None else YES if label else NO
    ax.scatter([choice["x"] + 0.5], [choice["y"] + 0.5], s=170, marker="*", c=colour, edgecolors="w",
               linewidths=1.0, zorder=3)
    answer = "not answered" if label is None else "yes" if label else "no"
    text = f"answer: {answer}"
    if choice.get("p_mean") is not None:
        p = choice["p_mean"]
        wrong = label is not None and (p > 0.5) != bool(label)
        text = f"p̄ = {p:.2f}, {text}" + (" (M wrong)" if wrong else "")
    ax.text(0.02, 0.02, text, transform=ax.transAxes, color="w", fontsize=7,
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.5, "lw": 0})

