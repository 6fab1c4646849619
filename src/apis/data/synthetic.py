"""The built-in synthetic dataset: textured, occluding, non-convex shapes in COCO format.

It exists so the whole active loop can run on a CPU in minutes and still show what the method is
about: shapes are non-convex (a random point in the box often lands off the object, so one point says
little), instances overlap (the stored mask is the *visible* part), and colour alone does not give
the mask (background and objects are both textured, from overlapping colour distributions).

Layout on disk, for each split ``s`` in ``train`` and ``val``::

    out_dir/s/annotations.json      COCO instances; ``file_name`` is relative to this folder
    out_dir/s/images/000001.png     RGB uint8, ``image_size`` × ``image_size`` pixels

Frames follow :mod:`apis.geometry`: pixel (column ``i``, row ``j``) covers ``[i, i+1) × [j, j+1)``
and shapes are drawn by testing pixel centres ``(i + 0.5, j + 0.5)``. ``bbox`` is the tight
``[x, y, w, h]`` box of the visible mask in those pixel units and ``area`` its pixel count.

Every image is drawn from its own generator, ``np.random.default_rng([seed, split, index])``, so the
same config gives byte-identical files and an image does not depend on how many came before it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from apis.atomic import write_text_atomic
from apis.data.records import encode_mask

GENERATOR = "apis.data.synthetic"
# Bump when the drawing changes, so an existing dataset made by older code is regenerated.
GENERATOR_VERSION = 1

CATEGORIES: tuple[str, ...] = ("ring", "crescent", "star", "l_shape", "c_shape", "bar")  # ids 1..6
SPLITS: tuple[str, ...] = ("train", "val")

# Instances smaller than this (pixels), or with less than this share of their full in-image area left
# visible, are dropped: nobody could annotate them and they would only add label noise.
MIN_VISIBLE_PIXELS = 12
MIN_VISIBLE_FRACTION = 0.25
# Target full areas in pixels at REFERENCE_SIZE, scaled by (image_size / REFERENCE_SIZE)². COCO's
# "large" (>= 96² visible pixels) is over a third of a 160 px image, so at most one fits: an image
# gets one large backdrop instance (painted first) with BACKDROP_PROBABILITY, and every other
# instance is small or medium. At 160 px this keeps about 35/50/15% small/medium/large instances
# (default config); with 4.5 instances per image on average and one large at most, 22% is the ceiling.
REFERENCE_SIZE = 160
SMALL_AREA = (40.0, 1024.0)  # COCO small: < 32²
MEDIUM_AREA = (1024.0, 9216.0)  # COCO medium: < 96²
LARGE_AREA = (14000.0, 26000.0)  # in-image area before occlusion; objects in front eat into it
SMALL_PROBABILITY = 0.36  # among the instances that are not the backdrop
BACKDROP_PROBABILITY = 0.9
# Chance that an object's base colour is re-drawn until it stands out from what it covers; the rest
# are deliberately low-contrast so edges must be learnt from texture as well as colour.
CONTRAST_PROBABILITY = 0.85
MIN_CONTRAST = 0.25  # Euclidean distance in RGB, channels in [0, 1]
LAYOUT_RETRIES = 50

Progress = Callable[[int, int], None]


@dataclass
class SyntheticConfig:
    """What to generate. ``image_size`` is the side of the square images in pixels."""

    seed: int = 0
    image_size: int = 160
    train_images: int = 240
    val_images: int = 120
    min_instances: int = 1
    max_instances: int = 8
    mask_format: str = "rle"  # "rle" (compressed, counts as str) or "polygon"

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")
        if self.train_images < 0 or self.val_images < 0:
            raise ValueError("train_images and val_images must not be negative")
        if not 1 <= self.min_instances <= self.max_instances:
            raise ValueError(
                f"need 1 <= min_instances <= max_instances, got {self.min_instances}, {self.max_instances}"
            )
        if self.mask_format not in ("rle", "polygon"):
            raise ValueError(f"mask_format must be 'rle' or 'polygon', got {self.mask_format!r}")

    def images_in(self, split: str) -> int:
        return {"train": self.train_images, "val": self.val_images}[split]


# --------------------------------------------------------------------------------------------------
# Public entry point


def generate(out_dir: Path, config: SyntheticConfig, progress: Progress | None = None) -> dict[str, Path]:
    """Write the dataset under ``out_dir`` and return ``{"train": json path, "val": json path}``.

    Idempotent: when both splits are already there, complete and made with the same config and
    generator version, nothing is written. Otherwise the old json files are removed first, so a run
    killed half-way never leaves a json that claims images it did not finish; each json is written
    last and atomically, which makes its presence the mark of a complete split.
    """
    out_dir = Path(out_dir)
    paths = {split: out_dir / split / "annotations.json" for split in SPLITS}
    total = config.train_images + config.val_images
    if all(_is_complete(paths[split], config) for split in SPLITS):
        if progress is not None:
            progress(total, total)
        return paths

    for json_path in paths.values():
        json_path.unlink(missing_ok=True)
    done = 0
    for split_index, split in enumerate(SPLITS):
        json_path = paths[split]
        image_dir = json_path.parent / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(config.images_in(split)):
            image_id = index + 1
            rng = np.random.default_rng([config.seed, split_index, index])
            pixels, masks, labels = draw_image(rng, config)
            file_name = f"images/{image_id:06d}.png"
            # Low compression: noisy images barely shrink at higher levels, and writing stays fast.
            Image.fromarray(pixels).save(json_path.parent / file_name, format="PNG", compress_level=1)
            images.append({"id": image_id, "file_name": file_name,
                           "width": config.image_size, "height": config.image_size})
            for mask, label in zip(masks, labels, strict=True):
                annotations.append(_annotation(len(annotations) + 1, image_id, label, mask, config))
            done += 1
            if progress is not None:
                progress(done, total)
        _remove_stale_images(image_dir, {im["file_name"] for im in images})
        coco = {
            "info": _info(config, split),
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CATEGORIES)],
        }
        write_text_atomic(json.dumps(coco, separators=(",", ":")), json_path)
    return paths


def _info(config: SyntheticConfig, split: str) -> dict:
    return {
        "description": "apis synthetic shapes: textured, occluding, non-convex instances",
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "split": split,
        "config": asdict(config),
    }


def _is_complete(json_path: Path, config: SyntheticConfig) -> bool:
    """True when ``json_path`` was written by this generator version with ``config`` and its images exist."""
    try:
        coco = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return False
    info = coco.get("info", {})
    if (info.get("generator"), info.get("generator_version"), info.get("config")) != (
        GENERATOR, GENERATOR_VERSION, asdict(config)
    ):
        return False
    return all((json_path.parent / im["file_name"]).is_file() for im in coco.get("images", []))


def _remove_stale_images(image_dir: Path, keep: set[str]) -> None:
    """Delete PNGs left by an earlier, larger config so the folder holds exactly the listed images."""
    for path in image_dir.glob("*.png"):
        if f"images/{path.name}" not in keep:
            path.unlink()


def _annotation(
    ann_id: int, image_id: int, category_id: int, mask: np.ndarray, config: SyntheticConfig
) -> dict:
    """COCO annotation of a visible H×W boolean mask; bbox is its tight box in pixel units."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    segmentation = encode_mask(mask) if config.mask_format == "rle" else mask_to_polygons(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float(mask.sum()),
        "segmentation": segmentation,
        "iscrowd": 0,
    }


