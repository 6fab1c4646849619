"""``apis report``: one self-contained HTML page (every plot embedded as a PNG data URI, no scripts, no
external files) about a comparison or a run, with the PNGs also written beside it.

Sections: AP against step and annotation hours; the paper's Table S1 (AP, APs/m/l and their paired
differences to Random per step); diagnostics of the chosen points (share M(s−1) misclassified, distance to
the GT boundary, Fig. 4c); the model's accuracy on random vs acquired points while it trains (Fig. 4b);
and a gallery of chosen points per strategy (Fig. 4a).
"""

from __future__ import annotations

import base64
import datetime
import html
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apis.experiment import summary_table
from apis.names import display_name
from apis.report.figures import plot_point_accuracy, plot_vs_step
from apis.report.gallery import gallery_arms, gallery_step, pick_instances, plot_gallery, train_dataset
from apis.report.plots import plot_comparison, plot_pool_iou
from apis.report.runs import Source, load
from apis.train import pick_device

TABLE_METRICS = ("AP", "APs", "APm", "APl")
HTML_NAME = "report.html"


@dataclass
class Figure:
    """A PNG of the report folder, with the words shown around it."""

    path: Path
    title: str
    caption: str


@dataclass
class Report:
    html: Path
    figures: list[Figure] = field(default_factory=list)


def write_report(root: Path, out: Path | None = None, gallery_step_wanted: int = 1, gallery_size: int = 6,
                 log: Callable[[str], None] = print) -> Report:
    """Read the comparison or run in ``root`` (read-only) and write ``report.html`` and its PNGs into ``out``
    (default ``root/report``). The gallery shows step ``gallery_step_wanted`` (or the last finished one
    before it) for ``gallery_size`` instances, with the first seed's arms."""
    source = load(root)
    out = Path(out) if out is not None else source.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    cfg = source.cfg
    figures: list[Figure] = []
    ap_step, ap_hours = plot_comparison(source.rows, out, point_s=cfg.cost.point_s)
    seeds = f"mean ± sd over {len(source.seeds)} seed{'s' * (len(source.seeds) > 1)}"
    figures.append(Figure(ap_step, "Mask AP against step",
                          f"COCO mask AP on the validation split after each step (step s: s + 1 points per object), "
                          f"{seeds} (band)."))
    figures.append(Figure(ap_hours, "Mask AP against annotation hours",
                          f"The same against the hours people would spend answering: {cfg.cost.point_s:g} s per "
                          f"point, {source.pool_size} objects in the pool."))
    pool = plot_pool_iou(source.rows, out, source.pool_size, cfg.cost.mask_s)
    if pool is not None:
        figures.append(Figure(pool, "Pool mask IoU against annotation hours",
                              f"Mean IoU of the masks apis exports for the pool, beside what polygon masks "
                              f"({cfg.cost.mask_s:g} s each) would buy for the same IoU."))
    log(f"plots: {ap_step.name}, {ap_hours.name}" + (f", {pool.name}" if pool else ""))

    figures.append(Figure(
        plot_vs_step(source.rows, "misclassified", "chosen points M(s−1) got wrong (%)", out / "misclassified.png",
                     percent=True, missing="not measured (no step ≥ 1 with answers)"),
        "Chosen points the previous model misclassified",
        "Share of the points chosen at step s whose answer M(s−1) got wrong (mean p̄ of its prediction set on the "
        f"other side of 0.5), {seeds}. Paper, COCO P1: entropy 51%, random 23%."))
    figures.append(Figure(
        plot_vs_step(source.rows, "boundary_distance", "distance to the GT boundary (px)",
                     out / "boundary_distance.png", missing="not measured (needs GT masks: simulation only)"),
        "Distance of chosen points to the object boundary (Fig. 4c)",
        f"Mean Euclidean distance in pixels from each chosen point to the nearest GT boundary pixel, {seeds}. "
        "In the paper, entropy's points move toward the boundaries step after step."))
    figures.append(Figure(
        plot_point_accuracy(source, out / "point_accuracy.png"),
        "Accuracy on random vs acquired points while training (Fig. 4b)",
        "While each model trains, the share of its labelled points it gets right (mean mask probability of the "
        "object on the label's side of 0.5), for P0's random points and for the points chosen at later steps, "
        f"summed between rows of the training log (every {cfg.finetune.log_every} iterations when fine-tuning), "
        "mean over seeds. Dotted lines: where M0, M1, … began. Points a model finds hard to fit carry information "
        "it did not have."))
    log("plots: misclassified.png, boundary_distance.png, point_accuracy.png")

    figures.extend(_gallery(source, out, gallery_step_wanted, gallery_size, log))
    page = out / HTML_NAME
    page.write_text(render(source, figures))
    log(f"report: {page}")
    return Report(page, figures)


