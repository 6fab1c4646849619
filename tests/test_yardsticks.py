"""The no-model yardsticks and the GrabCut pseudo masks: hand-checked masks, IoUs and caching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apis import pseudo_masks
from apis.data.coco import load_coco
from apis.geometry import PixelWindow, omega
from apis.pseudo_masks import cached_grabcut_pseudo_masks, load_pseudo_masks, save_pseudo_masks
from apis.yardsticks import (
    Estimate,
    box_mask,
    ellipse_mask,
    grabcut_mask,
    pool_ious,
    pool_sample,
    window_iou,
)


def _disk_image(size: int = 96, cx: float = 48.0, cy: float = 48.0, r: float = 18.0) -> tuple[np.ndarray, np.ndarray]:
    """A red disk on a blue-grey background with a little noise; returns (RGB uint8, GT mask)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    gt = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img = np.where(gt[..., None], np.array([200, 40, 30]), np.array([60, 90, 140])).astype(np.float64)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), gt


def test_box_and_ellipse_masks():
    win = PixelWindow(2, 3, 12, 9)
    assert box_mask(win).shape == (6, 10) and box_mask(win).all()
    # Box [2, 12) × [3, 9): centre (7, 6), radii 5 and 3. Pixel (7, 6) has centre (7.5, 6.5): inside.
    m = ellipse_mask((2.0, 3.0, 12.0, 9.0), win)
    assert m.shape == (6, 10)
    assert m[6 - 3, 7 - 2] and not m[0, 0] and not m[-1, -1]
    # Symmetric about the box centre (pixel grid aligned with the box).
    assert (m == m[::-1, ::-1]).all()
    # Its area is close to π·a·b.
    assert abs(m.sum() - math.pi * 5 * 3) <= 6


def test_ellipse_of_a_box_thinner_than_a_pixel_keeps_one_pixel():
    box = (4.2, 4.0, 4.4, 9.0)
    win = omega(box, 20, 20)
    assert ellipse_mask(box, win).sum() == 1


def test_window_iou_counts_the_gt_outside_the_window():
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = 1  # 16 pixels
    win = PixelWindow(2, 2, 4, 6)  # 2 columns × 4 rows, all on the object: 8 pixels
    assert window_iou(np.ones((4, 2), dtype=bool), win, gt) == pytest.approx(8 / 16)
    assert window_iou(np.zeros((4, 2), dtype=bool), win, np.zeros((10, 10))) == 1.0


def test_grabcut_finds_a_disk_that_the_box_and_ellipse_only_approximate():
    img, gt = _disk_image()
    box = (26.0, 26.0, 70.0, 70.0)  # the disk's box with a 4 px margin
    win = omega(box, 96, 96)
    iou_box = window_iou(box_mask(win), win, gt)
    iou_gc = window_iou(grabcut_mask(img, box), win, gt)
    assert iou_gc > 0.9 > iou_box


def test_grabcut_keeps_every_answered_point_on_its_side():
    img, gt = _disk_image()
    box = (26.0, 26.0, 70.0, 70.0)
    # A "yes" in the background corner of the box and a "no" in the middle of the disk: wrong answers
    # on purpose, so only forcing can put them there.
    points = [(27, 27, 1), (48, 48, 0)]
    m = grabcut_mask(img, box, points)
    assert m[27 - 26, 27 - 26] and not m[48 - 26, 48 - 26]


def test_grabcut_on_a_shrunken_crop_still_finds_the_disk_and_keeps_points():
    img, gt = _disk_image(size=480, cx=240, cy=240, r=90)
    box = (140.0, 140.0, 340.0, 340.0)
    win = omega(box, 480, 480)
    points = [(141, 141, 1), (240, 240, 0)]  # wrong on purpose: only forcing puts them there
    m = grabcut_mask(img, box, points, max_side=96)  # a 600-pixel crop cut at 96
    assert m.shape == (win.height, win.width)
    assert window_iou(m, win, gt) > 0.9
    assert m[141 - win.y0, 141 - win.x0] and not m[240 - win.y0, 240 - win.x0]