# --------------------------------------------------------------------------------------------------
# One image


@dataclass
class _Shape:
    """A sampled instance before painting: its category (1-based) and full boolean mask (H×W)."""

    category_id: int
    mask: np.ndarray
    depth: float  # painting order key: lower is painted first (further back)


def draw_image(
    rng: np.random.Generator, config: SyntheticConfig
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Draw one image. Returns (H×W×3 uint8 pixels, visible H×W boolean masks, category ids).

    Masks are listed back to front; they are disjoint because a later (front) instance owns every
    pixel it covers.
    """
    size = config.image_size
    shapes: list[_Shape] = []
    for _ in range(LAYOUT_RETRIES):
        shapes = _visible_layout(rng, config)
        if len(shapes) >= config.min_instances:
            break
    else:
        raise ValueError(
            f"could not place {config.min_instances} visible instances in a {size}px image after "
            f"{LAYOUT_RETRIES} tries; lower min_instances or raise image_size"
        )
    canvas = _background(rng, size)
    visible = _visible_masks([s.mask for s in shapes])
    for shape in shapes:
        _paint_object(rng, canvas, shape.mask)
    # One noise layer over everything, so noise level says nothing about object versus background.
    canvas += rng.standard_normal(size=canvas.shape, dtype=np.float32) * rng.uniform(0.02, 0.05)
    pixels = np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)
    return pixels, visible, [s.category_id for s in shapes]


def _visible_layout(rng: np.random.Generator, config: SyntheticConfig) -> list[_Shape]:
    """Sample instances, order them back to front and drop those occlusion leaves (nearly) invisible.

    Dropping an instance only uncovers the ones behind it, so one pass keeps every survivor valid.
    """
    size = config.image_size
    count = int(rng.integers(config.min_instances, config.max_instances + 1))
    backdrop = rng.uniform() < BACKDROP_PROBABILITY
    shapes = [_sample_shape(rng, size, large=backdrop and i == 0) for i in range(count)]
    shapes = [s for s in shapes if s.mask.sum() >= MIN_VISIBLE_PIXELS]
    shapes.sort(key=lambda s: s.depth)
    visible = _visible_masks([s.mask for s in shapes])
    kept = []
    for shape, vis in zip(shapes, visible, strict=True):
        shown = int(vis.sum())
        if shown >= MIN_VISIBLE_PIXELS and shown >= MIN_VISIBLE_FRACTION * shape.mask.sum():
            kept.append(shape)
    return kept


def _visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Back-to-front full masks → visible masks: each pixel belongs to the last mask covering it."""
    if not masks:
        return []
    stack = np.stack(masks)  # N×H×W
    # Index of the front-most covering mask per pixel: argmax over the reversed stack finds it.
    front = len(masks) - 1 - np.argmax(stack[::-1], axis=0)
    covered = stack.any(axis=0)
    return [(front == i) & covered for i in range(len(masks))]


# --------------------------------------------------------------------------------------------------
# Shapes: boolean masks from coordinate grids, in a local unit frame where the shape fits [-1, 1]².


def _unit_ring(u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    rho = np.hypot(u, v)
    return (rho <= 1.0) & (rho >= p["inner"])


def _unit_crescent(u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    return (np.hypot(u, v) <= 1.0) & (np.hypot(u - p["offset"], v) > p["bite"])


def _unit_star(u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    phi = np.arctan2(v, u) + p["phase"]
    # Triangle wave over angle: 1 at the tips, 0 between them; the radius follows it linearly.
    t = np.abs(((phi * p["points"] / (2 * np.pi)) % 1.0) - 0.5) * 2.0
    return np.hypot(u, v) <= p["inner"] + (1.0 - p["inner"]) * t


def _unit_l_shape(u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    return inside & ((u <= -1.0 + 2.0 * p["thickness"]) | (v >= 1.0 - 2.0 * p["thickness"]))


def _unit_c_shape(u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    # An annulus with a gap centred on the +u axis.
    return _unit_ring(u, v, p) & (np.abs(np.arctan2(v, u)) >= p["gap"] / 2.0)


def _unit_bar(u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= p["width"])


_UNIT_SHAPES = (_unit_ring, _unit_crescent, _unit_star, _unit_l_shape, _unit_c_shape, _unit_bar)


def _shape_params(rng: np.random.Generator, category_id: int, bold: bool = False) -> dict:
    """Random proportions of a shape in its unit frame (category ids as in :data:`CATEGORIES`).

    ``bold`` shapes have thicker strokes and smaller holes, so a backdrop that fits the image can still
    cover COCO's "large" area.
    """
    name = CATEGORIES[category_id - 1]
    if name == "ring":
        return {"inner": rng.uniform(*((0.3, 0.5) if bold else (0.45, 0.7)))}
    if name == "crescent":
        offset = rng.uniform(*((0.45, 0.6) if bold else (0.3, 0.55)))
        # bite + offset > 1 keeps the bite open to the outside, so it stays a crescent and not a ring.
        low, high = (0.6, 0.75) if bold else (0.7, 0.9)
        return {"offset": offset, "bite": rng.uniform(max(low, 1.1 - offset), max(high, 1.15 - offset))}
    if name == "star":
        inner = rng.uniform(*((0.5, 0.65) if bold else (0.35, 0.55)))
        return {"points": int(rng.integers(5, 8)), "inner": inner, "phase": rng.uniform(0, 2 * np.pi)}
    if name == "l_shape":
        return {"thickness": rng.uniform(*((0.38, 0.46) if bold else (0.28, 0.42)))}
    if name == "c_shape":
        return {"inner": rng.uniform(*((0.3, 0.5) if bold else (0.4, 0.62))),
                "gap": np.deg2rad(rng.uniform(*((55, 90) if bold else (70, 120))))}
    return {"width": rng.uniform(0.1, 0.2)}


_UNIT_GRID = (np.arange(48) + 0.5) / 24.0 - 1.0


def _unit_fill(category_id: int, params: dict) -> float:
    """Share of the unit square [-1, 1]² the shape covers (from a 48×48 grid): converts area to scale."""
    v, u = np.meshgrid(_UNIT_GRID, _UNIT_GRID, indexing="ij")
    return max(float(_UNIT_SHAPES[category_id - 1](u, v, params).mean()), 1e-3)


def _sample_shape(rng: np.random.Generator, size: int, large: bool) -> _Shape:
    """One random instance: category, proportions, target area, rotation, aspect and position.

    A ``large`` instance is a backdrop: centred near the middle, allowed past the image border, and
    always at the back. Bars are never large: a thin bar that long would not fit the image.
    """
    category_id = int(rng.integers(1, len(CATEGORIES) + (0 if large else 1)))
    is_bar = CATEGORIES[category_id - 1] == "bar"
    params = _shape_params(rng, category_id, bold=large)
    area = _sample_area(rng, size, large)
    # Bars are elongated by construction; other shapes get a mild random aspect.
    aspect = 1.0 if is_bar else float(np.exp(rng.uniform(-0.35, 0.35)))
    # Half-extent in pixels so that fill · (2 r)² ≈ area, capped so the shape (mostly) fits the image.
    cap = (0.65 if is_bar else 0.6 if large else 0.5) * size / np.sqrt(aspect)
    radius = min(np.sqrt(area / (4.0 * _unit_fill(category_id, params))), cap)
    if is_bar:
        params["width"] = max(params["width"], 1.2 / radius)  # at least ~2.5 px wide
    margin = 0.4 * size if large else min(0.4 * radius, 0.45 * size)
    cx, cy = rng.uniform(margin, size - margin, size=2)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    mask = _rasterise(category_id, params, size, (cx, cy), radius, aspect, angle)
    # The fill estimate is coarse and the border clips big shapes: grow once towards the target area.
    drawn = int(mask.sum())
    if 0 < drawn < 0.9 * area and radius < cap:
        radius = min(radius * np.sqrt(area / drawn), cap)
        mask = _rasterise(category_id, params, size, (cx, cy), radius, aspect, angle)
    # Mostly bigger things further back, with enough noise that small ones are sometimes occluded too.
    depth = -np.inf if large else -np.log(area) + rng.normal(0.0, 1.0)
    return _Shape(category_id, mask, float(depth))


def _sample_area(rng: np.random.Generator, size: int, large: bool) -> float:
    """Target full area in pixels, log-uniform within the chosen class (see LARGE_AREA and friends)."""
    if large:
        low, high = LARGE_AREA
    else:
        low, high = SMALL_AREA if rng.uniform() < SMALL_PROBABILITY else MEDIUM_AREA
    scale = (size / REFERENCE_SIZE) ** 2
    return float(np.exp(rng.uniform(np.log(low * scale), np.log(high * scale))))


def _rasterise(
    category_id: int, params: dict, size: int, centre: tuple[float, float], radius: float, aspect: float,
    angle: float,
) -> np.ndarray:
    """Boolean size×size mask: pixel centres mapped into the shape's unit frame and tested there.

    The unit frame is the image frame translated to ``centre`` (pixels), rotated by ``angle`` (radians)
    and scaled by ``radius · sqrt(aspect)`` along u and ``radius / sqrt(aspect)`` along v. Only the
    square around the unit square's circumcircle is evaluated, which keeps small shapes cheap.
    """
    half_u, half_v = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    reach = np.hypot(half_u, half_v) + 1.0
    x0, x1 = (int(np.clip(np.floor(centre[0] + k * reach), 0, size)) for k in (-1, 1))
    y0, y1 = (int(np.clip(np.floor(centre[1] + k * reach), 0, size)) for k in (-1, 1))
    mask = np.zeros((size, size), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return mask
    dx = np.arange(x0, x1 + 1) + 0.5 - centre[0]  # pixel centres relative to the shape centre
    dy = np.arange(y0, y1 + 1)[:, None] + 0.5 - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / half_u
    v = (-dx * sin + dy * cos) / half_v
    mask[y0:y1 + 1, x0:x1 + 1] = _UNIT_SHAPES[category_id - 1](u, v, params)[: size - y0, : size - x0]
    return mask


# --------------------------------------------------------------------------------------------------
# Textures. Colours are float RGB in [0, 1]; noise is added once for the whole image at the end.


def _interpolation_matrix(n: int, cells: int) -> np.ndarray:
    """n×(cells+1) linear interpolation weights from a coarse grid of cells+1 knots to n pixel centres."""
    t = (np.arange(n) + 0.5) / n * cells
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    weights = np.zeros((n, cells + 1))
    weights[np.arange(n), i0] = 1.0 - f
    weights[np.arange(n), i0 + 1] = f
    return weights


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    """h×w×channels field in [0, 1]: bilinear interpolation of a (cells+1)² grid of random values."""
    coarse = rng.uniform(0.0, 1.0, size=(channels, cells + 1, cells + 1))
    field = _interpolation_matrix(h, cells) @ coarse @ _interpolation_matrix(w, cells).T  # C×h×w
    return field.transpose(1, 2, 0)


def _pattern(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Scalar float32 pattern in [-1, 1] on the grid ``ys × xs`` (pixel centres): stripes, checker,
    blotches or plain.

    Stripes and checkers are functions of image coordinates, so a pattern continues across a crop.
    Appearance is computed in float32 (an order of magnitude faster for sin); geometry stays float64.
    """
    kind = rng.choice(["stripes", "checker", "blotches", "plain"], p=[0.3, 0.25, 0.3, 0.15])
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(4.0, 14.0)  # pixels
    cos, sin = float(np.cos(angle)) / period, float(np.sin(angle)) / period
    x, y = xs.astype(np.float32)[None, :], ys.astype(np.float32)[:, None]
    if kind == "stripes":
        return np.sin((x * cos + y * sin) * float(2.0 * np.pi))
    if kind == "checker":
        return ((np.floor(x * cos + y * sin) + np.floor(y * cos - x * sin)) % 2.0) * 2.0 - 1.0
    if kind == "blotches":
        cells = max(1, round(max(len(xs), len(ys)) / period))
        return _smooth_field(rng, len(ys), len(xs), cells, 1)[:, :, 0].astype(np.float32) * 2.0 - 1.0
    return np.zeros((len(ys), len(xs)), dtype=np.float32)


def _textured(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, base: np.ndarray) -> np.ndarray:
    """h×w×3 float32 texture around ``base`` colour(s): base + pattern along a random colour direction."""
    direction = rng.normal(size=3)
    direction = 0.5 * direction / np.linalg.norm(direction) + 0.5 / np.sqrt(3)  # mostly brightness
    amplitude = rng.uniform(0.05, 0.16)
    stroke = (amplitude * direction).astype(np.float32)
    return base.astype(np.float32) + _pattern(rng, xs, ys)[:, :, None] * stroke


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random colour field with a pattern over it: colour varies across the image like objects do."""
    field = 0.1 + 0.8 * _smooth_field(rng, size, size, int(rng.integers(2, 5)), 3)
    centres = np.arange(size) + 0.5
    return _textured(rng, centres, centres, field)


def _paint_object(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` (full, not visible: later objects paint over it) with a textured colour in place.

    Only the mask's bounding box is textured, which keeps small objects cheap.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop = mask[window]
    below = canvas[window][crop].mean(axis=0)
    want_contrast = rng.uniform() < CONTRAST_PROBABILITY
    base = rng.uniform(0.1, 0.9, size=3)
    for _ in range(20):
        if not want_contrast or np.linalg.norm(base - below) >= MIN_CONTRAST:
            break
        base = rng.uniform(0.1, 0.9, size=3)
    # A gentle shading gradient inside the object, so its colour is not constant either.
    shade = _smooth_field(rng, crop.shape[0], crop.shape[1], 2, 3) * 0.16 - 0.08
    xs = cols[0] + np.arange(crop.shape[1]) + 0.5  # pixel centres of the window, image frame
    ys = rows[0] + np.arange(crop.shape[0]) + 0.5
    texture = _textured(rng, xs, ys, base + shade)
    canvas[window][crop] = texture[crop]


# --------------------------------------------------------------------------------------------------
# Masks as COCO polygons


_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])  # (dx, dy) of directions east, south, west, north


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """H×W boolean mask → COCO polygons along pixel edges that rasterise back to the same mask.

    Vertices are pixel corners (integers, x = column, y = row). Each outer boundary becomes one
    polygon; the boundary of each hole is appended to the outer polygon holding it, joined by a
    segment walked there and back. pycocotools fills a polygon by the even-odd rule, so the hole stays
    empty and the doubled segment cancels out: decoding gives the mask back exactly.
    """
    loops = _boundary_loops(mask)
    outers = [lp for lp in loops if _signed_area(lp) > 0]
    holes = [lp for lp in loops if _signed_area(lp) < 0]
    polygons = [[lp] for lp in outers]
    areas = [_signed_area(lp) for lp in outers]
    for hole in holes:
        probe = _inner_probe(hole)
        holders = [i for i, lp in enumerate(outers) if _contains(lp, probe)]
        if not holders:  # cannot happen for a traced mask; keep the data rather than fail
            continue
        polygons[min(holders, key=lambda i: areas[i])].append(hole)
    out = []
    for outer, *inner in polygons:
        # outer, back to its start, then each hole walked round and left the way it was entered.
        chain = [outer]
        for hole in inner:
            chain += [outer[:1], hole, hole[:1]]
        out.append(np.vstack(chain).astype(float).ravel().tolist())
    return out


def _boundary_loops(mask: np.ndarray) -> list[np.ndarray]:
    """Closed loops of pixel-corner vertices (n×2 int, x, y), object on the right when walking.

    Edges are found with array operations; following them is a walk over boundary edges (not pixels).
    Where two object pixels touch only at a corner the walk turns towards the current pixel, so
    diagonal neighbours end up in separate loops.
    """
    h, w = mask.shape
    padded = np.pad(mask.astype(bool), 1)
    inside = padded[1:-1, 1:-1]
    starts, dirs = [], []
    # (neighbour offset (dy, dx), direction, start corner offset (dx, dy)) for each side of a pixel.
    sides = (((-1, 0), 0, (0, 0)), ((0, 1), 1, (1, 0)), ((1, 0), 2, (1, 1)), ((0, -1), 3, (0, 1)))
    for (ny, nx), direction, (ox, oy) in sides:
        neighbour = padded[1 + ny:1 + ny + h, 1 + nx:1 + nx + w]
        rows, cols = np.nonzero(inside & ~neighbour)
        starts.append(np.stack([cols + ox, rows + oy], axis=1))
        dirs.append(np.full(len(rows), direction))
    start = np.concatenate(starts)
    direction = np.concatenate(dirs)
    if len(start) == 0:
        return []
    end = start + _STEPS[direction]
    # Lookup of the edge leaving each corner in each direction (-1: none).
    table = np.full(((h + 1) * (w + 1), 4), -1)
    table[start[:, 1] * (w + 1) + start[:, 0], direction] = np.arange(len(start))
    end_key = end[:, 1] * (w + 1) + end[:, 0]
    nxt = np.full(len(start), -1)
    for turn in (3, 0, 1):  # last assignment wins: right turn (+1) over straight over left (+3)
        candidate = table[end_key, (direction + turn) % 4]
        nxt = np.where(candidate >= 0, candidate, nxt)
    return _follow(start, direction, nxt)


def _follow(start: np.ndarray, direction: np.ndarray, nxt: np.ndarray) -> list[np.ndarray]:
    """Cycles of the edge successor map, keeping only corners where the direction changes."""
    used = np.zeros(len(start), dtype=bool)
    nxt_list = nxt.tolist()
    loops = []
    for first in range(len(start)):
        if used[first]:
            continue
        cycle = [first]
        e = nxt_list[first]
        while e != first:
            cycle.append(e)
            e = nxt_list[e]
        idx = np.array(cycle)
        used[idx] = True
        turns = direction[idx] != direction[np.roll(idx, 1)]
        loops.append(start[idx[turns]])
    return loops


def _signed_area(loop: np.ndarray) -> float:
    """Shoelace area; positive for outer boundaries as traced (clockwise on screen, y pointing down)."""
    x, y = loop[:, 0].astype(float), loop[:, 1].astype(float)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _inner_probe(hole: np.ndarray) -> np.ndarray:
    """Centre of an object pixel next to the hole's first edge (object is on the walker's right)."""
    a, b = hole[0].astype(float), hole[1].astype(float)
    d = (b - a) / np.abs(b - a).sum()
    return a + 0.5 * d + 0.5 * np.array([-d[1], d[0]])


def _contains(loop: np.ndarray, point: np.ndarray) -> bool:
    """Even-odd ray casting; ``point`` is a pixel centre, so it never lies on the corner-grid boundary."""
    x0, y0 = loop[:, 0], loop[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > point[1]) != (y1 > point[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (point[1] - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.sum(crosses & (x_at > point[0])) % 2)
