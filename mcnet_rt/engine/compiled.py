"""The `compiled` backend: `torch.compile` of each half of the step (CUDA graphs on a GPU)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..pipeline.step import FrameStep


def load(step: FrameStep, work_dir: Path | None = None) -> FrameStep:
    """`torch.compile` of both halves, with CUDA graphs on a GPU (what mode "reduce-overhead" sets; torch.compile
    takes a mode or options, not both); nothing is written, so `work_dir` is unused. Inductor's freezing treats the
    weights as constants (inference only: a later weight update is not seen): it folds the weight-only math
    (equalised-lr gains, modulation scales) and prepacks the CPU convolutions' weights once instead of on every call
    (small preset, CPU, one thread: 1.32x eager instead of 1.18x without it)."""
    options = {"freezing": True, "triton.cudagraphs": step.device.type == "cuda"}
    step.keypoints = torch.compile(step.keypoints, dynamic=False, options=options)
    step.render = torch.compile(step.render, dynamic=False, options=options)
    return step