def test_grabcut_without_background_returns_the_box_with_points_forced():
    img, _ = _disk_image(size=32, cx=16, cy=16, r=10)
    box = (0.0, 0.0, 32.0, 32.0)  # the whole image: no pixel is known background
    m = grabcut_mask(img, box, [(3, 4, 0)])
    assert m.shape == (32, 32) and m.sum() == 32 * 32 - 1 and not m[4, 3]


def test_grabcut_is_reproducible_whatever_ran_before():
    img, _ = _disk_image()
    a = grabcut_mask(img, (26.0, 26.0, 70.0, 70.0))
    grabcut_mask(img, (10.0, 12.0, 50.0, 44.0))  # moves OpenCV's RNG on
    assert (grabcut_mask(img, (26.0, 26.0, 70.0, 70.0)) == a).all()


def test_pool_sample_is_fixed_and_capped():
    ids = list(range(100, 600))
    a, b = pool_sample(ids, 300), pool_sample(list(reversed(ids)), 300)
    assert a == b and len(a.instance_ids) == 300 and a.sampled and set(a.instance_ids) <= set(ids)
    whole = pool_sample(ids, 1000)
    assert whole.instance_ids == tuple(ids) and not whole.sampled


def test_estimate_mean_and_standard_error():
    e = Estimate.of([0.2, 0.4, 0.6])
    assert e.mean == pytest.approx(0.4) and e.n == 3
    assert e.se == pytest.approx(0.2 / math.sqrt(3))  # sample sd 0.2
    assert Estimate.of([0.5]).se == 0.0
    with pytest.raises(ValueError):
        Estimate.of([])


def test_pool_ious_on_the_built_in_set(small_synthetic, tmp_path):
    train = load_coco(small_synthetic["train"])
    ids = [a.id for a in train.instances()]
    sample = pool_sample(ids, 1000)
    gc = cached_grabcut_pseudo_masks(tmp_path, train)
    res = pool_ious(train, sample, gc, None)
    assert set(res) == {"box", "ellipse", "grabcut"}
    assert all(r.n == len(ids) for r in res.values())
    # The box's IoU by hand: Ω's pixels that are on the object over the object and Ω together.
    by_hand = []
    for im in train.images:
        for a in im.pool:
            gt = a.mask(im.height, im.width).astype(bool)
            w = omega(a.box, im.width, im.height)
            inside = gt[w.y0:w.y1, w.x0:w.x1].sum()
            by_hand.append(inside / (gt.sum() + w.width * w.height - inside))
    assert res["box"].mean == pytest.approx(float(np.mean(by_hand)))


def test_pseudo_mask_cache_computes_each_object_once(small_synthetic, tmp_path, monkeypatch):
    train = load_coco(small_synthetic["train"])
    ids = [a.id for a in train.instances()]
    calls: list[list[int]] = []
    real = pseudo_masks.grabcut_pseudo_masks

    def counting(dataset, points=None, instance_ids=None, progress=None):
        calls.append(sorted(instance_ids))
        return real(dataset, points, instance_ids, progress)

    monkeypatch.setattr(pseudo_masks, "grabcut_pseudo_masks", counting)
    first = cached_grabcut_pseudo_masks(tmp_path, train, None, ids[:2])
    both = cached_grabcut_pseudo_masks(tmp_path, train, None, ids)
    again = cached_grabcut_pseudo_masks(tmp_path, train, None, ids)
    assert calls == [sorted(ids[:2]), sorted(ids[2:])], "only the missing objects are computed, once"
    assert all((first[i].mask == both[i].mask).all() for i in ids[:2])
    assert all((again[i].mask == both[i].mask).all() and again[i].window == both[i].window for i in ids)
    # Other points are another cache entry.
    a = train.instances()[0]
    win = omega(a.box, 64, 64)
    cached_grabcut_pseudo_masks(tmp_path, train, {a.id: [(win.x0, win.y0, 1)]}, [a.id])
    assert len(calls) == 3


def test_pseudo_masks_round_trip(tmp_path):
    from apis.data.loader import PseudoMask

    rng = np.random.default_rng(1)
    masks = {7: PseudoMask(PixelWindow(1, 2, 6, 5), rng.random((3, 5)) > 0.5),
             3: PseudoMask(PixelWindow(0, 0, 1, 1), np.ones((1, 1), bool))}
    save_pseudo_masks(masks, tmp_path / "m.npz")
    back = load_pseudo_masks(tmp_path / "m.npz")
    assert set(back) == {3, 7}
    assert all(back[i].window == masks[i].window and (back[i].mask == masks[i].mask).all() for i in masks)


