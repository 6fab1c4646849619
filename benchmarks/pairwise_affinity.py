"""How much of an object BoxInst's pairwise term can reach: the share of neighbouring mask cells whose
colour similarity passes BoxInst's threshold, inside the boxes and inside the objects.

    python benchmarks/pairwise_affinity.py                       # the built-in set
    python benchmarks/pairwise_affinity.py --train my/train.json --images 200

BoxInst spreads a label only along edges between similar colours (exp(−‖ΔLAB‖/2) ≥ 0.3 between cells
two apart on the stride-4 grid, as ``apis.models.losses.colour_affinity``); where few edges inside an
object pass, its projection term alone shapes the mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from apis.data.coco import load_coco
from apis.data.loader import image_tensor
from apis.data.synthetic import SyntheticConfig, generate
from apis.models.losses import _neighbours, colour_affinity

STRIDE, DILATION, THRESHOLD = 4, 2, 0.3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="", help="COCO json with masks (default: the built-in set)")
    ap.add_argument("--out", type=Path, default=Path("runs/pairwise"), help="where the built-in set is written")
    ap.add_argument("--images", type=int, default=120)
    args = ap.parse_args()
    ds = load_coco(Path(args.train) if args.train else generate(args.out / "data", SyntheticConfig())["train"])
    n = {"box": 0, "box_pass": 0, "pass_same": 0, "object": 0, "object_pass": 0}
    for im in ds.images[: args.images]:
        passed = colour_affinity(image_tensor(ds, im)[None], STRIDE, DILATION)[0] >= THRESHOLD  # 8×h×w
        h, w = passed.shape[-2:]
        for a in im.pool:
            gt = torch.from_numpy(a.mask(im.height, im.width)).float()[None, None]
            cell = F.pad(F.avg_pool2d(gt, STRIDE), (0, w - gt.shape[-1] // STRIDE, 0, h - gt.shape[-2] // STRIDE))
            obj = cell[0, 0] > 0.5
            nb = _neighbours(obj[None, None].float(), DILATION)[0, 0] > 0.5
            box = torch.zeros_like(obj)
            x0, y0, x1, y1 = (int(round(v / STRIDE)) for v in a.box)
            box[y0:y1, x0:x1] = True
            inb = box[None].expand_as(passed)
            inside = inb & obj[None] & nb
            n["box"] += int(inb.sum())
            n["box_pass"] += int((inb & passed).sum())
            n["pass_same"] += int((inb & passed & (nb == obj[None])).sum())
            n["object"] += int(inside.sum())
            n["object_pass"] += int((inside & passed).sum())
    print(f"{ds.json_path}, {min(args.images, len(ds.images))} images, stride {STRIDE}, dilation {DILATION}, "
          f"threshold {THRESHOLD}")
    print(f"  neighbour pairs inside the boxes that pass:     {n['box_pass'] / n['box']:6.1%}")
    print(f"  of those, both cells on the same side:          {n['pass_same'] / max(1, n['box_pass']):6.1%}")
    print(f"  neighbour pairs inside the objects that pass:   {n['object_pass'] / n['object']:6.1%}")


if __name__ == "__main__":
    main()
