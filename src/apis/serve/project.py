"""A labelling project on disk: ``PROJECT/apis.sqlite`` (the store) and ``PROJECT/config.yaml``, whose
``data.train`` names the COCO json of the images people are asked about."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apis.data.records import CocoDataset, ImageRecord
from apis.store import DB_NAME


class ProjectError(ValueError):
    """A folder that is not a usable project; the message names what is missing and the fix."""


@dataclass
class Project:
    """Where a project's answers are stored, and the dataset its questions are about."""

    root: Path
    db: Path
    dataset: CocoDataset

    def __post_init__(self) -> None:
        self._images = self.dataset.image_by_id()
        self._categories = self.dataset.category_names

    @classmethod
    def load(cls, root: Path | str) -> Project:
        """Read ``root/config.yaml`` and its train json (image files are checked when served, not here)."""
        from apis.config import ConfigError, load_config
        from apis.data.coco import DatasetError, load_coco

        root = Path(root)
        db, config = root / DB_NAME, root / "config.yaml"
        if not db.exists():
            raise ProjectError(f"{root}: no {DB_NAME} here; create the project with `apis init {root}`")
        if not config.exists():
            raise ProjectError(f"{root}: no config.yaml here; it must name the train json (data: {{train: ...}})")
        try:
            cfg = load_config(config)
        except ConfigError as err:
            raise ProjectError(str(err)) from None
        if not cfg.data.train:
            raise ProjectError(f"{config}: data.train is empty; name the COCO json the questions are about")
        train = Path(cfg.data.train)
        if not train.is_absolute():
            train = (root / train) if (root / train).exists() else train
        try:
            dataset = load_coco(train, check_images=False)
        except DatasetError as err:
            raise ProjectError(f"{config}: data.train: {err}") from None
        return cls(root, db, dataset)

    def image(self, image_id: int) -> ImageRecord | None:
        return self._images.get(image_id)

    def image_file(self, image_id: int) -> Path | None:
        """The file of image ``image_id`` of the dataset (never a path a client named), or None."""
        image = self._images.get(image_id)
        return None if image is None else self.dataset.image_path(image)

    def category_name(self, category_id: int) -> str:
        return self._categories.get(category_id, f"category {category_id}")
