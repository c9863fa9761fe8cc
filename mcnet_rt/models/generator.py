"""MCNet generator (the released `Unet_Generator_keypoint_aware`): a U-Net whose skip features are warped by the
dense motion, compensated by the memory unit at every scale but the finest, and decoded; the occlusion map
blends the decoded image with the warped source.

The work is split so that the per-source part (`encode`) is cached, and the per-frame part (`estimate_motion`,
`decode`) is a pure function of tensors.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GeneratorConfig
from ..keypoints import Keypoints
from ..ops.warp import warp_features
from .blocks import DownBlock2d, ResBlock2d, SameBlock2d, UpBlock2d
from .dense_motion import DenseMotion, DenseMotionNetwork
from .memory import MemoryUnit


class Decoded(NamedTuple):
    prediction: torch.Tensor  # (B, 3, H, W) in [0, 1]
    deformed: torch.Tensor  # the source warped by the deformation (B, 3, H, W)
    projected: list[torch.Tensor]  # per compensated scale, coarse to fine: the projected warped feature
    values: list[torch.Tensor]  # per compensated scale: the memory value (targets of the consistency loss)
    # With `keep_features` (visualisation), per compensated scale: the warped feature before and after the memory.
    warped: tuple[torch.Tensor, ...] = ()
    compensated: tuple[torch.Tensor, ...] = ()


class Generator(nn.Module):
    def __init__(self, config: GeneratorConfig, num_kp: int, num_channels: int, image_size: int):
        super().__init__()
        n = config.num_down_blocks
        widths = [min(config.max_features, config.block_expansion * 2 ** i) for i in range(n + 1)]
        self.num_down_blocks = n
        self.dense_motion_network = DenseMotionNetwork(config.dense_motion, num_kp, num_channels)
        self.first = SameBlock2d(num_channels, widths[0], kernel_size=7)
        self.down_blocks = nn.ModuleList(DownBlock2d(widths[i], widths[i + 1]) for i in range(n))
        # Decoder level i upsamples from resolution n−i; after the first level its input is [decoded, compensated].
        up_in = [widths[n]] + [2 * widths[n - i] for i in range(1, n)]
        self.up_blocks = nn.ModuleList(UpBlock2d(up_in[i], widths[n - 1 - i]) for i in range(n))
        self.resblock = nn.ModuleList(ResBlock2d(up_in[i // 2]) for i in range(2 * n))
        self.final = nn.Conv2d(config.block_expansion, num_channels, kernel_size=7, padding=3)
        compensated = {str(image_size >> level): widths[level] for level in range(n, 0, -1)}
        self.memory = MemoryUnit(config.memory, compensated, num_kp)

    def encode(self, source_image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of the source, finest first; computed once per source."""
        features = [self.first(source_image)]
        for block in self.down_blocks:
            features.append(block(features[-1]))
        return features

    def estimate_motion(self, source_image: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints) -> DenseMotion:
        return self.dense_motion_network(source_image, kp_source, kp_driving)

    def decode(self, source_image: torch.Tensor, features: list[torch.Tensor], motion: DenseMotion,
               kp_source_value: torch.Tensor, keep_features: bool = False) -> Decoded:
        """`keep_features` also returns the warped features around the memory (references to tensors computed
        anyway: no extra work, but they stay alive until the caller drops them)."""
        deformation, occlusion = motion.deformation, motion.occlusion
        projected, values, warped, compensated = [], [], [], []

        def compensate(feature: torch.Tensor) -> torch.Tensor:
            out, proj, value = self.memory(feature, kp_source_value)
            projected.append(proj)
            values.append(value)
            if keep_features:
                warped.append(feature)
                compensated.append(out)
            return out

        out = compensate(warp_features(features[-1], deformation, occlusion))
        for i in range(self.num_down_blocks):
            out = self.up_blocks[i](self.resblock[2 * i + 1](self.resblock[2 * i](out)))
            skip = warp_features(features[-(i + 2)], deformation, occlusion)
            if i < self.num_down_blocks - 1:
                out = torch.cat([out, compensate(skip)], dim=1)

        occlusion_full = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear", align_corners=True)
        out = torch.sigmoid(self.final(out * (1 - occlusion_full) + skip))
        deformed = warp_features(source_image, deformation)
        prediction = out * (1 - occlusion_full) + deformed * occlusion_full
        return Decoded(prediction, deformed, projected, values, tuple(warped), tuple(compensated))

    def forward(self, source_image: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints,
                keep_features: bool = False) -> tuple[Decoded, DenseMotion]:
        motion = self.estimate_motion(source_image, kp_source, kp_driving)
        return self.decode(source_image, self.encode(source_image), motion, kp_source.value, keep_features), motion
