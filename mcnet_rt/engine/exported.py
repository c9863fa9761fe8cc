"""The adapter every exported backend shares: two callables over flat tensors (the `keypoints` and `render` graphs)
behind the `FrameStep` interface, so live smoothing between the halves works with each of them. The graphs take
one batch size for all their inputs; a source shared by the batch is repeated to the driving batch here."""
from __future__ import annotations

import torch

from ..keypoints import Keypoints
from ..pipeline.step import FrameStep


def batched(inputs: tuple[torch.Tensor, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """Every input at the driving batch: the exported graphs take one batch size for all their inputs, so a source
    shared by the batch (batch 1) is repeated."""
    return tuple(t.expand(batch, *t.shape[1:]).contiguous() if t.shape[0] != batch else t for t in inputs)


class ExportedStep:
    """The step's interface over two callables that take and return flat tensors, every input at one batch."""

    inputs = staticmethod(FrameStep.inputs)

    def __init__(self, keypoints, render, device: torch.device):
        self._keypoints, self._render, self.device = keypoints, render, device

    @staticmethod
    def _run(function, inputs: tuple[torch.Tensor, ...]):
        """`function` with the sources shared by the batch (batch 1) repeated to the driving batch."""
        return function(*batched(inputs, inputs[0].shape[0]))

    def keypoints(self, driving: torch.Tensor) -> Keypoints:
        return Keypoints(*self._run(self._keypoints, (driving,)))

    def render(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._run(self._render, inputs)

    def __call__(self, driving: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return self.render(*self.keypoints(driving), *inputs)