def _gallery(source: Source, out: Path, wanted: int, size: int, log: Callable[[str], None]) -> list[Figure]:
    arms = gallery_arms(source)
    step = gallery_step(arms, wanted)
    if step is None:
        log("gallery: no arm has chosen points at a finished step ≥ 1 yet, nothing to show")
        return []
    dataset = train_dataset(source)
    ids = pick_instances(arms, dataset, step, size)
    device = pick_device(source.cfg.device)
    figures = []
    for arm in arms:
        path = plot_gallery(source, dataset, arm, step, ids, out / f"gallery_{arm.strategy}.png", device)
        name = display_name(arm.strategy)
        caption = (f"{len(ids)} pool objects (the same for every strategy, drawn at random), seed {arm.seed}. Left "
                   f"to right: the image, outside the GT mask dimmed; the mean mask p̄ of M{step - 1}'s prediction set "
                   f"({source.cfg.loop.prediction_set}) with the points known before (white line: p̄ = 0.5); its "
                   f"entropy H(p̄) with the point {name} chose (star; green = yes, on the object; red = no); M{step}'s "
                   "p̄ after fine-tuning. Cyan: the GT outline; dashed yellow: the box.")
        figures.append(Figure(path, f"Gallery: {name}, step {step} (Fig. 4a)", caption))
        log(f"gallery: {path.name}")
    return figures


# ---------------------------------------------------------------------------------------------- HTML
def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _delta_cell(delta: float | None, se: float | None) -> str:
    if delta is None:
        return '<td class="na">—</td>'
    shown = round(delta, 2)  # colour what the reader sees: +0.00 is neither above nor below
    cls = "pos" if shown > 0 else "neg" if shown < 0 else ""
    text = f"{delta:+.2f}" + (f" ± {se:.2f}" if se is not None else "")
    return f'<td class="{cls}">{html.escape(text)}</td>'


