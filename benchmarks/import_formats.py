"""`apis data import` over several sources: objects in the files, objects out, time and peak memory, one row each.

    python benchmarks/import_formats.py SRC[=LAYOUT] [SRC[=LAYOUT] ...] [--expect N ...] [-- extra import options]

Each source is imported by a fresh `apis data import SRC OUT --val-fraction 0` process (so the peak resident
memory is the import's own, read from the kernel's VmHWM), into a temporary folder that is removed afterwards.
"objects out" counts the annotations written (crowd regions included, box-only objects marked); "objects in" is
what you pass with `--expect` (the number the source holds, counted by you or by the tool that wrote it), in the
order of the sources; "-" where not given. A refused import prints its first line instead of counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import resource, sys, json
from apis.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 1
peak = 0
for line in open('/proc/self/status'):
    if line.startswith('VmHWM:'):
        peak = int(line.split()[1]) // 1024
print(json.dumps({'code': code, 'peak_mb': peak}), file=sys.stderr)
"""


def run_one(src: str, layout: str | None, extra: list[str]) -> dict:
    out = Path(tempfile.mkdtemp(prefix="apis-import-bench-")) / "out"
    args = ["data", "import", src, str(out), "--val-fraction", "0", *(["--layout", layout] if layout else []), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    row = {"source": src, "layout": layout or "detected", "seconds": seconds, **stats}
    if stats["code"] == 0:
        coco = json.loads((out / "train" / "annotations.json").read_text())
        format_line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("format:")), "format: ?")
        anns = coco["annotations"]
        row.update(layout=format_line.split(":", 1)[1].strip(), images=len(coco["images"]), objects=len(anns),
                   boxes_only=sum("segmentation" not in a for a in anns),
                   crowd=sum(bool(a.get("iscrowd")) for a in anns))
    else:
        row["refused"] = next((ln.strip() for ln in proc.stdout.splitlines() if ln.strip()), "?")[:100]
    shutil.rmtree(out.parent, ignore_errors=True)
    return row


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help="SRC or SRC=LAYOUT")
    parser.add_argument("--expect", type=int, nargs="*", default=[], help="objects each source holds, in order")
    args = parser.parse_args(argv)
    print("| source | format | images | objects in | objects out (box-only, crowd) | seconds | peak MB |")
    print("|---|---|---|---|---|---|---|")
    for i, spec in enumerate(args.sources):
        src, _, layout = spec.partition("=")
        r = run_one(src, layout or None, extra)
        expected = str(args.expect[i]) if i < len(args.expect) else "-"
        if "refused" in r:
            print(f"| {src} | {r['layout']} | refused: {r['refused']} | {expected} | - | {r['seconds']:.1f} | "
                  f"{r['peak_mb']} |")
        else:
            print(f"| {src} | {r['layout']} | {r['images']} | {expected} | {r['objects']} ({r['boxes_only']}, "
                  f"{r['crowd']}) | {r['seconds']:.1f} | {r['peak_mb']} |", flush=True)


if __name__ == "__main__":
    main()
