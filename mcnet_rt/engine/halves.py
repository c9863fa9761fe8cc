"""The per-frame step as the two graphs every exporter writes: `keypoints` (driving image -> keypoints) and `render`
(keypoints + the prepared source -> prediction). Live smoothing filters the keypoints between them, so each
backend runs the halves, and `step(x) = render(*keypoints(x), *inputs)` everywhere."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..pipeline.step import FrameStep, motion_reference, prepare_source
from .exported import batched

NAMES = ("keypoints", "render")  # the halves, and the stems of their files (keypoints.onnx, render.pt2, ...)
KEYPOINTS_INPUTS = ("driving",)
TRACE_BATCH = 2  # the halves are traced with a batch of 2: torch.export would specialise a batch of 1 as a constant
KEYPOINTS_OUTPUTS = ("kp_driving_value", "kp_driving_jacobian")


def render_inputs(step: FrameStep) -> tuple[str, ...]:
    """Names of `render`'s inputs, in `FrameStep.render` order (the features finest first)."""
    return (*KEYPOINTS_OUTPUTS, "source_image", "kp_source_value", "kp_source_jacobian", "kp_reference_value",
            "kp_reference_jacobian", "scale", *(f"feature_{i}" for i in range(step.num_features)))


class Keypoints(nn.Module):
    def __init__(self, step: FrameStep):
        super().__init__()
        self.step = step

    def forward(self, driving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(self.step.keypoints(driving))


class Render(nn.Module):
    def __init__(self, step: FrameStep):
        super().__init__()
        self.step = step

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.step.render(*inputs)


class Half(NamedTuple):
    """One half as an exporter traces it: its file stem, module, example inputs and the graph's value names."""
    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def traced(step: FrameStep) -> tuple[Half, Half]:
    """Both halves of `step` with example inputs at `TRACE_BATCH`."""
    keypoints_inputs, render_inputs_ = example_inputs(step, TRACE_BATCH)
    return (Half("keypoints", Keypoints(step), keypoints_inputs, KEYPOINTS_INPUTS, KEYPOINTS_OUTPUTS),
            Half("render", Render(step), render_inputs_, render_inputs(step), ("prediction",)))


def example_inputs(step: FrameStep, batch: int = 2, seed: int = 0
                   ) -> tuple[tuple[torch.Tensor], tuple[torch.Tensor, ...]]:
    """Inputs of both halves for tracing and checks: random images, one shared source prepared as callers do."""
    model = step.model
    size = model.config.image_size
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    source = torch.rand(1, 3, size, size, generator=generator).to(device)
    driving = torch.rand(batch, 3, size, size, generator=generator).to(device)
    prepared = prepare_source(model, source, step.dtype)
    reference = motion_reference(model, prepared, driving[:1], dtype=step.dtype)
    with torch.no_grad():
        keypoints = tuple(step.keypoints(driving))
    return (driving,), (*keypoints, *batched(step.inputs(prepared, reference), batch))


def dynamic_batch(inputs: tuple[torch.Tensor, ...]) -> tuple:
    """torch.export's `dynamic_shapes` for a half traced with `inputs`: one batch dimension shared by every input
    (Keypoints takes one argument, Render a variable number)."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = tuple({0: batch} for _ in inputs)
    return (shapes,) if len(inputs) > 1 else shapes
