"""An exponential moving average (EMA) of the model's weights, updated after every optimiser step.

Averaged weights usually generalise better than the last step's; the released recipe has none (`train.ema: 0`).
BatchNorm running statistics are buffers, not weights: they are copied from the trained model as they are.
"""
from __future__ import annotations

import copy

import torch

from ..models import MCNet


class WeightAverage:
    def __init__(self, model: MCNet, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: MCNet) -> None:
        """average ← decay · average + (1 − decay) · weights."""
        for average, live in zip(self.model.parameters(), model.parameters()):
            average.lerp_(live, 1 - self.decay)
        for average, live in zip(self.model.buffers(), model.buffers()):
            average.copy_(live)

    def state_dict(self) -> dict:
        return {"kp_detector": self.model.kp_detector.state_dict(),
                "generator": self.model.generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.kp_detector.load_state_dict(state["kp_detector"])
        self.model.generator.load_state_dict(state["generator"])
