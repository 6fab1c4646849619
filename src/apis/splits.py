"""The train and validation splits a run config names, loaded (and the built-in set built when it names none).

Every command that trains or compares starts here, so that the data paths a run writes into its
config.yaml are absolute and find the same files from any working directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from apis.config import ConfigError, RunConfig
from apis.data.coco import load_coco
from apis.data.records import CocoDataset
from apis.data.synthetic import SyntheticConfig, generate


def run_splits(cfg: RunConfig, root: Path, progress: Callable[[int, int], None] | None = None,
               ) -> tuple[RunConfig, CocoDataset, CocoDataset]:
    """``(cfg, train, val)``: the splits of ``cfg.data``, with the config's data paths made absolute.

    An empty ``data.train`` builds the built-in synthetic set under ``root/data`` (deterministic per
    ``data.synthetic_seed``; ``progress(done, total)`` per image). Raises :class:`ConfigError` when
    ``data.val`` is missing or the splits' categories differ, and
    :class:`apis.data.coco.DatasetError` for a bad file.
    """
    d = cfg.data
    train, val = d.train, d.val
    if not train:
        syn = SyntheticConfig(seed=d.synthetic_seed, image_size=d.synthetic_image_size,
                              train_images=d.synthetic_train_images, val_images=d.synthetic_val_images)
        paths = generate(Path(root) / "data", syn, progress=progress)
        train, val = str(paths["train"]), str(paths["val"])
    if not val:
        raise ConfigError("data.val is empty: name a validation COCO json (data: {val: ...}) in the config")
    train_set, val_set = load_coco(Path(train)), load_coco(Path(val))
    if [(c.id, c.name) for c in train_set.categories] != [(c.id, c.name) for c in val_set.categories]:
        raise ConfigError(f"{val_set.json_path}: its categories differ from {train_set.json_path}'s (ids, names or "
                          "order); both splits must list the same categories in the same order")
    paths = {"train": str(train_set.json_path.resolve()), "val": str(val_set.json_path.resolve())}
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **paths)), train_set, val_set