def _one_step_config(pseudo_masks: str):
    """The tiny preset cut to a two-iteration model and one step, learning from ``pseudo_masks`` and
    exporting refined with GrabCut; one torch thread."""
    import dataclasses

    import torch
    from conftest import tiny_model_config

    from apis.config import preset
    from apis.train import Schedule

    torch.set_num_threads(1)
    cfg = preset("tiny")
    sched = Schedule(iterations=2, batch_size=2, lr=0.01, warmup_iters=1, checkpoint_every=10, log_every=1)
    return dataclasses.replace(cfg, model=dataclasses.replace(tiny_model_config(), pseudo_mask_weight=1.0),
                               initial=sched, finetune=sched, device="cpu", eval_batch_size=2,
                               loop=dataclasses.replace(cfg.loop, steps=1, refine_masks="grabcut",
                                                        pseudo_masks=pseudo_masks))


@pytest.mark.slow
def test_loop_trains_on_grabcut_masks_of_each_steps_points(tmp_path, small_train, small_val):
    """With ``pseudo_mask_weight`` > 0 every training phase learns from GrabCut masks seeded with the points
    answered so far (one cache entry per step), and the pool IoU is exported refined with GrabCut."""
    from apis.loop import ActiveRun, mask_oracle

    cfg = _one_step_config("grabcut_points")
    oracle, gt = mask_oracle(small_train)
    results = ActiveRun(tmp_path / "run", cfg, small_train, small_val, "entropy", 0, oracle, gt,
                        report=lambda m: None).run()
    logs = [(tmp_path / "run" / "models" / f"step{s}" / "log.csv").read_text() for s in (0, 1)]
    assert all("loss_pseudo_mask" in log.splitlines()[0] for log in logs)
    # The box-only GrabCut (the yardstick) and one set per step's points.
    assert len(list((tmp_path / "run" / "cache").glob("grabcut-*.npz"))) == 3
    assert all(0.0 < r.pool_iou <= 1.0 for r in results)
    assert results[1].yardsticks["grabcut_points"]["n"] == len(small_train.instances())


def test_grabcut_on_worker_processes_gives_the_same_masks_in_order():
    from apis.yardsticks import GrabCutJob, grabcut_pool, run_grabcut

    img, _ = _disk_image()
    grabcut_mask(img, (26.0, 26.0, 70.0, 70.0))  # OpenCV used here first: the fork must still work
    jobs = [GrabCutJob.of(img, (20.0 + i % 9, 22.0 + i % 7, 70.0 - i % 5, 72.0 - i % 4), [(48, 48, 1)])
            for i in range(70)]
    here = run_grabcut(jobs)
    with grabcut_pool(2, len(jobs)) as pool:
        assert pool is not None
        there = run_grabcut(jobs, pool)
    assert len(there) == 70 and all((a == b).all() for a, b in zip(here, there, strict=True))
    # A job cut out of its image gives what the whole image gives.
    box = (20.0, 22.0, 70.0, 72.0)
    assert (GrabCutJob.of(img, box).run() == grabcut_mask(img, box)).all()
    with grabcut_pool(2, 10) as pool:
        assert pool is None, "too few objects to be worth the processes"


def test_cache_key_follows_images_boxes_and_points(small_synthetic):
    import dataclasses

    from apis.pseudo_masks import cache_key

    train = load_coco(small_synthetic["train"])
    key = cache_key(train, None)
    assert cache_key(load_coco(small_synthetic["train"]), None) == key
    first = train.images[0]
    renamed = dataclasses.replace(train, images=[dataclasses.replace(first, file_name="other.png"), *train.images[1:]])
    assert cache_key(renamed, None) != key
    a = train.instances()[0]
    assert cache_key(train, {a.id: [(1, 2, 1)]}) != key


