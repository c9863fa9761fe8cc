"""uint8 frames (the I/O side) <-> float tensors in [0, 1] (the model side). Depends on nothing else in mcnet_rt,
so that faces and pipeline can both use it without an import cycle."""
from __future__ import annotations

import numpy as np
import torch


def to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float in [0,1]; the division happens on `device` (4× less to upload). Any
    strides are accepted (e.g. a channel-flipped view)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) float in [0,1] -> (B,H,W,3) uint8."""
    return images.float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