def table_s1(rows: list[dict], baseline: str = "random") -> str:
    """The paper's Table S1: per step, per strategy, AP, APs, APm, APl (mean ± sd over seeds) and their
    paired differences to ``baseline`` (mean ± standard error over seeds)."""
    tables = {m: summary_table(rows, m, baseline) for m in TABLE_METRICS}
    n_seeds = len({r["seed"] for r in rows})
    hours = {int(r["step"]): float(r["annotation_hours"]) for r in rows}
    head = "".join(f"<th>{m}</th><th>Δ{m}</th>" for m in TABLE_METRICS)
    body = []
    steps = sorted({s for cells in tables["AP"].values() for s in cells})
    for s in steps:
        body.append(f'<tr class="step"><th colspan="{1 + 2 * len(TABLE_METRICS)}">P{s}: {s + 1} point'
                    f'{"s" * (s > 0)} per object, {hours.get(s, 0):.2f} h'
                    "</th></tr>")
        lines: dict[str, str] = {}  # strategy → its cells
        for strategy in tables["AP"]:
            if s not in tables["AP"][strategy]:
                continue
            cells = []
            for m in TABLE_METRICS:
                c = tables[m].get(strategy, {}).get(s)
                if c is None:
                    cells.append('<td class="na">—</td><td class="na">—</td>')
                    continue
                mean = _fmt(c.mean) + (f" ± {_fmt(c.spread)}" if n_seeds > 1 else "")
                cells.append(f"<td>{mean}</td>" + _delta_cell(c.delta if s > 0 else None, c.delta_se))
            lines[display_name(strategy)] = "".join(cells)
        if s == 0 and len(lines) > 1 and len(set(lines.values())) == 1:  # the paired design: one M0 for all
            lines = {"every strategy (the same M0)": next(iter(lines.values()))}
        body.extend(f"<tr><td>{html.escape(name)}</td>{cells}</tr>" for name, cells in lines.items())
    note = ("" if any(r["strategy"] == baseline for r in rows)
            else f'<p class="note">No {display_name(baseline)} arm: the Δ columns need one.</p>')
    return (f'<table class="s1"><thead><tr><th>strategy</th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            f"</table>{note}")


def diagnostics_table(rows: list[dict]) -> str:
    """Per strategy and step s ≥ 1: share of chosen points misclassified by M(s−1), their mean distance to the
    GT boundary, and the pool mask IoU after the step; means over seeds."""
    steps = sorted({int(r["step"]) for r in rows if int(r["step"]) >= 1})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))

    def mean(strategy: str, step: int, key: str) -> float | None:
        xs = [float(r[key]) for r in rows
              if r["strategy"] == strategy and int(r["step"]) == step and r.get(key, "") != ""]
        return statistics.fmean(xs) if xs else None

    head = "".join(f"<th>P{s}</th>" for s in steps)
    body = []
    for strategy in strategies:
        cells = []
        for s in steps:
            mis, dist, iou, gcp = (mean(strategy, s, k) for k in ("misclassified", "boundary_distance", "pool_iou",
                                                                   "pool_iou_grabcut_points"))
            parts = [f"{mis:.0%} wrong" if mis is not None else "", f"{dist:.1f} px" if dist is not None else "",
                     f"IoU {iou:.3f}" if iou is not None else "",
                     f"GrabCut + points {gcp:.3f}" if gcp is not None else ""]
            cells.append(f"<td>{html.escape(' · '.join(p for p in parts if p)) or '—'}</td>")
        body.append(f"<tr><td>{html.escape(display_name(strategy))}</td>{''.join(cells)}</tr>")
    free = [(label, mean(strategies[0], 0, f"pool_iou_{m}") if strategies else None)
            for m, label in (("box", "box filled"), ("ellipse", "ellipse"), ("grabcut", "GrabCut from the box"))]
    note = "; ".join(f"{label} {v:.3f}" for label, v in free if v is not None)
    note = f'<p class="meta">No-model yardsticks of the same pool (mask IoU): {html.escape(note)}.</p>' if note else ""
    return (f'<table><thead><tr><th>strategy</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            + note)


def _figure(f: Figure) -> str:
    data = base64.b64encode(f.path.read_bytes()).decode("ascii")
    name = html.escape(f.path.name)
    return (f'<figure id="{html.escape(f.path.stem)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(f.title)}" data-file="{name}"><figcaption><b>{html.escape(f.title)}.</b> '
            f'{html.escape(f.caption)} <span class="file">({name})</span></figcaption></figure>')


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .note { color: #8a5a00; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.6em; text-align: right; border-bottom: 1px solid #eee; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
tr.step th { text-align: left; background: #f4f4f4; font-weight: 600; }
td.pos { color: #106b21; } td.neg { color: #a3161a; } td.na { color: #aaa; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; max-width: 900px; } .file { color: #999; }
.row { display: flex; flex-wrap: wrap; gap: 1em; }
.row figure { flex: 0 1 calc(50% - 0.5em); min-width: 420px; margin: 0.5em 0; } .row figure img { width: 100%; }
"""


def render(source: Source, figures: list[Figure]) -> str:
    """The page: text, tables and every figure embedded (base64 PNG); nothing is fetched when it is opened."""
    cfg = source.cfg
    by_name = {f.path.stem: f for f in figures}

    def figs(*names: str) -> str:
        return '<div class="row">' + "".join(_figure(by_name[n]) for n in names if n in by_name) + "</div>"

    strategies = ", ".join(display_name(s) for s in source.strategies)
    steps = max(int(r["step"]) for r in source.rows)
    meta = (f"{'Comparison' if source.kind == 'comparison' else 'Run'} <code>{html.escape(str(source.root))}</code>: "
            f"{html.escape(strategies)}; seeds {', '.join(map(str, source.seeds))}; steps P0–P{steps}; "
            f"preset {html.escape(cfg.preset)}, backbone {html.escape(cfg.model.backbone.name)}, M0 "
            f"{cfg.initial.iterations} iterations, each fine-tuning {cfg.finetune.iterations}; prediction set "
            f"{html.escape(cfg.loop.prediction_set)}; {source.pool_size} objects in the pool. "
            f"Made {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.")
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in source.notes)
    galleries = "".join(_figure(f) for f in figures if f.path.stem.startswith("gallery_"))
    n_seeds = len(source.seeds)
    spread = "mean ± sd over seeds; Δ: mean paired difference to Random ± its standard error" if n_seeds > 1 else \
        "one seed: Δ is the difference to Random of the same seed; differences of this size may be noise"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>apis report: {html.escape(source.root.name)}</title><style>{STYLE}</style></head>
<body>
<h1>apis report</h1>
<p class="meta">{meta}</p>{notes}
<h2 id="ap">Mask AP</h2>
{figs("ap_vs_step", "ap_vs_hours", "pool_iou_vs_hours")}
<h2 id="table-s1">Table S1: AP by object size, against Random</h2>
<p>COCO mask AP on the validation split ({html.escape(spread)}). Green: above Random, red: below.</p>
{table_s1(source.rows)}
<h2 id="diagnostics">The chosen points</h2>
<p>Per step s: share of the chosen points that M(s−1) misclassified, their mean distance to the GT boundary,
and the pool mask IoU of the exported masks after the step (means over seeds).</p>
{diagnostics_table(source.rows)}
{figs("misclassified", "boundary_distance")}
<h2 id="training">Training on the chosen points</h2>
{"".join(_figure(f) for f in figures if f.path.stem == "point_accuracy")}
<h2 id="gallery">Gallery</h2>
{galleries or '<p class="note">No step ≥ 1 has finished yet: nothing to show.</p>'}
</body></html>
"""
