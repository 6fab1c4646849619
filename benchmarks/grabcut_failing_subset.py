"""A development set made into one where GrabCut's masks pass the box check almost nowhere.

Where GrabCut's masks of the boxes fail the box check (:func:`apis.mask_checks.check_mask`) on nearly every object,
nothing can judge what M0 learns from besides the shape (:mod:`apis.box_start`: under
:data:`apis.mask_checks.MIN_CROSS_CHECKED` passing cuts the pairwise term has no judge). The held-out photos were
such a set (7 passing cuts); none of the development sets is (Penn-Fudan 47 of 333, DSB 922). This writes a
subset of a train split that is: it drops the images holding an object whose cut passes, keeping such an image, in
file order, while its passing cuts still fit under ``--keep`` (first fit, so the subset is fixed by the data alone).
Every remaining image keeps all its objects, so nothing is taught as background that is not.

    python benchmarks/grabcut_failing_subset.py data/pennfudan/train/annotations.json \\
        data/pennfudan/train/annotations-nocut.json --cache runs/real-pf-j/cache --keep 7

The output json sits beside the input (its ``file_name`` paths stay valid); GrabCut's masks are read from
``--cache`` where a run already cut them (else cut here, about 60 ms an object).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", type=Path, help="COCO json of the train split (with masks, for the benchmarks)")
    ap.add_argument("out", type=Path, help="where to write the subset's json (beside the input)")
    ap.add_argument("--cache", type=Path, default=None, help="a run's cache folder (GrabCut's masks)")
    ap.add_argument("--keep", type=int, default=7, help="objects whose cut passes the box check to leave in")
    args = ap.parse_args(argv)
    if args.out.resolve().parent != args.train.resolve().parent:
        print(f"{args.out}: write the subset beside {args.train}, so its images' paths stay valid", file=sys.stderr)
        return 2
    if args.out.resolve() == args.train.resolve():
        print(f"{args.out}: that is the input; name another file beside it", file=sys.stderr)
        return 2

    from apis.box_start import pairwise_judge
    from apis.data.coco import load_coco

    dataset = load_coco(args.train)
    # The judge's own cuts, so the subset's count of passing cuts is the one the pairwise term's judge sees.
    passing = set(pairwise_judge(args.cache, dataset, None).cuts)
    kept, drop = 0, set()
    for im in dataset.images:
        n = sum(a.id in passing for a in im.pool)
        if n == 0:
            continue
        if kept + n <= args.keep:
            kept += n
        else:
            drop.add(im.id)
    raw = json.loads(args.train.read_text())
    raw["images"] = [im for im in raw["images"] if im["id"] not in drop]
    raw["annotations"] = [a for a in raw["annotations"] if a["image_id"] not in drop]
    args.out.write_text(json.dumps(raw))
    objects = sum(len(im.pool) for im in dataset.images if im.id not in drop)
    print(f"{args.train}: {len(passing)} of {sum(len(im.pool) for im in dataset.images)} cuts pass the box check; "
          f"wrote {args.out}: {len(raw['images'])} images, {objects} pool objects, {kept} passing cuts")
    if kept < args.keep:
        print(f"(under --keep {args.keep}: no image's passing cuts fitted the rest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
