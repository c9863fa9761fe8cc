"""The one per-frame step: driving image -> keypoints -> relative motion -> generator with the cached source.

`FrameStep` is the function that `animate`, `live`, `serve`, the benchmarks and the exporters all run. It is a
pure function of tensors with a flat signature and fixed shapes: no Python branching on tensor values, no NumPy,
no GPU->CPU synchronisation. Whatever does not change from frame to frame is computed once, outside it:
- `prepare_source`: the source's keypoints and encoder features (a `SourceCache`), with the input checked once;
- `motion_reference`: the driving keypoints that relative motion is measured from, and the adaptive movement
  scale (a convex hull, computed on the CPU) as a tensor.
Sources and references have batch 1 (shared by every driving frame) or the driving batch (one per caller, as the
browser server batches several callers).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..keypoints import Keypoints, movement_scale, relative_keypoints
from ..models import DenseMotion, Decoded, MCNet, SourceCache
from ..precision import autocast, full_precision


class MotionReference(NamedTuple):
    """Relative motion is measured from `keypoints` and scaled by `scale` ((B,) float32)."""

    keypoints: Keypoints
    scale: torch.Tensor


def prepare_source(model: MCNet, source: torch.Tensor, dtype: torch.dtype = torch.float32) -> SourceCache:
    """Encode (B,3,H,W) source images once; the input is checked here, never per frame."""
    with torch.no_grad(), autocast(source.device, dtype):
        cache = model.encode_source(source)
    return cache._replace(keypoints=cache.keypoints.to(torch.float32))


def motion_reference(model: MCNet, source: SourceCache, driving: torch.Tensor, adapt_scale: bool = True,
                     dtype: torch.dtype = torch.float32) -> MotionReference:
    """The reference pose for relative motion: the keypoints of `driving` ((B,3,H,W), usually one frame) and, with
    `adapt_scale`, sqrt(source hull area / reference hull area) per sample (the released demo's adapt_scale)."""
    model.check_images(driving, "reference frame")
    with torch.no_grad(), autocast(driving.device, dtype):
        keypoints = model.kp_detector(driving).to(torch.float32)
    return reference_from_keypoints(source, keypoints, adapt_scale)


def reference_from_keypoints(source: SourceCache, keypoints: Keypoints, adapt_scale: bool = True) -> MotionReference:
    """`motion_reference` for driving keypoints already computed (live: the frame the user resets to)."""
    count = keypoints.value.shape[0]
    sources = source.keypoints if source.keypoints.value.shape[0] == count else \
        Keypoints(*(t.expand(count, *t.shape[1:]) for t in source.keypoints))
    scales = [movement_scale(Keypoints(sources.value[i:i + 1], sources.jacobian[i:i + 1]),
                             Keypoints(keypoints.value[i:i + 1], keypoints.jacobian[i:i + 1])) if adapt_scale else 1.0
              for i in range(count)]
    return MotionReference(keypoints, torch.tensor(scales, dtype=torch.float32, device=keypoints.value.device))


class FrameOutputs(NamedTuple):
    """What one step computed, for drawing: the driving keypoints and the transferred ones, the dense motion
    and the generator's outputs with the features around the memory."""

    kp_driving: Keypoints
    kp_transferred: Keypoints
    motion: DenseMotion
    decoded: Decoded


class FrameStep(nn.Module):
    """prediction (B,3,H,W) float32 in [0,1] = step(driving (B,3,H,W) in [0,1], *source, *reference).

    The keypoint detector and the generator run at `dtype` (autocast); the motion transfer always runs in
    float32. `relative=False` feeds the driving keypoints directly (absolute motion); the reference inputs are then
    ignored. Call it with `step(driving, *step.inputs(source, reference))`. `forward` is `render(*keypoints(...))`:
    a caller that filters the driving keypoints over time (live smoothing) runs the two halves with its filter
    between them.
    """

    def __init__(self, model: MCNet, dtype: torch.dtype = torch.float32, relative: bool = True):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.relative = relative
        self.num_features = model.generator.num_down_blocks + 1

    @property
    def device(self) -> torch.device:
        """Where the model runs: every step, eager or exported (`engine.exported.ExportedStep`), says it."""
        return next(self.model.parameters()).device

    @staticmethod
    def inputs(source: SourceCache, reference: MotionReference) -> tuple[torch.Tensor, ...]:
        """The flat tensor inputs after the driving image: source image, source keypoints (value, jacobian),
        reference keypoints (value, jacobian), movement scale, then the encoder features, finest first."""
        return (source.image, *source.keypoints, *reference.keypoints, reference.scale, *source.features)

    def keypoints(self, driving: torch.Tensor) -> Keypoints:
        """The driving keypoints, float32."""
        with autocast(driving.device, self.dtype):
            return self.model.kp_detector(driving).to(torch.float32)

    def render(self, kp_driving_value: torch.Tensor, kp_driving_jacobian: torch.Tensor, source_image: torch.Tensor,
               kp_source_value: torch.Tensor, kp_source_jacobian: torch.Tensor, kp_reference_value: torch.Tensor,
               kp_reference_jacobian: torch.Tensor, scale: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        """The prediction for driving keypoints: motion transfer, then the generator with the cached source."""
        cache, kp_driving = self._transfer(kp_driving_value, kp_driving_jacobian, source_image, kp_source_value,
                                           kp_source_jacobian, kp_reference_value, kp_reference_jacobian, scale,
                                           *features)
        with autocast(source_image.device, self.dtype):
            return self.model.animate(cache, kp_driving).float()

    def render_outputs(self, kp_driving_value: torch.Tensor, kp_driving_jacobian: torch.Tensor,
                       *inputs: torch.Tensor) -> FrameOutputs:
        """`render` returning everything it computed (eager only: the exported step is `render`, unchanged)."""
        cache, kp_transferred = self._transfer(kp_driving_value, kp_driving_jacobian, *inputs)
        with autocast(cache.image.device, self.dtype):
            decoded, motion = self.model.animate_outputs(cache, kp_transferred, keep_features=True)
        return FrameOutputs(Keypoints(kp_driving_value, kp_driving_jacobian), kp_transferred, motion, decoded)

    def _transfer(self, kp_driving_value: torch.Tensor, kp_driving_jacobian: torch.Tensor, source_image: torch.Tensor,
                  kp_source_value: torch.Tensor, kp_source_jacobian: torch.Tensor, kp_reference_value: torch.Tensor,
                  kp_reference_jacobian: torch.Tensor, scale: torch.Tensor, *features: torch.Tensor
                  ) -> tuple[SourceCache, Keypoints]:
        """The source cache at the driving batch and the keypoints the generator is given (relative or not)."""
        kp_driving = Keypoints(kp_driving_value, kp_driving_jacobian)
        cache = SourceCache(source_image, Keypoints(kp_source_value, kp_source_jacobian), list(features))
        cache = cache.expand(kp_driving_value.shape[0])
        if self.relative:
            with full_precision(source_image.device):
                reference = Keypoints(kp_reference_value, kp_reference_jacobian)
                kp_driving = relative_keypoints(cache.keypoints, kp_driving, reference, scale.view(-1, 1, 1))
        return cache, kp_driving

    def forward(self, driving: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return self.render(*self.keypoints(driving), *inputs)
