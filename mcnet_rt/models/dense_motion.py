"""Dense motion network (FOMM's, unchanged in MCNet): blends K+1 keypoint-local affine motions into one
deformation grid and predicts an occlusion map, at the low resolution of `scale_factor`."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DenseMotionConfig
from ..keypoints import Keypoints, inverse_2x2
from ..ops.warp import sparse_warp
from ..precision import at_least_float32, full_precision
from .blocks import AntiAliasDownsample, Hourglass, coordinate_grid


class DenseMotion(NamedTuple):
    deformation: torch.Tensor  # (B, h, w, 2): where each output pixel samples the source, x then y
    occlusion: torch.Tensor  # (B, 1, h, w) in (0, 1)
    mask: torch.Tensor  # (B, K+1, h, w) softmax weights of the sparse motions (visualisation)
    sparse_deformed: torch.Tensor  # (B, K+1, C, h, w) source warped by each sparse motion (visualisation)


def keypoint_heatmaps(kp: torch.Tensor, grid: torch.Tensor, variance: float) -> torch.Tensor:
    """Gaussian bumps exp(−|z − kp|² / 2σ²) of (B,K,2) keypoints on an (h,w,2) grid -> (B,K,h,w)."""
    diff = grid[None, None] - kp[:, :, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / variance)


def sparse_motions(kp_source: Keypoints, kp_driving: Keypoints, grid: torch.Tensor) -> torch.Tensor:
    """T_k(z) = J_s,k · J_d,k⁻¹ · (z − kp_d,k) + kp_s,k for each keypoint, identity first: (B,K+1,h,w,2)."""
    b, k = kp_source.value.shape[:2]
    h, w = grid.shape[:2]
    with full_precision(grid.device):  # sampling coordinates: float32 under any autocast
        jacobian = kp_source.jacobian @ inverse_2x2(kp_driving.jacobian)
        local = grid[None, None] - kp_driving.value[:, :, None, None, :]
        moved = torch.einsum("bkij,bkhwj->bkhwi", jacobian, local) + kp_source.value[:, :, None, None, :]
        return torch.cat([grid.expand(b, 1, h, w, 2), moved], dim=1)


class DenseMotionNetwork(nn.Module):
    def __init__(self, config: DenseMotionConfig, num_kp: int, num_channels: int = 3):
        super().__init__()
        self.kp_variance = config.kp_variance
        self.hourglass = Hourglass(config.block_expansion, (num_kp + 1) * (num_channels + 1), config.num_blocks,
                                   config.max_features)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
        self.down = AntiAliasDownsample(num_channels, config.scale_factor) if config.scale_factor != 1 else None

    def forward(self, source_image: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints) -> DenseMotion:
        source = self.down(source_image) if self.down is not None else source_image
        b, _, h, w = source.shape
        grid = coordinate_grid(h, w, device=source.device, dtype=at_least_float32(source.dtype))  # as the keypoints
        heatmaps = (keypoint_heatmaps(kp_driving.value, grid, self.kp_variance)
                    - keypoint_heatmaps(kp_source.value, grid, self.kp_variance))
        heatmaps = torch.cat([heatmaps.new_zeros(b, 1, h, w), heatmaps], dim=1)
        motions = sparse_motions(kp_source, kp_driving, grid)
        deformed = sparse_warp(source, motions)
        # Per motion: its heat-map channel, then its warped RGB; the checkpoint's first conv expects this order.
        hourglass_in = torch.cat([heatmaps.unsqueeze(2), deformed], dim=2).view(b, -1, h, w)
        features = self.hourglass(hourglass_in)
        mask = self.mask(features)
        mask = F.softmax(mask.to(at_least_float32(mask.dtype)), dim=1)  # it weighs the sampling coordinates
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(features))
        return DenseMotion(deformation, occlusion, mask, deformed)
