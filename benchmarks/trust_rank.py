"""How well the trust scores of ``benchmarks/trust_features.py`` files sort the masks: per step and arm, Spearman's
correlation of ``score`` with the true IoU and the share of the worst tenth (true IoU) that the least trusted tenth
holds, as the loop measures them (:func:`apis.export.trust_rank_correlation`, :func:`apis.export.worst_caught`).

    python benchmarks/trust_rank.py before=runs/real-dsb/trust_before.csv after=runs/real-dsb/trust_features.csv

Each argument is ``LABEL=CSV`` (or a CSV, labelled by its path); one row per file, one column per seed, arm and step,
then the mean over the columns.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np


def spearman(score: np.ndarray, iou: np.ndarray) -> float:
    from apis.export import _ranks  # ties share their mean rank, as the loop's trust_rank_correlation

    return float(np.corrcoef(_ranks(score), _ranks(iou))[0, 1])


def worst_tenth(score: np.ndarray, iou: np.ndarray) -> float:
    """The share of the worst tenth by ``iou`` among the least trusted tenth; ties keep the file's order, as the
    loop keeps the pool's."""
    k = int(len(score) * 0.1)
    least = set(np.argsort(score, kind="stable")[:k].tolist())
    return len(least & set(np.argsort(iou, kind="stable")[:k].tolist())) / k


def read(path: Path) -> dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]:
    """(seed, arm, step) → (scores, true IoUs) in the file's order; reviewed masks are not in such files."""
    cols: dict[tuple[str, str, int], list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            cols[(row["seed"], row["arm"], int(row["step"]))].append((float(row["score"]), float(row["iou"])))
    return {k: tuple(np.array(v) for v in zip(*pairs, strict=True)) for k, pairs in cols.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="LABEL=CSV or CSV")
    args = ap.parse_args()
    tables = []
    for spec in args.files:
        label, _, path = spec.rpartition("=")
        tables.append((label or path, read(Path(path))))
    keys = sorted({k for _, t in tables for k in t}, key=lambda k: (k[0], k[2], k[1]))
    head = [f"s{seed} {'P' if arm == 'shared' else arm[0].upper()}{step}" for seed, arm, step in keys]
    print("| Spearman / worst tenth caught | " + " | ".join(head) + " | mean |")
    print("|---" * (len(head) + 2) + "|")
    for label, table in tables:
        cells, rhos, caught = [], [], []
        for k in keys:
            if k not in table:
                cells.append("")
                continue
            score, iou = table[k]
            rho, w = spearman(score, iou), worst_tenth(score, iou)
            rhos.append(rho)
            caught.append(w)
            cells.append(f"{rho:.2f} / {w:.0%}")
        print(f"| {label} | " + " | ".join(cells) + f" | {np.mean(rhos):.3f} / {np.mean(caught):.0%} |")


if __name__ == "__main__":
    main()
