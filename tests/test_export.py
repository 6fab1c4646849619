"""Exported masks: a drop-in COCO file, answered points respected, nothing lost, trust scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from apis.config import RunConfig, dump_config
from apis.data.coco import dataset_to_dict, load_coco
from apis.data.records import CocoDataset, decode_segmentation, encode_mask
from apis.data.synthetic import SyntheticConfig, generate
from apis.export import (
    ExportError,
    Vote,
    cut_agreement,
    export_masks,
    export_masks_cli,
    finish_instance,
    instance_trust,
    pick_refinement,
    pixel_belief,
    pool_iou_for_step,
    pool_mask_iou,
    review_path,
    review_reason,
    trust_score,
    write_export,
)
from apis.geometry import omega
from apis.models.backbone import BackboneConfig
from apis.models.condinst import CondInst, CondInstConfig
from apis.store import PointAnswer, Store
from apis.train import save_model
from apis.yardsticks import ellipse_mask

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export_data")
    return generate(out, SyntheticConfig(image_size=64, train_images=4, val_images=2, max_instances=3))


@pytest.fixture(scope="module")
def train(data) -> CocoDataset:
    return load_coco(data["train"])


def binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


class StubModel:
    """The export's model interface with hand-made outputs.

    ``make_set(window)`` → the K×h×w prediction set of the instance with Ω ``window``; ``detections(image)``
    → the eval-forward dict of one image (default: nothing detected).
    """

    def __init__(self, make_set, detections=None):
        self.make_set = make_set
        self.detections = detections
        self.forward_calls = 0

    def prediction_sets(self, images, targets):
        return [[self.make_set(win) for win in t["windows"]] for t in targets]

    def __call__(self, images):
        self.forward_calls += 1
        return [self.detections(im) if self.detections else no_detections(im) for im in images]


def no_detections(image: torch.Tensor) -> dict:
    h, w = image.shape[-2:]
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, h, w)}


def left_right_set(win) -> torch.Tensor:
    """K = 2 maps whose mean is 0.8 on the left half of Ω (columns < w // 2) and 0.2 on the right."""
    h, w = win.height, win.width
    a, b = torch.full((h, w), 0.1), torch.full((h, w), 0.3)
    a[:, : w // 2], b[:, : w // 2] = 0.9, 0.7
    return torch.stack([a, b])


def constant_set(p: float):
    return lambda win: torch.full((1, win.height, win.width), p)


def exported_mask(result, ann_id: int, dataset: CocoDataset) -> np.ndarray:
    ann = next(a for a in result.coco["annotations"] if a["id"] == ann_id)
    im = dataset.image_by_id()[ann["image_id"]]
    return decode_segmentation(ann["segmentation"], im.height, im.width)


def gt_answers(dataset: CocoDataset, per_instance: int = 3, seed: int = 0) -> dict[int, list[tuple[int, int, int]]]:
    """A few distinct pixels of Ω per instance, answered from the GT mask (x, y, label)."""
    rng = np.random.default_rng(seed)
    out = {}
    for im in dataset.images:
        for a in im.pool:
            win = omega(a.box, im.width, im.height)
            gt = a.mask(im.height, im.width)
            cells = rng.choice(win.width * win.height, size=min(per_instance, win.width * win.height), replace=False)
            pts = [(win.x0 + int(c) % win.width, win.y0 + int(c) // win.width) for c in cells]
            out[a.id] = [(x, y, int(gt[y, x])) for x, y in pts]
    return out


# ------------------------------------------------------------------------------------- the file
def test_exported_file_is_a_drop_in_replacement(train, tmp_path):
    result = export_masks(StubModel(left_right_set), train, gt_answers(train))
    out = tmp_path / "elsewhere" / "masks.json"
    write_export(result, out)

    coco = COCO(str(out))  # pycocotools reads it and decodes every exported mask
    for ann in coco.dataset["annotations"]:
        assert coco.annToMask(ann).sum() == ann["area"]
    again = load_coco(out, image_root=train.image_root)  # file_name stays relative to the input's images
    assert again.info["apis_image_root"] == str(train.image_root.resolve())

    src = json.loads(Path(train.json_path).read_text())
    dst = json.loads(out.read_text())
    assert dst["images"] == src["images"]
    assert dst["categories"] == [{"id": c["id"], "name": c["name"]} for c in src["categories"]]
    assert [a["id"] for a in dst["annotations"]] == [a["id"] for a in src["annotations"]]
    for a, b in zip(src["annotations"], dst["annotations"], strict=True):
        assert (b["image_id"], b["category_id"]) == (a["image_id"], a["category_id"])
        assert b["bbox"] == pytest.approx(a["bbox"], abs=1e-9)
    assert np.allclose([i.box for i in again.instances()], [i.box for i in train.instances()], rtol=0, atol=1e-9)
    assert dst["info"]["apis_missing"] == []


def test_written_next_to_the_input_loads_without_image_root(train, tmp_path):
    result = export_masks(StubModel(constant_set(0.9)), train, {})
    out = Path(train.json_path).with_name("masks_export_test.json")
    try:
        write_export(result, out)
        assert len(load_coco(out).instances()) == len(train.instances())
    finally:
        out.unlink(missing_ok=True)


def test_hand_made_set_gives_expected_mask_and_score(train):
    result = export_masks(StubModel(left_right_set), train, {})
    expected_score = 2 * 0.8 - 1  # the model gives the exported left half 0.8 and the right half 1 - 0.2
    for im in train.images:
        for inst in im.pool:
            win = omega(inst.box, im.width, im.height)
            expected = np.zeros((im.height, im.width), np.uint8)
            expected[win.y0 : win.y1, win.x0 : win.x0 + win.width // 2] = 1
            assert np.array_equal(exported_mask(result, inst.id, train), expected)
    for e in result.instances:
        assert e.source == "prediction_set" and e.k == 2
        assert e.score == pytest.approx(expected_score, abs=1e-6)
        assert e.points_agree is None and e.forced_pixels == 0
    ann = next(a for a in result.coco["annotations"] if a["id"] == result.instances[0].annotation_id)
    assert ann["apis_score"] == pytest.approx(expected_score, abs=1e-5)
    assert ann["area"] == result.instances[0].area
    assert ann["apis_points_agree"] is None
    empty = np.zeros((3, 3), bool)
    assert trust_score(np.zeros((3, 3)), empty) == 1.0 and trust_score(np.full((2, 2), 0.5), empty[:2, :2]) == 0.0
    # A mask the evidence disagrees with scores low however certain the evidence is.
    assert trust_score(np.zeros((3, 3)), ~empty) == 0.0
    half = np.array([[0.9, 0.9, 0.1, 0.1]])
    assert trust_score(half, np.array([[1, 1, 0, 0]], bool)) == pytest.approx(0.8)
    assert trust_score(half, np.array([[1, 1, 1, 0]], bool)) == pytest.approx(0.4)


def test_pixel_belief_adds_the_evidence_in_log_odds():
    """Hand-computed: a map counted half is σ(logit(0.9) / 2) = √0.9 / (√0.9 + √0.1) = 0.75; a vote with fit f
    alone gives f on its mask and 1 − f off it; two votes of 0.8 that agree give odds 4 · 4 = 16, and a map of
    0.8 against a vote of 0.8 cancels to 0.5; an answered pixel takes its answer; no map and no vote: 0.5."""
    from apis.geometry import PixelWindow

    p = torch.tensor([[0.9, 0.1]])
    assert pixel_belief(p, 0.5, []) == pytest.approx(np.array([[0.75, 0.25]]))
    assert pixel_belief(p, 0.0, []) == pytest.approx(np.full((1, 2), 0.5))  # a map that cannot judge says nothing
    on = np.array([[True, False]])
    assert pixel_belief(None, 0.0, [Vote(on, 0.8)]) == pytest.approx(np.array([[0.8, 0.2]]))
    assert pixel_belief(None, 0.0, [Vote(on, 0.8), Vote(on, 0.8)]) == pytest.approx(np.array([[16 / 17, 1 / 17]]))
    assert pixel_belief(torch.tensor([[0.8, 0.8]]), 1.0, [Vote(on, 0.8)]) == pytest.approx(np.array([[16 / 17, 0.5]]))
    win = PixelWindow(10, 20, 12, 21)  # x0, y0, x1, y1: the 1×2 Ω at columns 10-11 of row 20
    assert pixel_belief(p, 1.0, [], win, [(11, 20, 1)]) == pytest.approx(np.array([[0.9, 1.0]]))
    # A map's 0 and 1 are clipped: a fitted source can still move a pixel the map is certain of.
    assert 0.5 < pixel_belief(torch.tensor([[1.0]]), 1.0, [Vote(np.array([[False]]), 0.99)])[0, 0] < 0.999
    with pytest.raises(ValueError, match="map or a vote"):
        pixel_belief(None, 0.0, [])
    # The score of a mask is the belief in it under that evidence.
    assert instance_trust(p, np.array([[True, False]]), 0.5, []) == pytest.approx(2 * 0.75 - 1)
    # times √f₀ of the mask's own kind of source
    assert instance_trust(p, np.array([[True, False]]), 0.5, [], own_fit=0.25) == pytest.approx((2 * 0.75 - 1) / 2)


def test_the_ellipse_votes_with_its_fit_on_the_answers(tmp_path, monkeypatch):
    """Once the answers at random points fit the ellipse (apis.shape_prior.ellipse_fit), the ellipse inscribed in
    each box is a vote of its trust score counted by that fit, and the score is times √f; without a fit it is no
    vote, and the score is the map's belief alone."""
    import apis.export.masks
    from apis.shape_prior import MIN_OBJECTS, ellipse_fit

    paths = generate(tmp_path, SyntheticConfig(image_size=64, train_images=24, val_images=1, max_instances=3))
    ds = load_coco(paths["train"])
    assert len(ds.instances()) >= MIN_OBJECTS
    answers = gt_answers(ds, per_instance=4)
    fit = ellipse_fit(ds, answers)
    assert len(set(fit.values())) > 1  # the fit varies over this pool, so the vote's weight is tested
    shaped = export_masks(StubModel(left_right_set), ds, answers)
    assert {e.shape_fit for e in export_masks(StubModel(left_right_set), ds, {}).instances} == {None}  # no answers
    monkeypatch.setattr(apis.export.masks, "ellipse_fit", lambda dataset, judged: dict.fromkeys(fit, 1.0))
    unfit = {e.annotation_id: e for e in export_masks(StubModel(left_right_set), ds, answers).instances}
    anns = {a["id"]: a for a in shaped.coco["annotations"]}
    images, by_id = ds.image_by_id(), {a.id: a for a in ds.instances()}
    for e in shaped.instances:
        inst, im = by_id[e.annotation_id], images[e.image_id]
        win = omega(inst.box, im.width, im.height)
        mask = exported_mask(shaped, e.annotation_id, ds)[win.y0 : win.y1, win.x0 : win.x1].astype(bool)
        p = left_right_set(win).mean(dim=0)
        assert e.shape_fit == pytest.approx(fit[e.annotation_id])
        assert anns[e.annotation_id]["apis_shape_fit"] == pytest.approx(fit[e.annotation_id], abs=1e-6)
        vote = Vote(ellipse_mask(inst.box, win), fit[e.annotation_id])
        # The map's mask is scored under the map and the ellipse's vote, times √f of the ellipse (its own kind).
        assert e.score == pytest.approx(instance_trust(p, mask, 1.0, [vote], win, answers[e.annotation_id],
                                                       own_fit=fit[e.annotation_id]))
        assert unfit[e.annotation_id].shape_fit is None
        assert unfit[e.annotation_id].score == pytest.approx(instance_trust(p, mask, 1.0, [], win,
                                                                            answers[e.annotation_id]))
    assert sum(e.score != unfit[e.annotation_id].score for e in shaped.instances) > len(shaped.instances) // 2
    assert "the ellipse in the box (right at" in review_reason(shaped.instances[0])


# --------------------------------------------------------------------------------- answered points
@pytest.mark.parametrize("p", [0.9, 0.1])
def test_every_answered_point_is_on_the_right_side(train, p):
    """p = 0.9: the model says yes everywhere, so every "no" is forced; p = 0.1: every "yes"."""
    answers = gt_answers(train, per_instance=6)
    result = export_masks(StubModel(constant_set(p)), train, answers)
    for inst_id, pts in answers.items():
        mask = exported_mask(result, inst_id, train)
        assert all(mask[y, x] == label for x, y, label in pts)
    model_says = int(p > 0.5)
    wrong = {i: sum(label != model_says for _, _, label in pts) for i, pts in answers.items()}
    assert result.forced_per_instance == {i: n for i, n in wrong.items() if n}
    assert result.forced_pixels == sum(wrong.values()) > 0
    for e in result.instances:
        assert e.points_agree == pytest.approx(1 - wrong[e.annotation_id] / len(answers[e.annotation_id]))


def two_answers(train, store: Store):
    """The pool in ``store`` and two "no" answers for the first object: its Ω's top-left pixel at step 0 and the
    one to its right at step 1. Returns (instance, Ω)."""
    inst = train.instances()[0]
    im = train.image_by_id()[inst.image_id]
    win = omega(inst.box, im.width, im.height)
    store.add_instances(train, "train")
    store.add_points([PointAnswer(inst.id, win.x0, win.y0, 0, 0, "random"),
                      PointAnswer(inst.id, win.x0 + 1, win.y0, 0, 1, "entropy")])
    return inst, win


def test_points_come_from_the_store_up_to_the_step(train, tmp_path):
    with Store.open(tmp_path / "apis.sqlite") as store:
        inst, win = two_answers(train, store)
        at0 = export_masks(StubModel(constant_set(0.9)), train, store, max_step=0)
        at1 = export_masks(StubModel(constant_set(0.9)), train, store, max_step=1)
    assert at0.forced_per_instance == {inst.id: 1}
    assert at1.forced_per_instance == {inst.id: 2}
    assert exported_mask(at1, inst.id, train)[win.y0, win.x0 : win.x0 + 2].tolist() == [0, 0]


def test_a_store_read_through_the_rank_zero_wrapper_exports_the_same(train, tmp_path):
    # Under torchrun every rank reads the store through apis.distributed.RankZeroStore (no Store, no mapping):
    # the refined pseudo masks export through it; treated as a mapping it failed with an AttributeError.
    from apis.distributed import RankZeroStore

    with Store.open(tmp_path / "apis.sqlite") as store:
        inst, _ = two_answers(train, store)
        direct = export_masks(StubModel(constant_set(0.9)), train, store, max_step=1)
        wrapped = export_masks(StubModel(constant_set(0.9)), train, RankZeroStore(store), max_step=1)
    assert wrapped.forced_per_instance == direct.forced_per_instance == {inst.id: 2}
    assert wrapped.coco == direct.coco


def test_answer_outside_omega_is_refused(train):
    inst = train.instances()[0]
    with pytest.raises(ExportError, match=f"annotation {inst.id}.*outside its Ω"):
        export_masks(StubModel(constant_set(0.9)), train, {inst.id: [(10_000, 0, 1)]})


# ------------------------------------------------------------------------------------ no prediction
def test_instance_without_prediction_is_reported_not_lost(train, tmp_path):
    model = StubModel(lambda win: torch.zeros(0, win.height, win.width))
    result = export_masks(model, train, gt_answers(train), review=2)
    pool_ids = [a.id for a in train.instances()]
    assert model.forward_calls > 0  # the eval forward was asked for a fallback
    assert result.missing == pool_ids
    assert result.coco["info"]["apis_missing"] == sorted(pool_ids)
    anns = {a["id"]: a for a in result.coco["annotations"]}
    assert set(pool_ids) <= set(anns)
    assert all("segmentation" not in anns[i] and anns[i]["apis_source"] == "missing" for i in pool_ids)
    assert all(anns[i]["apis_score"] == 0.0 and anns[i]["apis_points_agree"] is None for i in pool_ids)
    assert [r["reason"].startswith("missing") for r in result.review] == [True, True]
    out = write_export(result, tmp_path / "masks.json")[0]
    assert len(load_coco(out, image_root=train.image_root).instances()) == len(pool_ids)
    assert pool_mask_iou(result, train) == 0.0


def test_auto_export_draws_the_ellipse_where_the_model_gives_nothing(train, tmp_path):
    """``refine="auto"``: an instance without prediction set or detection gets the ellipse inscribed in its box
    with its answers forced, scored by its answered pixels alone while the answers are too few to fit the ellipse
    (first to review), and nothing is listed as missing."""
    from apis.yardsticks import ellipse_mask, force_points

    answers = gt_answers(train)
    model = StubModel(lambda win: torch.zeros(0, win.height, win.width))
    result = export_masks(model, train, answers, review=2, refine="auto", trust_colours=False)
    assert result.missing == [] and result.coco["info"]["apis_missing"] == []
    images = train.image_by_id()
    for e in result.instances:
        assert (e.source, e.refinement) == ("no_model", "ellipse")
        inst = next(a for a in train.instances() if a.id == e.annotation_id)
        im = images[inst.image_id]
        win = omega(inst.box, im.width, im.height)
        # q is 0.5 but at the answered pixels, which are right: 2 · mean b − 1 = answered pixels / |Ω|
        assert e.score == pytest.approx(len({(x, y) for x, y, _ in answers[inst.id]}) / (win.width * win.height))
        want = force_points(ellipse_mask(inst.box, win), win, answers[inst.id])
        assert (exported_mask(result, inst.id, train)[win.y0 : win.y1, win.x0 : win.x1] == want).all()
    assert all(r["reason"].startswith("no prediction set") for r in result.review)
    assert pool_mask_iou(result, train) > 0.3
    out = write_export(result, tmp_path / "masks.json")[0]
    assert len(load_coco(out, image_root=train.image_root).instances()) == len(train.instances())


def test_instance_without_prediction_takes_the_best_overlapping_detection(train):
    first = train.instances()[0]
    im = train.image_by_id()[first.image_id]
    win = omega(first.box, im.width, im.height)

    def make_set(w):  # only the first instance of the first image has K = 0
        return torch.zeros(0, w.height, w.width) if w == win else torch.full((1, w.height, w.width), 0.9)

    def detections(image):
        h, wd = image.shape[-2:]
        far = [wd - 2.0, h - 2.0, wd - 1.0, h - 1.0] if first.box[2] < wd - 2 else [0.0, 0.0, 1.0, 1.0]
        return {"boxes": torch.tensor([far, list(first.box)]), "labels": torch.tensor([0, 0]),
                "scores": torch.tensor([0.99, 0.5]), "masks": torch.full((2, 1, h, wd), 0.9)}

    result = export_masks(StubModel(make_set, detections), train, {})
    e = next(e for e in result.instances if e.annotation_id == first.id)
    assert (e.source, e.k) == ("detection", 0)
    # The map counts by the detection's score: σ(0.5 · logit 0.9) = 0.75 on the mask, so 2 · 0.75 − 1.
    assert e.score == pytest.approx(2 * 0.75 - 1, abs=1e-6)
    expected = np.zeros((im.height, im.width), np.uint8)
    expected[win.y0 : win.y1, win.x0 : win.x1] = 1  # cut to Ω, although the detection covers the image
    assert np.array_equal(exported_mask(result, first.id, train), expected)
    assert result.missing == []


# --------------------------------------------------------------------------------- crowd and review
def test_crowd_annotation_passes_through(train, tmp_path):
    raw = json.loads(Path(train.json_path).read_text())
    src = raw["annotations"][0]
    im = next(i for i in raw["images"] if i["id"] == src["image_id"])
    crowd_mask = np.zeros((im["height"], im["width"]), np.uint8)
    crowd_mask[:5, :7] = 1
    crowd = {"id": 10_000, "image_id": src["image_id"], "category_id": src["category_id"], "bbox": [0, 0, 7, 5],
             "area": 35.0, "iscrowd": 1, "segmentation": encode_mask(crowd_mask)}
    raw["annotations"].append(crowd)
    path = tmp_path / "with_crowd.json"
    path.write_text(json.dumps(raw))
    ds = load_coco(path, image_root=train.image_root)

    result = export_masks(StubModel(constant_set(0.9)), ds, {})
    out_crowd = next(a for a in result.coco["annotations"] if a["id"] == 10_000)
    assert out_crowd == {**crowd, "bbox": [0.0, 0.0, 7.0, 5.0]}
    assert 10_000 not in [e.annotation_id for e in result.instances]


def test_review_lists_the_least_trustworthy_first(train, tmp_path):
    def make_set(win):  # a confidence that differs between instances
        return torch.full((1, win.height, win.width), 0.55 + 0.4 * ((win.x0 * 7 + win.y0 * 3) % 11) / 11)

    result = export_masks(StubModel(make_set), train, {}, review=3)
    assert len(result.review) == 3
    scores = [r["score"] for r in result.review]
    assert scores == sorted(scores)
    assert scores[0] == pytest.approx(min(e.score for e in result.instances), abs=1e-6)
    images = train.image_by_id()
    boxes = {a.id: a.box for a in train.instances()}
    for r in result.review:
        assert set(r) == {"annotation_id", "image_id", "file_name", "box", "score", "reason"}
        assert r["file_name"] == images[r["image_id"]].file_name
        x0, y0, x1, y1 = boxes[r["annotation_id"]]
        assert r["box"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
    out = tmp_path / "masks.json"
    write_export(result, out)
    assert json.loads(review_path(out).read_text()) == result.review


# ------------------------------------------------------------------------------------------ quality
def test_pool_mask_iou_against_ground_truth(train):
    gt = dataset_to_dict(train)
    assert pool_mask_iou(gt, train) == pytest.approx(1.0)
    pool = [a.id for a in train.instances()]
    for ann in gt["annotations"]:
        if ann["id"] == pool[0]:
            del ann["segmentation"]  # a missing instance counts as IoU 0
    assert pool_mask_iou(gt, train) == pytest.approx((len(pool) - 1) / len(pool))


# ------------------------------------------------------------------------------ a real tiny CondInst
def tiny_condinst(num_classes: int) -> CondInst:
    torch.manual_seed(0)
    return CondInst(CondInstConfig(num_classes=num_classes, backbone=BackboneConfig(pretrained=False),
                                   fpn_channels=16, mask_branch_channels=16, train_min_sizes=(64,),
                                   test_min_size=64))


def test_real_condinst_through_the_cli_function(train, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    cfg = RunConfig()
    cfg.data.train = str(Path(train.json_path).resolve())
    cfg.device = "cpu"
    dump_config(cfg, project / "config.yaml")
    model = tiny_condinst(len(train.categories))
    (project / "models" / "step1").mkdir(parents=True)
    save_model(model, project / "models" / "step1" / "model_final.pt")
    answers = gt_answers(train, per_instance=2)
    with Store.open(project / "apis.sqlite") as store:
        store.add_instances(train, "train")
        store.add_points([PointAnswer(i, x, y, lab, 0, "random") for i, pts in answers.items()
                          for x, y, lab in pts])

    out = tmp_path / "out" / "masks.json"
    result = export_masks_cli(project, 1, out, review=2)
    ds = load_coco(out, image_root=train.image_root)
    assert [a.id for a in ds.instances()] == [a.id for a in train.instances()]
    assert len(result.review) == 2 and review_path(out).is_file()
    for inst in ds.instances():
        if inst.id in result.missing:
            assert inst.segmentation is None
            continue
        im = ds.image_by_id()[inst.image_id]
        mask = inst.mask(im.height, im.width)
        win = omega(inst.box, im.width, im.height)
        assert mask.sum() == mask[win.y0 : win.y1, win.x0 : win.x1].sum()  # nothing outside Ω
        assert all(mask[y, x] == lab for x, y, lab in answers[inst.id])
    assert 0.0 <= pool_mask_iou(result, train) <= 1.0

    with Store.open(project / "apis.sqlite") as store:
        iou = pool_iou_for_step(project / "models" / "step1" / "model_final.pt", train, store, 1)
    assert iou == pytest.approx(pool_mask_iou(result, train))
    with pytest.raises(ExportError, match="no model for step 2"):
        export_masks_cli(project, 2, out)
    # --refine overrides the config's loop.refine_masks (here "none"); the file records it per annotation:
    # the map's threshold (None), or the ellipse where that map is empty (never an empty mask for a box).
    assert {a.get("apis_refinement") for a in result.coco["annotations"]} <= {None, "ellipse"}
    refined = export_masks_cli(project, 1, tmp_path / "out" / "refined.json", refine="grabcut")
    assert refined.coco["info"]["apis_export"]["refine"] == "grabcut"
    assert {a["apis_refinement"] for a in refined.coco["annotations"] if "segmentation" in a} <= {"grabcut",
                                                                                                  "grabcut_box",
                                                                                                  "ellipse"}
    for export in (result, refined):
        assert all(a["area"] > 0 for a in export.coco["annotations"] if "segmentation" in a)


# ------------------------------------------------------------------------------------- refinement
def test_grabcut_refinement_beats_a_rough_map_and_keeps_answers_and_trust(train):
    """A box-shaped map (what a weak model gives) refined with the image's colours is closer to the GT
    on the built-in set; answers stay forced, and the file says so."""
    answers = gt_answers(train, per_instance=2)
    box_like = constant_set(0.7)
    plain = export_masks(StubModel(box_like), train, answers)
    refined = export_masks(StubModel(box_like), train, answers, refine="grabcut")
    assert pool_mask_iou(refined, train) > pool_mask_iou(plain, train) + 0.1
    for ann in refined.coco["annotations"]:
        assert ann["apis_refinement"] == "grabcut"
        mask = exported_mask(refined, ann["id"], train)
        for x, y, label in answers[ann["id"]]:
            assert mask[y, x] == label
    assert refined.coco["info"]["apis_export"]["refine"] == "grabcut"
    assert all(a["apis_refinement"] is None for a in plain.coco["annotations"])
    with pytest.raises(ExportError, match="refinement"):
        export_masks(StubModel(box_like), train, answers, refine="crf")


def test_a_cut_mask_scores_by_how_well_the_two_cuts_agree(train):
    """The trust score of a mask GrabCut cut is the IoU of its cut from the map with its cut from the box: given
    the GT mask as the box's cut, every map-started mask exported scores exactly its true IoU (the answers are
    the GT's, so forcing them changes nothing), and a box-started one the IoU of the map's cut it replaced."""
    answers = gt_answers(train, per_instance=2)
    images = train.image_by_id()
    truth = {}
    for im in train.images:
        for inst in im.pool:
            win = omega(inst.box, im.width, im.height)
            truth[inst.id] = inst.mask(im.height, im.width).astype(bool)[win.y0 : win.y1, win.x0 : win.x1]
    refined = export_masks(StubModel(constant_set(0.7)), train, answers, refine="grabcut", box_cuts=truth)
    kinds = [e.refinement for e in refined.instances]
    assert kinds.count("grabcut") >= len(kinds) // 2
    for e in refined.instances:
        im = images[e.image_id]
        inst = next(a for a in im.pool if a.id == e.annotation_id)
        win = omega(inst.box, im.width, im.height)
        mask = exported_mask(refined, e.annotation_id, train)[win.y0 : win.y1, win.x0 : win.x1]
        if e.refinement == "grabcut_box":
            assert (mask == truth[e.annotation_id]).all()
            assert cut_agreement(mask, truth[e.annotation_id]) == 1.0


def test_cut_agreement_is_the_iou_and_zero_for_two_empty_cuts():
    a = np.zeros((4, 4), dtype=bool)
    b = a.copy()
    assert cut_agreement(a, b) == 0.0  # nothing cut twice is no evidence of an object
    a[0, :2] = True
    b[0, :] = True
    b[1, :] = True
    assert cut_agreement(a, b) == pytest.approx(2 / 8)


def test_the_score_judges_the_mask_exported_not_the_candidates_turned_down(train):
    """When the cut fails the checks and the export falls back (refine="auto"), the score is the belief in what
    was exported; a detection's map counts by the detection's score: σ(0.5 · logit 0.8) = √0.8 / (√0.8 + √0.2)."""
    im = next(im for im in train.images if im.pool)
    inst = im.pool[0]
    win = omega(inst.box, im.width, im.height)
    p_map = torch.full((win.height, win.width), 0.8)
    empty_cut = (np.zeros((win.height, win.width), dtype=bool), "grabcut")
    exp, _ = finish_instance(inst, im, win, p_map, 1.0, "prediction_set", [], k=1, refined=empty_cut,
                             checked=True)
    assert exp.refinement is None  # the map's threshold (the whole box) passes the checks
    assert exp.score == pytest.approx(2 * 0.8 - 1)
    box_cut = (np.ones((win.height, win.width), dtype=bool), "grabcut")
    exp, _ = finish_instance(inst, im, win, p_map, 0.5, "detection", [], k=0, refined=box_cut, checked=True)
    assert exp.refinement == "grabcut" and exp.map_weight == 0.5
    assert exp.score == pytest.approx(2 * (2 / 3) - 1)
    assert "times the detection's score 0.50" in review_reason(exp)


def test_refinement_keeps_the_map_start_unless_the_box_start_disagrees():
    """IoU between the two GrabCuts: 2/8 = 0.25 < 0.3 keeps the box's, 4/6 keeps the map's; two empty
    masks agree."""
    from_map = np.zeros((4, 4), dtype=bool)
    from_map[0, :2] = True
    from_box = np.zeros((4, 4), dtype=bool)
    from_box[0, :] = True
    from_box[1, :] = True
    mask, source = pick_refinement(from_map, from_box)
    assert source == "grabcut_box" and (mask == from_box).all()
    from_map[0, 2:] = True
    from_map[2, :2] = True
    mask, source = pick_refinement(from_map, from_box)
    assert source == "grabcut" and (mask == from_map).all()
    empty = np.zeros((4, 4), dtype=bool)
    assert pick_refinement(empty, empty)[1] == "grabcut"
    assert pick_refinement(from_map, from_box, min_agreement=0.7)[1] == "grabcut_box"


def test_refinement_falls_back_to_the_box_where_the_map_leads_grabcut_astray(train):
    """An empty map (a model that sees nothing in the box) gives GrabCut no foreground but the "yes" answers
    and it shrinks to them; the export keeps GrabCut started from the box instead, marks it ``grabcut_box``,
    and that mask is exactly the one a box-wide map gets."""
    answers = gt_answers(train, per_instance=1)
    empty = export_masks(StubModel(constant_set(0.0)), train, answers, refine="grabcut")
    box_wide = export_masks(StubModel(constant_set(0.9)), train, answers, refine="grabcut")
    by_source: dict[str | None, int] = {}
    for ann in empty.coco["annotations"]:
        by_source[ann["apis_refinement"]] = by_source.get(ann["apis_refinement"], 0) + 1
        if ann["apis_refinement"] == "grabcut_box":
            assert (exported_mask(empty, ann["id"], train) == exported_mask(box_wide, ann["id"], train)).all()
    assert by_source.get("grabcut_box", 0) >= 0.9 * len(empty.coco["annotations"])
    plain = export_masks(StubModel(constant_set(0.0)), train, answers)
    assert pool_mask_iou(empty, train) > pool_mask_iou(plain, train) + 0.3


def test_refinement_takes_box_cuts_made_elsewhere_instead_of_cutting_again(train):
    """``box_cuts`` (the loop's yardstick "GrabCut + points") replace the export's own cut from the box: the
    yardstick's masks give the same export as no ``box_cuts``, and a given cut is what an object falling back to
    the box start gets."""
    from apis.pseudo_masks import grabcut_pseudo_masks

    answers = gt_answers(train, per_instance=1)
    model = StubModel(constant_set(0.0))  # an empty map: the box start wins for most objects
    own = export_masks(model, train, answers, refine="grabcut")
    cuts = {i: m.mask for i, m in grabcut_pseudo_masks(train, answers).items()}
    shared = export_masks(model, train, answers, refine="grabcut", box_cuts=cuts)
    assert own.coco["annotations"] == shared.coco["annotations"]
    whole = {i: np.ones_like(m) for i, m in cuts.items()}
    given = export_masks(model, train, answers, refine="grabcut", box_cuts=whole)
    images = train.image_by_id()
    fell_back = [a for a in given.coco["annotations"] if a["apis_refinement"] == "grabcut_box"]
    assert len(fell_back) >= 0.9 * len(given.coco["annotations"])
    for ann in fell_back:
        inst = next(a for a in train.instances() if a.id == ann["id"])
        im = images[inst.image_id]
        win = omega(inst.box, im.width, im.height)
        drawn = exported_mask(given, ann["id"], train)[win.y0 : win.y1, win.x0 : win.x1]
        expected = np.ones((win.height, win.width), dtype=bool)
        for x, y, label in answers[ann["id"]]:
            expected[y - win.y0, x - win.x0] = bool(label)
        assert (drawn == expected).all()


def test_export_of_a_sample_measures_only_its_objects(train):
    answers = gt_answers(train)
    ids = [a.id for a in train.instances()]
    some = ids[::2]
    full = export_masks(StubModel(left_right_set), train, answers)
    part = export_masks(StubModel(left_right_set), train, answers, instance_ids=some)
    assert [e.annotation_id for e in part.instances] == some
    for i in some:
        assert (exported_mask(part, i, train) == exported_mask(full, i, train)).all()
    # The others keep their input annotation (the GT mask here), untouched.
    untouched = {a["id"]: a for a in part.coco["annotations"]}
    assert all("apis_score" not in untouched[i] for i in ids[1::2])
    # The IoU over the sample is the mean over exactly those objects.
    per = [pool_mask_iou(export_masks(StubModel(left_right_set), train, answers, instance_ids=[i]), train, [i])
           for i in some]
    assert pool_mask_iou(part, train, some) == pytest.approx(float(np.mean(per)))


def test_auto_export_draws_objects_too_narrow_for_the_mask_logits_with_the_ellipse(train):
    """``refine="auto"`` keeps the model's thresholded map only where the object spans MIN_MAP_CELLS cells of
    the mask logits at the model's test size; narrower objects get the ellipse, whatever the map says."""
    from types import SimpleNamespace

    from apis.export import MIN_MAP_CELLS, logit_cell_px
    from apis.yardsticks import ellipse_mask

    def model_at(test_min_size: int) -> StubModel:
        model = StubModel(left_right_set)
        model.cfg = SimpleNamespace(test_min_size=test_min_size, max_size=4 * test_min_size)
        return model

    coarse, fine = model_at(8), model_at(640)  # the 64-pixel images at 1/8 and at 10x
    images = train.image_by_id()
    for inst in train.instances():
        im = images[inst.image_id]
        win = omega(inst.box, im.width, im.height)
        side = min(win.width, win.height)
        assert side / logit_cell_px(coarse, im) < MIN_MAP_CELLS <= side / logit_cell_px(fine, im)
    for model, want in ((coarse, "ellipse"), (fine, None)):
        result = export_masks(model, train, {}, refine="auto", trust_colours=False)
        assert {e.refinement for e in result.instances} == {want}
    narrow = export_masks(coarse, train, {}, refine="auto", trust_colours=False)
    wide = export_masks(fine, train, {}, refine="auto", trust_colours=False)
    plain = export_masks(coarse, train, {}, refine="none")
    for inst in train.instances():
        im = images[inst.image_id]
        win = omega(inst.box, im.width, im.height)
        drawn = exported_mask(narrow, inst.id, train)[win.y0 : win.y1, win.x0 : win.x1]
        assert (drawn == ellipse_mask(inst.box, win)).all()
        # The map (left half of Ω) is kept where the logits resolve the object, and without the checks.
        assert (exported_mask(wide, inst.id, train) == exported_mask(plain, inst.id, train)).all()


def test_a_map_that_cannot_judge_the_object_is_no_evidence(tmp_path):
    """Where the export draws the ellipse because the object is narrower than MIN_MAP_CELLS cells of the mask
    logits (or the model gave no map), the map is drawn by the upsampling kernel and counts nothing: the ellipse's
    vote alone gives q = f on it and 1 − f off it, so its score is (2f − 1)·√f but for the answered pixels, and the
    review list says the map was left out. Where the map resolves the objects it counts once. With neither a map
    nor a fit, nothing vouches for the mask: 0."""
    from types import SimpleNamespace

    from apis.shape_prior import ellipse_fit

    paths = generate(tmp_path, SyntheticConfig(image_size=64, train_images=24, val_images=1, max_instances=3))
    ds = load_coco(paths["train"])
    answers = gt_answers(ds, per_instance=4)
    fit = ellipse_fit(ds, answers)
    assert len(set(fit.values())) > 1 and max(fit.values()) < 1.0
    images, by_id = ds.image_by_id(), {a.id: a for a in ds.instances()}

    def model_at(test_min_size: int, make_set=left_right_set) -> StubModel:
        model = StubModel(make_set)
        model.cfg = SimpleNamespace(test_min_size=test_min_size, max_size=4 * test_min_size)
        return model

    def window(e):
        inst, im = by_id[e.annotation_id], images[e.image_id]
        return inst, omega(inst.box, im.width, im.height)

    narrow = export_masks(model_at(8), ds, answers, refine="auto", trust_colours=False)
    assert {e.refinement for e in narrow.instances} == {"ellipse"}
    for e in narrow.instances:
        f, (inst, win) = fit[e.annotation_id], window(e)
        assert e.map_weight == 0.0
        mask = exported_mask(narrow, e.annotation_id, ds)[win.y0 : win.y1, win.x0 : win.x1].astype(bool)
        ellipse = ellipse_mask(inst.box, win)
        assert e.score == pytest.approx(instance_trust(None, mask, 0.0, [Vote(ellipse, f)], win,
                                                       answers[e.annotation_id], own_fit=f), abs=1e-9)
        assert e.score == pytest.approx(max(2 * f - 1, 0.0) * math.sqrt(f),
                                        abs=2 * len(answers[e.annotation_id]) / ellipse.size)
    assert "too coarse" in review_reason(narrow.instances[0])
    # No map at all: the same.
    none = export_masks(model_at(640, lambda win: torch.zeros(0, win.height, win.width)), ds, answers,
                        refine="auto", trust_colours=False)
    for e in none.instances:
        assert e.source == "no_model" and e.map_weight == 0.0
        assert e.score == pytest.approx(next(n.score for n in narrow.instances if n.annotation_id == e.annotation_id))
        assert "no detection overlapping the box" in review_reason(e)
    # The map resolves the objects: it counts once beside the ellipse, whatever was exported.
    wide = export_masks(model_at(640), ds, answers, refine="auto", trust_colours=False)
    for e in wide.instances:
        inst, win = window(e)
        mask = exported_mask(wide, e.annotation_id, ds)[win.y0 : win.y1, win.x0 : win.x1].astype(bool)
        vote = Vote(ellipse_mask(inst.box, win), fit[e.annotation_id])
        expected = instance_trust(left_right_set(win).mean(dim=0), mask, 1.0, [vote], win, answers[e.annotation_id],
                                  own_fit=fit[e.annotation_id])
        assert e.map_weight == 1.0 and e.score == pytest.approx(expected, abs=1e-6)
    # Answers too few to fit the ellipse and a map too coarse: nothing vouches for the narrow objects.
    unfit = export_masks(model_at(8), ds, {}, refine="auto", trust_colours=False)
    assert {e.score for e in unfit.instances} == {0.0}
    assert "nothing vouches" in review_reason(unfit.instances[0])


def test_the_cut_from_the_box_votes_with_grabcuts_fit(train):
    """With ``cut_fit`` (the chance g that GrabCut from the box is right in each box, apis.shape_prior.source_fit),
    GrabCut's cut from the box is a vote counted by g, in the file as ``apis_cut_fit``, and a cut mask's score is
    times √g; a mask the cut from the box contradicts scores lower than the same mask where it agrees; a fit that
    learnt nothing is no vote."""
    truth = {}
    for im in train.images:
        for inst in im.pool:
            win = omega(inst.box, im.width, im.height)
            truth[inst.id] = inst.mask(im.height, im.width).astype(bool)[win.y0 : win.y1, win.x0 : win.x1]
    ids = sorted(truth)
    fit = {i: 0.3 + 0.6 * k / len(ids) for k, i in enumerate(ids)}
    # Every other object's cut from the box is a corner of it, which the cut from the map cannot agree with.
    cuts = dict(truth)
    for i in ids[::2]:
        cuts[i] = np.zeros_like(truth[i])
        cuts[i][:2, :2] = True
    fitted = export_masks(StubModel(constant_set(0.7)), train, {}, refine="grabcut", box_cuts=cuts, cut_fit=fit)
    anns = {a["id"]: a for a in fitted.coco["annotations"]}
    images, by_id = train.image_by_id(), {a.id: a for a in train.instances()}
    for e in fitted.instances:
        inst, im = by_id[e.annotation_id], images[e.image_id]
        win = omega(inst.box, im.width, im.height)
        g = fit[e.annotation_id]
        assert e.cut_fit == pytest.approx(g) and anns[e.annotation_id]["apis_cut_fit"] == pytest.approx(g)
        mask = exported_mask(fitted, e.annotation_id, train)[win.y0 : win.y1, win.x0 : win.x1].astype(bool)
        p = torch.full((win.height, win.width), 0.7)
        own = g if e.refinement in ("grabcut", "grabcut_box") else 1.0
        assert e.score == pytest.approx(instance_trust(p, mask, 1.0, [Vote(cuts[e.annotation_id], g)], own_fit=own),
                                        abs=1e-9)
        if g > 0.5 and mask.any() and not (mask == cuts[e.annotation_id]).all():
            # a cut that agreed would raise it
            assert e.score < instance_trust(p, mask, 1.0, [Vote(mask, g)], own_fit=own)
    assert "GrabCut from the box (right at" in review_reason(fitted.instances[0])
    # A fit that learnt nothing (1.0 everywhere) is no vote: the map's belief alone.
    plain = export_masks(StubModel(constant_set(0.7)), train, {}, refine="grabcut", box_cuts=cuts)
    flat = export_masks(StubModel(constant_set(0.7)), train, {}, refine="grabcut", box_cuts=cuts,
                        cut_fit=dict.fromkeys(ids, 1.0))
    assert [e.score for e in flat.instances] == [e.score for e in plain.instances]
    assert {e.cut_fit for e in flat.instances} == {None}
