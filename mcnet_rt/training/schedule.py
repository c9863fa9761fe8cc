"""The learning rate of every step, a pure function of the configuration and the position in training.

The released MultiStepLR (γ at each milestone epoch) times an optional linear warm-up over the first steps.
Nothing about the schedule is kept in the checkpoint: a resumed run follows the schedule of its configuration, so
a milestone changed on resume is applied, never overridden by a restored scheduler state.
"""
from __future__ import annotations

from bisect import bisect_right

import torch

from .config import OptimSection


def lr_factor(train: OptimSection, step: int, epoch: int) -> float:
    """The factor on the base learning rate for optimiser step `step` (0-based), taken during epoch `epoch`:
    γ^(milestones reached) as MultiStepLR, times (step + 1) / warmup_steps during the warm-up."""
    factor = train.gamma ** bisect_right(sorted(train.milestones), epoch)
    if step < train.warmup_steps:
        factor *= (step + 1) / train.warmup_steps
    return factor


def set_learning_rates(optimizers: dict[str, torch.optim.Optimizer], train: OptimSection, step: int,
                       epoch: int) -> None:
    """Give each optimiser its learning rate for this step, and the configuration's betas (so that both follow
    the configuration after a resume, not the values stored with the optimiser's state)."""
    factor = lr_factor(train, step, epoch)
    base = {"generator": train.lr_generator, "kp_detector": train.lr_kp_detector}
    for name, optimizer in optimizers.items():
        for group in optimizer.param_groups:
            group["lr"] = base[name] * factor
            group["betas"] = tuple(train.betas)
