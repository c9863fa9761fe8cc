"""Timing and provenance shared by the benchmarks: CUDA-event or wall-clock timers, percentiles, peak memory,
and the device/commit/command stamp every results file carries."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mcnet_rt.pipeline.stats import percentiles

RESULTS = Path(__file__).parent / "results"


class Timer:
    """Milliseconds of one call, measured with CUDA events on a GPU and wall clock on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The checkout's commit; where the tree was copied without .git (a GPU machine), MCNET_RT_COMMIT's value."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("MCNET_RT_COMMIT", "unknown")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def stamp(device: torch.device) -> dict[str, object]:
    """Where, when and how a result was measured."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device_name(device),
        "device_type": device.type,
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def measure(fn: Callable[[], object], device: torch.device, warmup: int, iterations: int) -> dict[str, float]:
    """Percentiles of `fn`'s latency and its peak memory above what was allocated before (CUDA only)."""
    for _ in range(warmup):
        fn()
    timer = Timer(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    result = percentiles([timer(fn) for _ in range(iterations)])
    if device.type == "cuda":
        result["peak_mib"] = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    return result


def write_report(report: dict, output: Path | None, default_name: str) -> Path:
    """Write a benchmark's JSON to `output`, or to benchmarks/results/<default_name>, and say where."""
    out = output or RESULTS / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return out
