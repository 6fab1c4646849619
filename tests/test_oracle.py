"""MaskOracle reads mask[y, x]; P0 points lie in Ω and depend only on (seed, instance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apis.data.records import Category, CocoDataset, ImageRecord, Instance, encode_mask
from apis.oracle import MaskOracle, OracleError, Query, ask, initial_answers, initial_points

W, H = 7, 5  # a non-square image, so swapping x and y indexes a different pixel or falls off the image


def _mask() -> np.ndarray:
    """An asymmetric H×W mask: (x=4, y=1) is on the object, its transpose (x=1, y=4) is not."""
    m = np.zeros((H, W), dtype=np.uint8)
    m[1, 2:6] = 1
    m[2, 4] = 1
    return m


def _dataset(images: list[ImageRecord]) -> CocoDataset:
    return CocoDataset(Path("mem.json"), Path("."), images, [Category(1, "thing")])


def _small_dataset() -> CocoDataset:
    instances = (
        Instance(10, 1, 1, (2.0, 1.0, 6.0, 3.0), 5.0, segmentation=encode_mask(_mask())),
        # A polygon: the triangle (5,0)-(7,0)-(7,2) over the top-right corner of the image.
        Instance(11, 1, 1, (5.0, 0.0, 7.0, 2.0), 2.0, segmentation=[[5.0, 0.0, 7.0, 0.0, 7.0, 2.0]]),
        Instance(12, 1, 1, (0.0, 0.0, 3.0, 3.0), 9.0),  # box only, no mask
        Instance(13, 1, 1, (0.0, 0.0, 7.0, 5.0), 35.0, iscrowd=True, segmentation=encode_mask(_mask())),
    )
    return _dataset([ImageRecord(1, "a.png", W, H, instances)])


def _many_dataset(order: int = 1) -> CocoDataset:
    """Three images, 30 instances with varied (some fractional) boxes; ``order`` = -1 reverses everything."""
    images = []
    for image_id in (1, 2, 3):
        insts = []
        for j in range(10):
            iid = image_id * 100 + j
            x0, y0 = 1.3 * j, 0.7 * j
            insts.append(Instance(iid, image_id, 1, (x0, y0, x0 + 20.6, y0 + 15.2), 300.0))
        images.append(ImageRecord(image_id, f"{image_id}.png", 64, 48, tuple(insts[::order])))
    return _dataset(images[::order])


# ---------------------------------------------------------------------- MaskOracle


def test_mask_oracle_answers_mask_at_row_y_column_x() -> None:
    oracle = MaskOracle(_small_dataset())
    got = oracle.answer([Query(10, 1, 4, 1), Query(10, 1, 1, 4), Query(10, 1, 4, 2), Query(10, 1, 2, 4)])
    assert got == [1, 0, 1, 0]
    # Every pixel of the image agrees with the mask read as mask[y, x].
    queries = [Query(10, 1, x, y) for y in range(H) for x in range(W)]
    assert np.array(oracle.answer(queries)).reshape(H, W).tolist() == _mask().tolist()


def test_mask_oracle_decodes_polygons_in_pixel_frame() -> None:
    oracle = MaskOracle(_small_dataset())
    # The triangle (5,0)-(7,0)-(7,2) covers the top-right pixel (x=6, y=0) but not (x=5, y=1).
    assert oracle.answer([Query(11, 1, 6, 0), Query(11, 1, 5, 1)]) == [1, 0]


def test_mask_oracle_refuses_instance_without_segmentation() -> None:
    oracle = MaskOracle(_small_dataset())
    with pytest.raises(OracleError, match=r"instance 12 \(image 1\) has no segmentation"):
        oracle.answer([Query(12, 1, 1, 1)])


def test_mask_oracle_refuses_unknown_instance_wrong_image_and_outside_pixel() -> None:
    oracle = MaskOracle(_small_dataset())
    with pytest.raises(OracleError, match="instance 99 is not in the oracle's dataset"):
        oracle.answer([Query(99, 1, 0, 0)])
    with pytest.raises(OracleError, match="names image 2, but the instance is on image 1"):
        oracle.answer([Query(10, 2, 4, 1)])
    # (x=1, y=6) would be a valid pixel only if x and y were swapped.
    with pytest.raises(OracleError, match=r"pixel \(x=1, y=6\) lies outside the 7x5 image"):
        oracle.answer([Query(10, 1, 1, 6)])


def test_mask_oracle_caches_decoded_masks_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    original = Instance.mask

    def counting_mask(self: Instance, height: int, width: int) -> np.ndarray:
        decoded.append(self.id)
        return original(self, height, width)

    monkeypatch.setattr(Instance, "mask", counting_mask)
    oracle = MaskOracle(_small_dataset(), cache_size=1)
    assert oracle.answer([Query(10, 1, 4, 1), Query(10, 1, 3, 1), Query(10, 1, 0, 0)]) == [1, 1, 0]
    assert decoded == [10]  # one decode for three questions about the same instance
    oracle.answer([Query(11, 1, 6, 0), Query(10, 1, 4, 1)])
    assert decoded == [10, 11, 10]  # cache of one: 11 evicted 10


def test_ask_wraps_labels_as_answers_and_checks_count() -> None:
    oracle = MaskOracle(_small_dataset())
    queries = [Query(10, 1, 4, 1), Query(10, 1, 0, 0)]
    answers = ask(oracle, queries, step=3, strategy="entropy", annotator="sim")
    assert [(a.instance_id, a.x, a.y, a.label, a.step, a.strategy, a.annotator) for a in answers] == [
        (10, 4, 1, 1, 3, "entropy", "sim"),
        (10, 0, 0, 0, 3, "entropy", "sim"),
    ]
    assert all(a.answered_at is not None for a in answers)

    class Lazy:
        def answer(self, queries: list[Query]) -> list[int]:
            return [1]  # one answer, whatever was asked

    with pytest.raises(OracleError, match="gave 1 answers to 2 queries"):
        ask(Lazy(), [Query(10, 1, 4, 1), Query(10, 1, 0, 0)], step=1, strategy="random")


# ---------------------------------------------------------------------- P0


def _centre_inside(box: tuple[float, float, float, float], x: int, y: int) -> bool:
    """Ω by its definition, independent of geometry.omega: the pixel centre lies in the half-open box."""
    x0, y0, x1, y1 = box
    return x0 <= x + 0.5 < x1 and y0 <= y + 0.5 < y1


def test_initial_points_lie_in_omega_of_every_pool_instance() -> None:
    ds = _many_dataset()
    boxes = {a.id: a.box for a in ds.instances()}
    for seed in range(5):
        queries = initial_points(ds, seed=seed, k=3)
        assert len(queries) == 3 * 30
        for q in queries:
            assert _centre_inside(boxes[q.instance_id], q.x, q.y)
            assert q.image_id == q.instance_id // 100


def test_initial_points_fractional_box_fills_exactly_omega_when_k_exceeds_it() -> None:
    # Box x in [1.3, 4.6), y in [0.7, 3.2): centres 1.5..4.5 and 1.5..2.5 → columns 1-4, rows 1-2.
    inst = Instance(5, 1, 1, (1.3, 0.7, 4.6, 3.2), 8.0)
    ds = _dataset([ImageRecord(1, "a.png", W, H, (inst,))])
    queries = initial_points(ds, seed=0, k=100)
    pixels = [(q.x, q.y) for q in queries]
    assert len(pixels) == len(set(pixels)) == 8  # k capped by |Ω|, no pixel twice
    assert set(pixels) == {(x, y) for x in range(1, 5) for y in range(1, 3)}


def test_initial_points_box_thinner_than_a_pixel_gets_the_pixel_holding_its_centre() -> None:
    # x in [2.1, 2.4) holds no pixel centre (2.5); the pixel holding the box centre (2.25, 2.5) is (2, 2).
    thin = Instance(6, 1, 1, (2.1, 1.0, 2.4, 4.0), 0.9)
    flat = Instance(7, 1, 1, (0.0, 3.55, 7.0, 3.9), 2.5)  # y in [3.55, 3.9): row 3's centre 3.5 is outside
    ds = _dataset([ImageRecord(1, "a.png", W, H, (thin, flat))])
    for seed in (0, 1, 2):
        got = {q.instance_id: (q.x, q.y) for q in initial_points(ds, seed=seed, k=1)}
        assert got[6] == (2, 2)
        assert got[7][1] == 3 and 0 <= got[7][0] < W  # the one row touched by the box
    assert [(q.x, q.y) for q in initial_points(ds, seed=0, k=5) if q.instance_id == 6] == [(2, 2)]


def test_initial_points_reproducible_per_seed_and_independent_of_dataset_order() -> None:
    first = {(q.instance_id, q.x, q.y) for q in initial_points(_many_dataset(), seed=7)}
    again = {(q.instance_id, q.x, q.y) for q in initial_points(_many_dataset(), seed=7)}
    reversed_order = {(q.instance_id, q.x, q.y) for q in initial_points(_many_dataset(order=-1), seed=7)}
    other = {(q.instance_id, q.x, q.y) for q in initial_points(_many_dataset(), seed=8)}
    assert first == again == reversed_order
    assert len(first) == 30
    # Boxes hold ~300 pixels each: a different seed moving fewer than half of 30 points would be a bug.
    assert len(first - other) > 15


def test_initial_points_skip_crowd_and_refuse_bad_arguments() -> None:
    queries = initial_points(_small_dataset(), seed=0)
    assert sorted(q.instance_id for q in queries) == [10, 11, 12]
    with pytest.raises(ValueError, match="seed must be a non-negative"):
        initial_points(_small_dataset(), seed=-1)
    with pytest.raises(ValueError, match="k .* at least 1"):
        initial_points(_small_dataset(), seed=0, k=0)


def test_initial_answers_are_step0_random_and_read_the_mask() -> None:
    ds = _dataset([ImageRecord(1, "a.png", W, H, _small_dataset().images[0].instances[:2])])
    oracle = MaskOracle(ds)
    answers = initial_answers(ds, oracle, seed=3)
    assert {a.instance_id for a in answers} == {10, 11}
    masks = {10: oracle.mask(10), 11: oracle.mask(11)}
    for a in answers:
        assert (a.step, a.strategy, a.annotator) == (0, "random", "oracle")
        assert a.label == masks[a.instance_id][a.y, a.x]
