"""The released augmentation (AllAugmentationTransform: RandomFlip, then ColorJitter) as small tensor ops.

Clips are (T, 3, H, W) float tensors in [0, 1]; every frame of a clip gets the same flip and the same jitter.
Randomness comes from a numpy Generator owned by the caller, so that an item is a function of its seed.
"""
from __future__ import annotations

import numpy as np
import torch

from .config import AugmentationSection

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(-3)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    return (x * factor).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(x, grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(x, grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by `shift` turns (in [-0.5, 0.5]) through HSV, keeping saturation and value."""
    r, g, b = x.unbind(-3)
    value, _ = x.max(dim=-3)
    delta = value - x.min(dim=-3).values
    saturation = delta / value.clamp_min(1e-12)
    d = delta.clamp_min(1e-12)
    hue = torch.where(value == r, (g - b) / d, torch.where(value == g, 2 + (b - r) / d, 4 + (r - g) / d))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift, 1.0) * 6
    sector = hue.floor()
    f = hue - sector
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    sector = sector.long() % 6
    choices = ((value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q))
    channels = [sum(torch.where(sector == i, c[ch], 0) for i, c in enumerate(choices)) for ch in range(3)]
    return torch.stack(channels, dim=-3).clamp(0, 1)


def augment(clip: torch.Tensor, params: AugmentationSection, rng: np.random.Generator) -> torch.Tensor:
    # RandomFlip as released: a time-flipped clip is never also mirrored.
    if rng.random() < 0.5 and params.time_flip:
        clip = clip.flip(0)
    elif rng.random() < 0.5 and params.horizontal_flip:
        clip = clip.flip(-1)
    # ColorJitter as released: factors drawn in this order, applied in random order.
    jitters = []
    if params.brightness > 0:
        factor = rng.uniform(max(0.0, 1 - params.brightness), 1 + params.brightness)
        jitters.append(lambda x, f=factor: adjust_brightness(x, f))
    if params.contrast > 0:
        factor = rng.uniform(max(0.0, 1 - params.contrast), 1 + params.contrast)
        jitters.append(lambda x, f=factor: adjust_contrast(x, f))
    if params.saturation > 0:
        factor = rng.uniform(max(0.0, 1 - params.saturation), 1 + params.saturation)
        jitters.append(lambda x, f=factor: adjust_saturation(x, f))
    if params.hue > 0:
        shift = rng.uniform(-params.hue, params.hue)
        jitters.append(lambda x, s=shift: adjust_hue(x, s))
    for i in rng.permutation(len(jitters)):
        clip = jitters[i](clip)
    return clip
