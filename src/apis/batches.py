"""One pass over a dataset's images in batches: loaded, moved to the device, in the dataset's order.

Evaluation (:func:`apis.evaluate.predict`), detection for pseudo boxes (:func:`apis.pseudo_boxes.detect`),
the AFIS scores (:func:`apis.selection.instances.instance_scores`), point selection
(:func:`apis.selection.select.select_points`) and the mask export (:func:`apis.export.export_masks`) all
walk the images this way and differ only in what they do with a batch. The iterator yields one batch at a
time and keeps nothing, so a pass's memory does not grow with the pool (``tests/test_selection_memory.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from apis.data.loader import category_index, image_tensor
from apis.data.records import CocoDataset, ImageRecord
from apis.geometry import omega

Progress = Callable[[int, int], None]


def pool_target(image: ImageRecord, classes: Mapping[int, int]) -> dict:
    """What selection and export tell the model about an image's pool instances: ``boxes`` G×4 float32
    (xyxy, original pixels, CPU), ``labels`` G int64 (contiguous class indices, see
    :func:`apis.data.loader.category_index`) and ``windows``, each instance's Ω (:func:`apis.geometry.omega`)."""
    pool = image.pool
    return {
        "boxes": torch.tensor([a.box for a in pool], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([classes[a.category_id] for a in pool], dtype=torch.long),
        "windows": [omega(a.box, image.width, image.height) for a in pool],
    }


@dataclass
class ImageBatch:
    """Images ``start``..``stop`` (exclusive) of the pass, in its order.

    ``tensors``: 3×H×W float in [0, 1] on the pass's device. ``targets`` (when the pass asked for them):
    :func:`pool_target` of each image, on the CPU; :meth:`model_targets` gives the same with the boxes on
    the device, as the models' ``prediction_sets`` take them.
    """

    images: list[ImageRecord]
    tensors: list[Tensor]
    targets: list[dict] | None
    start: int
    stop: int

    def model_targets(self) -> list[dict]:
        if self.targets is None:
            raise ValueError("this pass was started without targets=True")
        device = self.tensors[0].device if self.tensors else "cpu"
        return [{**t, "boxes": t["boxes"].to(device)} for t in self.targets]


def image_batches(
    dataset: CocoDataset,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    *,
    images: Sequence[ImageRecord] | None = None,
    targets: bool = False,
    shard: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> Iterator[ImageBatch]:
    """Batches of ``images`` (default: every image of ``dataset``), ``batch_size`` at a time.

    ``targets``: attach :func:`pool_target` of each image. ``shard`` = (rank, world): only batches rank,
    rank + world, … of those one process forms (an image meets the same batch on every world size).
    ``progress(done, total)`` is called once the caller has finished with each batch, with ``done`` the
    stop of that batch and ``total`` the number of images of the whole pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    images = list(dataset.images if images is None else images)
    classes = category_index(dataset) if targets else None
    starts = range(0, len(images), batch_size)
    if shard is not None:
        starts = starts[shard[0] :: shard[1]]
    for start in starts:
        chunk = images[start : start + batch_size]
        yield ImageBatch(
            images=chunk,
            tensors=[image_tensor(dataset, im).to(device) for im in chunk],
            targets=None if classes is None else [pool_target(im, classes) for im in chunk],
            start=start,
            stop=min(start + batch_size, len(images)),
        )
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
