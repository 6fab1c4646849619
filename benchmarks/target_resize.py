"""Cost of moving a training image's mask targets into the model's input frame, per image and per call.

    python benchmarks/target_resize.py
    python benchmarks/target_resize.py --repeats 50 --instances 100

Every training iteration resizes each image's full-image instance masks (G×H×W uint8) and, where pseudo masks
are weighed by band, their pixel weights (the same shape) to the input size, then pools them to the mask head's
stride (:func:`apis.models.transform.targets_to_input_frame`). Until 2026-12-08 this converted both stacks to
float at full resolution (``F.interpolate`` of ``stack.float()``); :func:`apis.models.transform.resize_bilinear`
gathers only the rows the bilinear taps read where the rows shrink threefold or more, and calls the same
``F.interpolate`` otherwise. For the shapes of the development sets at the tiny
preset's training sizes, this prints the milliseconds of both for masks and weights together, the speed-up and
the largest difference between their outputs (0 where ``F.interpolate`` is used as before; float32 rounding where
rows are gathered, as the taps' weights are not combined in the order of PyTorch's kernel).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from apis.models.transform import resize_bilinear

# (set, original H × W, the tiny preset's training size h × w for it: short side 160 of 128..192, long ≤ 320)
SHAPES = [
    ("built-in", (160, 160), (160, 160)),
    ("built-in", (160, 160), (192, 192)),
    ("DSB 256²", (256, 256), (160, 160)),
    ("DSB 360²", (360, 360), (160, 160)),
    ("DSB 520×696", (520, 696), (160, 214)),
    ("DSB 1024²", (1024, 1024), (160, 160)),
    ("Penn-Fudan", (370, 480), (160, 208)),
]


def before(masks: torch.Tensor, weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    m = F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)
    w = F.interpolate(weights[:, None].float() / 255.0, size=size, mode="bilinear", align_corners=False)
    return torch.cat([m, w])[:, 0]


def after(masks: torch.Tensor, weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.cat([resize_bilinear(masks, size), resize_bilinear(weights, size, unit=255.0)])


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=37, help="objects an image (DSB's mean is 37)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{args.instances} instances an image, masks and weights, best of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'set':<12} {'original':>10} {'input':>9} {'before ms':>10} {'after ms':>9} {'speed-up':>9} "
          f"{'max diff':>9}")
    for name, (h0, w0), size in SHAPES:
        masks = (torch.rand(args.instances, h0, w0) > 0.98).to(torch.uint8)
        weights = (torch.rand(args.instances, h0, w0) * 255).to(torch.uint8)
        t_before = best_ms(lambda m=masks, w=weights, s=size: before(m, w, s), args.repeats)
        t_after = best_ms(lambda m=masks, w=weights, s=size: after(m, w, s), args.repeats)
        diff = (before(masks, weights, size) - after(masks, weights, size)).abs().max().item()
        print(f"{name:<12} {f'{h0}×{w0}':>10} {f'{size[0]}×{size[1]}':>9} {t_before:>10.2f} {t_after:>9.2f} "
              f"{t_before / t_after:>8.1f}× {diff:>9.1e}")


if __name__ == "__main__":
    main()
