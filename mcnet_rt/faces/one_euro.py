"""The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012): a low-pass filter whose cut-off rises with speed, so
that a still signal is steady (jitter removed) and a moving one follows with little lag.

Generic over arrays of any shape (every element filtered independently): the face crop's centre and size here,
keypoints in the live pipeline.
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """`filter(x)` per sample; `min_cutoff` (Hz) sets the smoothing at rest (lower: steadier), `beta` how fast the
    cut-off rises with speed (higher: less lag), `rate` the sampling rate in Hz. `reset()` forgets the past (a new
    track, a new reference), so the next sample passes through unchanged."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0, rate: float = 30.0):
        if not (min_cutoff > 0 and d_cutoff > 0 and rate > 0 and beta >= 0):
            raise ValueError(f"One-Euro filter: need min_cutoff, d_cutoff, rate > 0 and beta >= 0, got "
                             f"{min_cutoff}, {d_cutoff}, {rate}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff, self.dt = min_cutoff, beta, d_cutoff, 1.0 / rate
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, dt: float | None = None) -> np.ndarray:
        """The filtered sample (float64, x's shape); `dt` in seconds when samples are not 1/rate apart."""
        x = np.asarray(x, dtype=np.float64)
        dt = self.dt if dt is None else dt
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"One-Euro filter: sample shape {x.shape} differs from {self._x.shape}; reset() first")
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = self._dx + a_d * ((x - self._x) / dt - self._dx)
        a = _alpha(self.min_cutoff + self.beta * np.abs(self._dx), dt)
        self._x = self._x + a * (x - self._x)  # exact for a constant signal
        return self._x.copy()
