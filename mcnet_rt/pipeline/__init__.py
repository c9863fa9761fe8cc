"""The runtime path shared by every front end (animate, live, serve), benchmark and exporter.

- `step.FrameStep`: the one per-frame step, a pure function of tensors (driving image -> prediction);
- `step.prepare_source` / `step.motion_reference`: what the step takes besides the driving image, computed once;
- `session.Session` / `session.process_batch`: one caller's state (face crop, reference, smoothing, held pose, stats)
  around the step, and the one batched per-frame function of animate, live and serve;
- `to_tensor` / `to_uint8` (from `mcnet_rt.io.frames`, which the face stack uses too): uint8 frames <-> float
  tensors; `PRECISIONS` and `autocast` (from `mcnet_rt.precision`, which the models use too): the precision names
  and the autocast switch; `stats`: percentiles and bounded per-stage timings; `prepared`: the prepared source
  cached on disk.
"""
from ..io.frames import to_tensor, to_uint8
from ..precision import PRECISIONS, autocast
from .session import CROPS, Session, SessionOptions, process_batch
from .step import FrameStep, MotionReference, motion_reference, prepare_source, reference_from_keypoints

__all__ = ["FrameStep", "MotionReference", "motion_reference", "prepare_source", "reference_from_keypoints",
           "CROPS", "Session", "SessionOptions", "process_batch", "to_tensor", "to_uint8", "PRECISIONS", "autocast"]
