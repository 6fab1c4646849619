"""A selection pass streams over the pool: its peak memory does not grow with the number of images.

Each measurement runs in a fresh process (this file run as a script): the pool is loaded and the model
built, then the resident peak is restarted and one selection pass runs; the number is how far the peak
rose above the resident size before the pass. The dataset's own records grow with the pool and are
part of the baseline, not of the pass.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apis.data.coco import load_coco
from apis.data.synthetic import SyntheticConfig, generate
from apis.memory import peak_rss_mb, reset_peak, rss_mb
from apis.models.condinst import CondInst
from apis.selection.select import select_points

HERE = Path(__file__).resolve()
SIZE = 32  # pixels: the smallest synthetic image, so 1000 images select in seconds


def measure(pool_json: Path, *runs: tuple[int, bool]) -> list[dict]:
    """For each (images, keep maps) run, selection's peak above its baseline in a fresh process, MiB, and
    how many choices it made. The processes run side by side: each measures only itself."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen([sys.executable, str(HERE), str(pool_json), str(n)] + (["--keep-maps"] if keep else []),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for n, keep in runs]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=150)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_selection_peak_memory_does_not_grow_with_the_pool(tmp_path):
    pool = generate(tmp_path, SyntheticConfig(seed=1, image_size=SIZE, train_images=1000, val_images=0,
                                              max_instances=3))["train"]
    # Control: keeping every batch's maps (what a pass that does not stream would do) on the same 1000
    # images must raise the peak by more than the 20% allowed, or the measurement could not see growth.
    small, large, hoard = measure(pool, (100, False), (1000, False), (1000, True))
    assert large["choices"] > 9 * small["choices"]
    assert abs(large["peak_mb"] - small["peak_mb"]) < 0.2 * max(large["peak_mb"], small["peak_mb"]), (small, large)
    assert hoard["peak_mb"] > 1.2 * small["peak_mb"], (small, hoard)


def child(pool_json: Path, images: int, keep_maps: bool) -> None:
    sys.path.insert(0, str(HERE.parent))
    from conftest import tiny_model_config

    torch.set_num_threads(1)
    dataset = load_coco(pool_json)
    dataset.images = dataset.images[:images]
    torch.manual_seed(0)
    model = CondInst(tiny_model_config(num_classes=len(dataset.categories), size=SIZE))
    if keep_maps:
        kept, forward = [], model.prediction_sets

        def hoarding(*args, **kwargs):
            out = forward(*args, **kwargs)
            kept.append(out)
            return out

        model.prediction_sets = hoarding
    gc.collect()
    reset_peak()
    base = rss_mb()
    choices = select_points(model, dataset, {}, "entropy", 1, 0, batch_size=16)
    print(json.dumps({"peak_mb": round(peak_rss_mb() - base, 2), "choices": len(choices)}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("pool_json", type=Path)
    ap.add_argument("images", type=int)
    ap.add_argument("--keep-maps", action="store_true")
    a = ap.parse_args()
    child(a.pool_json, a.images, a.keep_maps)