@pytest.mark.slow
def test_loop_trains_later_steps_on_the_previous_models_refined_export(tmp_path, small_train, small_val):
    """``loop.pseudo_masks: refined``: M0 learns from ``auto``'s checked choice (its table kept), M1 from what M0
    exports with the answers of steps ≤ 1 (GrabCut-refined, answers forced), kept in the run's
    ``pseudo_masks/P1.npz``."""
    from apis.export import export_masks, export_pseudo_masks
    from apis.loop import ActiveRun, mask_oracle
    from apis.store import Store
    from apis.train import load_model

    cfg = _one_step_config("refined")
    oracle, gt = mask_oracle(small_train)
    run = tmp_path / "run"
    ActiveRun(run, cfg, small_train, small_val, "entropy", 0, oracle, gt, report=lambda m: None).run()
    assert not (run / "pseudo_masks" / "P0.npz").exists()
    tables = run / "pseudo_masks"
    assert (tables / "sources-P0.json").is_file() and not (tables / "sources-P1.json").exists()
    saved = load_pseudo_masks(run / "pseudo_masks" / "P1.npz")
    assert set(saved) == {a.id for a in small_train.instances()}
    with Store.open(run / "apis.sqlite") as store:
        m0 = load_model(run / "models" / "step0" / "model_final.pt", "cpu")
        again = export_pseudo_masks(export_masks(m0, small_train, store, max_step=1, refine="grabcut"), small_train)
        answers = store.points(max_step=1)
    for i, pm in saved.items():
        assert pm.window == again[i].window and (pm.mask == again[i].mask).all()
        for p in answers.get(i, ()):
            assert pm.mask[p.y - pm.window.y0, p.x - pm.window.x0] == bool(p.label)
    assert "loss_pseudo_mask" in (run / "models" / "step1" / "log.csv").read_text().splitlines()[0]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random", "entropy"])
def test_loop_with_auto_sources_prints_and_keeps_the_source_table(strategy, tmp_path, small_train, small_val):
    """``loop.pseudo_masks: auto`` and ``refine_masks: auto`` (the tiny defaults): each training phase judges the
    no-model sources on the answers at random points so far (P0's, and a Random arm's later ones; Entropy's
    points sit where the model is unsure, at the edges, and would judge every source low), prints one line per
    source with the chosen one marked, and keeps the table in the run; no exported mask of the pool is empty."""
    import dataclasses
    import json

    from apis.loop import ActiveRun, mask_oracle
    from apis.mask_checks import source_weight

    cfg = _one_step_config("auto")
    cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, refine_masks="auto"))
    lines: list[str] = []
    oracle, gt = mask_oracle(small_train)
    results = ActiveRun(tmp_path / "run", cfg, small_train, small_val, strategy, 0, oracle, gt,
                        report=lines.append).run()
    n = len(small_train.instances())
    for step in (0, 1):
        table = json.loads((tmp_path / "run" / "pseudo_masks" / f"sources-P{step}.json").read_text())
        assert {s["source"] for s in table["sources"]} == {"grabcut", "ellipse", "box"}
        assert table["chosen"] == table["ranked"][0]
        assert sum(table["used"].values()) == len(small_train.instances())
        # Every source is judged on the same answers: one P0 point per object, one more per step of Random's.
        assert {s["answers"] for s in table["sources"]} == {n * (step + 1 if strategy == "random" else 1)}
        # Each source's masks are learnt with the weight its agreement earns, kept beside it.
        assert all(s["weight"] == pytest.approx(source_weight(s["accuracy"])) for s in table["sources"])
    chosen = [ln for ln in lines if "← chosen" in ln]
    assert any(ln.strip().startswith("source") for ln in lines)
    if strategy == "random":  # step 1's random answers judge the sources anew: the table again
        assert len(chosen) == 2
    else:  # the same P0 answers judge the same masks: one line with the per-object counts instead
        assert len(chosen) == 1
        assert any(ln.startswith("step 1: mask sources judged as at step 0") for ln in lines)
    assert all(0.0 < r.pool_iou <= 1.0 for r in results)


