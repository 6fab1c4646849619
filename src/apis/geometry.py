"""Coordinate conventions, in one place.

Frames and units (README "Conventions"):

* An image is H×W pixels. Pixel (column ``i``, row ``j``) covers the square
  ``[i, i+1) × [j, j+1)``; its centre is ``(i + 0.5, j + 0.5)``.
* Boxes are ``xyxy`` floats in pixel units of the same frame (COCO files store
  ``[x, y, w, h]``; :func:`xywh_to_xyxy` converts).
* A *point* is an integer pixel ``(x, y) = (column, row)`` of the *original*
  image; its answer is ``mask[y, x]``.
* Ω of a box is the set of pixels whose centres lie in ``[x0, x1) × [y0, y1)``.
* Models read logits at a point's centre by bilinear interpolation; with
  ``grid_sample(align_corners=False)`` a map of stride ``s`` covers the input
  frame exactly, so the centre ``c`` of a pixel maps to ``2 c / (s · size) - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# The COCO box conversions live with the records, torch-free, so reading a COCO file never loads torch.
from apis.data.records import xywh_to_xyxy, xyxy_to_xywh  # noqa: F401


@dataclass(frozen=True)
class PixelWindow:
    """A half-open integer window of pixels: columns ``[x0, x1)``, rows ``[y0, y1)``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def contains(self, x: int, y: int) -> bool:
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1


def omega(box: tuple[float, float, float, float], width: int, height: int) -> PixelWindow:
    """Pixels whose centres lie inside ``box`` (xyxy), clipped to a ``width``×``height`` image.

    Column ``i`` is in Ω when ``x0 <= i + 0.5 < x1``, i.e. ``ceil(x0 - 0.5) <= i <= ceil(x1 - 0.5) - 1``.
    A box too thin to contain any pixel centre falls back to the single pixel holding the box centre,
    so every instance has at least one pixel that can be asked about.
    """
    x0, y0, x1, y1 = box
    win = PixelWindow(
        max(0, math.ceil(x0 - 0.5)),
        max(0, math.ceil(y0 - 0.5)),
        min(width, math.ceil(x1 - 0.5)),
        min(height, math.ceil(y1 - 0.5)),
    )
    if not win.empty:
        return win
    cx = min(max(int(math.floor((x0 + x1) / 2)), 0), width - 1)
    cy = min(max(int(math.floor((y0 + y1) / 2)), 0), height - 1)
    return PixelWindow(cx, cy, cx + 1, cy + 1)


def ellipse_radius_sq(box: tuple[float, float, float, float], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """ρ² of the centres of pixels (``xs``, ``ys``: integer columns and rows in original pixels, broadcast together)
    about ``box`` (xyxy, original pixels): ((x + ½ − cx)/rx)² + ((y + ½ − cy)/ry)², 0 at its centre and 1 on the
    ellipse inscribed in it (radii of at least 1e-6 px, so a box of zero width is a line)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = max((x1 - x0) / 2, 1e-6), max((y1 - y0) / 2, 1e-6)
    return ((np.asarray(ys) + 0.5 - cy) / ry) ** 2 + ((np.asarray(xs) + 0.5 - cx) / rx) ** 2


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror N×4 xyxy boxes in an image ``width`` pixels wide: ``[x0, x1)`` becomes ``[W − x1, W − x0)``."""
    out = boxes.clone()
    out[:, [0, 2]] = width - boxes[:, [2, 0]]
    return out


def hflip_window(window: PixelWindow, width: int) -> PixelWindow:
    """Mirror a pixel window: column ``i`` becomes ``W − 1 − i``."""
    return PixelWindow(width - window.x1, window.y0, width - window.x0, window.y1)


def pixel_centres(window: PixelWindow) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of the pixels of ``window``: two float tensors of shape (h,) and (w,) (rows, columns)."""
    ys = torch.arange(window.y0, window.y1, dtype=torch.float32) + 0.5
    xs = torch.arange(window.x0, window.x1, dtype=torch.float32) + 0.5
    return ys, xs


def sample_grid(
    maps: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, frame_size: tuple[int, int]
) -> torch.Tensor:
    """Bilinearly sample ``maps`` on the grid ``ys × xs`` given in a frame of ``frame_size`` = (H, W).

    ``maps`` is N×C×h×w and covers the frame exactly (stride ``H / h``); ``xs`` (w',) and ``ys`` (h',)
    are continuous coordinates in that frame. Returns N×C×h'×w'. Outside the frame values are
    replicated from the border.
    """
    H, W = frame_size
    gx = (2.0 * xs / W - 1.0).to(maps)
    gy = (2.0 * ys / H - 1.0).to(maps)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)  # h'×w'×2 as (x, y)
    grid = grid.unsqueeze(0).expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_points(maps: torch.Tensor, points: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample ``maps`` (N×h×w) at continuous ``points`` (N×P×2, (x, y) in a frame of
    ``frame_size`` = (H, W)). Returns N×P."""
    H, W = frame_size
    scale = points.new_tensor([2.0 / W, 2.0 / H])
    grid = (points * scale - 1.0).unsqueeze(1)  # N×1×P×2
    out = F.grid_sample(maps.unsqueeze(1), grid.to(maps), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[:, 0, 0, :]
