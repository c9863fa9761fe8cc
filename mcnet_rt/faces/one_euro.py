"""The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012): a low-pass filter whose cut-off rises with speed, so
that a still signal is steady (jitter removed) and a moving one follows with little lag.

Generic over arrays of any shape (every element filtered independently), NumPy arrays or torch tensors: the face
crop's centre and size (NumPy, on the CPU), keypoints in the live pipeline (torch, on the model's device, so that
smoothing never waits on the device).
"""
from __future__ import annotations

import math

import numpy as np
import torch

Samples = np.ndarray | torch.Tensor


def _alpha(cutoff: Samples | float, dt: float) -> Samples | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def _floating(x) -> Samples:
    """A tensor as it is when floating (float64 otherwise), anything else as a float64 array."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    return np.asarray(x, dtype=np.float64)


def _copy(x: Samples) -> Samples:
    return x.clone() if isinstance(x, torch.Tensor) else x.copy()


def _zeros_like(x: Samples) -> Samples:
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else np.zeros_like(x)


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
        self._x: Samples | None = None
        self._dx: Samples | None = None

    def __call__(self, x: Samples, dt: float | None = None) -> Samples:
        """The filtered sample, of x's shape: float64 for NumPy input; a tensor stays on its device in its floating
        type (nothing is read back to the host). `dt` in seconds when samples are not 1/rate apart."""
        x = _floating(x)
        dt = self.dt if dt is None else dt
        if self._x is None:
            self._x, self._dx = _copy(x), _zeros_like(x)
            return _copy(x)
        if x.shape != self._x.shape:
            raise ValueError(f"One-Euro filter: sample shape {tuple(x.shape)} differs from {tuple(self._x.shape)}; "
                             "reset() first")
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = self._dx + a_d * ((x - self._x) / dt - self._dx)
        a = _alpha(self.min_cutoff + self.beta * abs(self._dx), dt)
        self._x = self._x + a * (x - self._x)  # exact for a constant signal
        return _copy(self._x)
