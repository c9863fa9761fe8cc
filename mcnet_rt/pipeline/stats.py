"""Latency bookkeeping shared by the live pipeline, the Session and the benchmarks: percentiles of millisecond
samples, and per-stage timings kept in bounded windows (a live run never grows its memory with time)."""
from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Iterable

WINDOW = 2000  # samples kept per stage: enough for stable p99, bounded for runs of any length


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/mean/min of millisecond samples (nearest rank), and how many there were."""
    ordered = sorted(samples)
    if not ordered:
        return {"iterations": 0}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered),
            "min_ms": ordered[0], "iterations": len(ordered)}


class StageTimes:
    """Milliseconds per named stage over the last WINDOW samples; `stage(name)` times a block."""

    def __init__(self, window: int = WINDOW):
        self.window = window
        self.samples: dict[str, deque[float]] = {}

    def add(self, name: str, milliseconds: float) -> None:
        self.samples.setdefault(name, deque(maxlen=self.window)).append(milliseconds)

    def last(self, name: str) -> float:
        samples = self.samples.get(name)
        return samples[-1] if samples else 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: percentiles(samples) for name, samples in self.samples.items()}

    def stage(self, name: str) -> "_Stage":
        return _Stage(self, name)


class _Stage:
    def __init__(self, times: StageTimes, name: str):
        self.times, self.name = times, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.times.add(self.name, (time.perf_counter() - self.start) * 1e3)
