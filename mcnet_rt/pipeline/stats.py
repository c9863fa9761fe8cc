"""Latency bookkeeping shared by the live pipeline, the Session and the benchmarks: percentiles of millisecond
samples, and per-stage timings kept in bounded windows (a live run never grows its memory with time).

Stages that run on a GPU are timed between marks on the device's timeline (CUDA events): the CPU only queues the
work, and waiting for it to time a stage would stall the pipeline. Such a stage's time is read once the device has
passed its end mark (usually by the next frame, after the frame's download), never by waiting for it."""
from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Iterable

import torch

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


Mark = float | torch.cuda.Event


def mark(device: torch.device) -> Mark:
    """Now, on `device`'s timeline, without waiting for it: a timing event recorded on the current CUDA stream, or
    perf_counter() on the CPU."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


class StageTimes:
    """Milliseconds per named stage over the last WINDOW samples; `stage(name)` times a block, `add_span` the
    time between two marks (read when the device has passed the end mark)."""

    def __init__(self, window: int = WINDOW):
        self.window = window
        self.samples: dict[str, deque[float]] = {}
        self._spans: deque[tuple[str, Mark, Mark]] = deque()

    def add(self, name: str, milliseconds: float) -> None:
        self.samples.setdefault(name, deque(maxlen=self.window)).append(milliseconds)

    def add_span(self, name: str, start: Mark, end: Mark) -> None:
        self._spans.append((name, start, end))
        self.collect()

    def collect(self) -> None:
        """Move every span whose end the device has passed into the samples (in order; nothing waits)."""
        while self._spans:
            name, start, end = self._spans[0]
            if isinstance(end, float):
                milliseconds = (end - start) * 1e3
            elif end.query():
                milliseconds = start.elapsed_time(end)
            else:
                return
            self._spans.popleft()
            self.add(name, milliseconds)

    def last(self, name: str) -> float:
        self.collect()
        samples = self.samples.get(name)
        return samples[-1] if samples else 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        self.collect()
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
