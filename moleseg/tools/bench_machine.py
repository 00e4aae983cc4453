"""The benchmark's machine side: its settings, the load and CPU-time counters that tell a busy machine, peak
memory, and the practical memory bandwidth (see :mod:`moleseg.tools.bench`; the median timer and the compute
peak are :mod:`moleseg.network.profiling`'s).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moleseg.network.profiling import median_seconds

@dataclass
class BenchSettings:
    """Sizes and repeat counts of one benchmark run (``quick()``: seconds, not representative)."""

    repeats: int = 10
    warmup: int = 2
    matmul_size: int = 2048
    copy_mib: int = 256
    train_size: int | None = 256  # None: the model's own input size
    train_batch: int = 8
    train_steps: int = 5
    predict_images: int = 24
    cold_start_model: str | None = None  # None: the benchmarked model
    quick: bool = False

    @classmethod
    def quick_settings(cls) -> "BenchSettings":
        return cls(repeats=2, warmup=1, matmul_size=256, copy_mib=8, train_size=None, train_batch=2, train_steps=2,
                   predict_images=3, cold_start_model="classical", quick=True)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Maximum resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


#: Share of the machine's CPU time (0..1) that other processes may take during a run still called idle.
OTHERS_IDLE_SHARE = 0.1


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot (``/proc/stat``: all but idle and iowait,
    steal included); None where there is no ``/proc/stat``."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and its finished children (the cold-start runs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def conditions() -> dict[str, Any]:
    """Load average (1, 5, 15 min), CPU count, and the CPU-time counters :func:`busy` compares now."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"load_average": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "wall_s": time.monotonic(), "machine_cpu_s": busy_cpu_seconds(),
            "own_cpu_s": own_cpu_seconds()}


def others_cpu_share(result: dict[str, Any]) -> float | None:
    """Share 0..1 of the machine's CPU time between the run's start and end that other processes used (the
    machine's busy time minus the benchmark's own); None when not measurable."""
    before, after = result["before"], result["after"]
    if before.get("machine_cpu_s") is None or after.get("machine_cpu_s") is None:
        return None
    capacity = (after["wall_s"] - before["wall_s"]) * (after["cpu_count"] or 1)
    others = (after["machine_cpu_s"] - before["machine_cpu_s"]) - (after["own_cpu_s"] - before["own_cpu_s"])
    return max(0.0, others / capacity) if capacity > 0 else None


def busy(result: dict[str, Any]) -> bool:
    """True when timings are inflated by other work: the 1-minute load average before the run exceeded half
    the CPUs, or other processes took more than :data:`OTHERS_IDLE_SHARE` of the CPU time during it (the
    load average after the run counts the benchmark itself, so it is used only when the CPU counters
    are missing)."""
    cpus = result["after"]["cpu_count"] or 1
    others = others_cpu_share(result)
    if others is None:
        return max(result["before"]["load_average"][0], result["after"]["load_average"][0]) > 0.5 * cpus
    return result["before"]["load_average"][0] > 0.5 * cpus or others > OTHERS_IDLE_SHARE


# ------------------------------------------------------------------------------------------------------
# machine limits

def memory_gbps(mebibytes: int, repeats: int, warmup: int) -> float:
    """STREAM-like copy ``b[:] = a`` of ``mebibytes`` MiB with numpy, GB/s counting bytes read + written."""
    source = np.random.default_rng(0).standard_normal(mebibytes * 2**20 // 8)
    target = np.empty_like(source)
    seconds = median_seconds(lambda: np.copyto(target, source), repeats, warmup)
    return 2.0 * source.nbytes / seconds / 1e9
