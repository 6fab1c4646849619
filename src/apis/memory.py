"""Peak memory of this process, for benchmarks and tests: resident set size and CUDA allocations.

On Linux the resident peak (``VmHWM``) can be restarted (``/proc/self/clear_refs``), so one process can
measure phase after phase; elsewhere :func:`peak_rss_mb` is the peak since the process started.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def _status_mb(key: str) -> float | None:
    if not _STATUS.is_file():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


def rss_mb() -> float:
    """Resident memory now, MiB (the peak so far where the current value is not available)."""
    now = _status_mb("VmRSS")
    return now if now is not None else peak_rss_mb()


def reset_peak() -> bool:
    """Restart the resident peak at the current resident size (Linux) and CUDA's peak statistics.
    Returns False where the resident peak cannot be restarted."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak resident set size (Linux ≥ 4.0)
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory, MiB, since the last :func:`reset_peak` (Linux) or since the process began."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes on macOS, kB on Linux


def peak_cuda_mb() -> float | None:
    """Peak memory allocated by tensors on the current GPU since the last reset, MiB; None without CUDA."""
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
