"""Several models of the same architecture trained with different seeds: the paper's prediction set "M".

An :class:`Ensemble` answers the two calls selection and export make of a model: ``prediction_sets``
concatenates every member's maps per instance (so K grows with the members), and ``__call__`` gives the
first member's detections, the run's reported model. Members are trained in separate lineages by
:mod:`apis.loop` (member j fine-tunes from member j of the previous step), so their disagreement is the
spread over training seeds that set M measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Ensemble:
    """``members[0]`` is the main model; all must share the test size (``cfg.test_min_size``)."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(members)}")
        sizes = {m.cfg.test_min_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members test at different sizes {sorted(sizes)}; train them with one config")
        self.members = list(members)
        self.cfg = self.members[0].cfg

    def __len__(self) -> int:
        return len(self.members)

    def eval(self) -> Ensemble:
        for m in self.members:
            m.eval()
        return self

    def __call__(self, images: list[Tensor]) -> list[dict]:
        return self.members[0](images)

    @torch.no_grad()
    def prediction_sets(self, images: list[Tensor], targets: list[dict], min_size: int | None = None,
                        **kwargs) -> list[list[Tensor]]:
        """Per image, per instance, the members' K_j×h×w maps stacked to (ΣK_j)×h×w over Ω."""
        per_member = [m.prediction_sets(images, targets, min_size=min_size, **kwargs) for m in self.members]
        return [[torch.cat([sets[b][g] for sets in per_member], 0) for g in range(len(per_member[0][b]))]
                for b in range(len(per_member[0]))]