@pytest.mark.parametrize("source", ["ellipse", "box"])
def test_named_shape_sources_draw_each_box_without_a_cut(source, small_synthetic, monkeypatch, tmp_path):
    """``loop.pseudo_masks: ellipse`` / ``box``: every pool object learns from the shape its box draws, at full
    weight, and no GrabCut is cut for it."""
    from apis.pseudo_masks import training_pseudo_masks

    def no_cut(*args, **kwargs):
        raise AssertionError("a named shape source must not cut GrabCut")

    monkeypatch.setattr(pseudo_masks, "grabcut_pseudo_masks", no_cut)
    monkeypatch.setattr(pseudo_masks, "cached_grabcut_pseudo_masks", no_cut)
    train = load_coco(small_synthetic["train"])
    masks = training_pseudo_masks(tmp_path, train, source, None)
    assert set(masks) == {a.id for a in train.instances()}
    for im in train.images:
        for inst in im.pool:
            win = omega(inst.box, im.width, im.height)
            m = masks[inst.id]
            assert m.window == win and m.weight == 1.0
            assert m.mask.shape == (win.height, win.width)
            if source == "box":
                assert m.mask.all()
            else:  # the inscribed ellipse: the centre in, the corners out
                assert m.mask[win.height // 2, win.width // 2] and not m.mask[0, 0] and not m.mask[-1, -1]
                assert m.mask.mean() == pytest.approx(np.pi / 4, abs=0.12)
    with pytest.raises(ValueError, match="unknown no-model source"):
        pseudo_masks.no_model_masks(None, train, sources=("ellipse", "polygon"))


@pytest.mark.slow
def test_loop_with_a_named_shape_judges_it_beside_the_other_shape(tmp_path, small_train, small_val):
    """``loop.pseudo_masks: box``: M0 learns from the boxes, the run's table judges the box beside the ellipse
    (GrabCut, which a named shape avoids, is left out), and a note says so when the other shape agrees with more
    of the answers."""
    import json

    from apis.loop import ActiveRun, mask_oracle
    from apis.mask_checks import SourceScore
    from apis.pseudo_masks import SourceChoice

    cfg = _one_step_config("box")
    lines: list[str] = []
    oracle, gt = mask_oracle(small_train)
    run = ActiveRun(tmp_path / "run", cfg, small_train, small_val, "random", 0, oracle, gt, report=lines.append)
    run.run()
    log = (tmp_path / "run" / "models" / "step0" / "log.csv").read_text()
    assert "loss_pseudo_mask" in log.splitlines()[0]
    for step in (0, 1):
        table = json.loads((tmp_path / "run" / "pseudo_masks" / f"sources-P{step}.json").read_text())
        assert {s["source"] for s in table["sources"]} == {"ellipse", "box"}
        assert {s["answers"] for s in table["sources"]} == {len(small_train.instances()) * (step + 1)}
    lines.clear()
    worse = SourceChoice(["ellipse", "box"], [SourceScore("ellipse", 10, 0, 8, 10), SourceScore("box", 10, 0, 5, 10)],
                         {})
    run.masks.report_sources(2, worse)
    assert any("the ellipse agrees with more of the answers than the box (80% against 50%)" in ln for ln in lines)
    lines.clear()
    run.masks.report_sources(2, SourceChoice(["box", "ellipse"], worse.scores[::-1], {}))
    assert not any("note:" in ln for ln in lines)


def test_auto_sources_are_weighed_on_the_judged_answers_and_checked_on_all(small_synthetic, tmp_path):
    """``auto_pseudo_masks(judged=...)``: the table and the weights come from ``judged`` alone; with none judged,
    nothing speaks against a source (weight 1), yet each object's own answers still reject a mask that
    contradicts them."""
    from apis.pseudo_masks import auto_pseudo_masks, no_model_masks

    train = load_coco(small_synthetic["train"])
    first = train.instances()[0]
    win, box = no_model_masks(None, train, [first.id], sources=("box",))["box"][first.id]
    # A "no" at the box's corner: the box filled says yes there, so this object must not learn the box.
    points = {first.id: [(win.x0, win.y0, 0, 1)]}
    masks, choice = auto_pseudo_masks(tmp_path, train, points, judged={})
    assert all(s.answers == 0 for s in choice.scores)
    assert all(m.weight == 1.0 for m in masks.values())
    assert not masks[first.id].mask[0, 0]
    masks, choice = auto_pseudo_masks(tmp_path, train, points)
    assert sum(s.answers for s in choice.scores) == len(choice.scores)  # the one answer, judged by each source
