"""Comparison plots are written as non-empty PNG images."""

from __future__ import annotations

from PIL import Image

from apis.report.plots import plot_comparison, plot_pool_iou


def _rows():
    rows = []
    for strategy in ("random", "entropy"):
        for seed in (0, 1):
            for step in range(3):
                rows.append({"strategy": strategy, "seed": str(seed), "step": str(step),
                             "annotation_hours": str(0.3 * (step + 1)), "AP": str(step + seed * 0.2),
                             "pool_iou": str(0.3 + 0.02 * step)})
    return rows


def test_plots_are_png_images(tmp_path):
    paths = plot_comparison(_rows(), tmp_path) + [plot_pool_iou(_rows(), tmp_path, pool_size=100)]
    assert [p.name for p in paths] == ["ap_vs_step.png", "ap_vs_hours.png", "pool_iou_vs_hours.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
            assert len(im.convert("L").getcolors(maxcolors=100000) or []) > 10, "the image has content"


def test_pool_iou_plot_needs_iou_rows(tmp_path):
    rows = [{**r, "pool_iou": ""} for r in _rows()]
    assert plot_pool_iou(rows, tmp_path, pool_size=100) is None
