"""mcnet_rt: the released MCNet talking-head model, loaded exactly and run fast.

    net = mcnet_rt.load("mcnet.pth.tar")              # official checkpoint or our safetensors; eval mode
    kp = net.detect_keypoints(images)                  # .value (B,15,2), .jacobian (B,15,2,2)
    out = net.generate(source, kp_source, kp_driving)  # (B,3,256,256) in [0,1]
"""
from __future__ import annotations

import torch

__version__ = "0.1.0"

from .checkpoint import load, save, save_official
from .config import PRESETS, MCNetConfig, preset
from .errors import CheckpointError, InputError
from .keypoints import Keypoints
from .models import MCNet, SourceCache


def build_model(config: str | MCNetConfig = "vox-256", device: str | torch.device = "cpu") -> MCNet:
    """A freshly initialised (untrained) model from a preset name or a configuration, in eval mode."""
    if isinstance(config, str):
        config = preset(config)
    return MCNet(config).to(device).eval()


__all__ = ["load", "save", "save_official", "build_model", "preset", "PRESETS", "MCNetConfig", "MCNet",
           "SourceCache", "Keypoints", "InputError", "CheckpointError"]
