"""The runtime path shared by every front end (animate, live, serve), benchmark and exporter.

- `step.FrameStep`: the one per-frame step, a pure function of tensors (driving image -> prediction);
- `step.prepare_source` / `step.motion_reference`: what the step takes besides the driving image, computed once;
- `frames`: uint8 frames <-> float tensors; `precision`: the precision names and the autocast switch.
"""
from .frames import to_tensor, to_uint8
from .precision import PRECISIONS, autocast
from .step import FrameStep, MotionReference, motion_reference, prepare_source

__all__ = ["FrameStep", "MotionReference", "motion_reference", "prepare_source", "to_tensor", "to_uint8",
           "PRECISIONS", "autocast"]
