"""Keypoint detector (FOMM's, unchanged in MCNet): heat-map soft-argmax keypoints with local jacobians."""
from __future__ import annotations

import torch
from torch import nn

from ..config import KeypointDetectorConfig
from ..keypoints import Keypoints
from ..precision import at_least_float32
from .blocks import AntiAliasDownsample, Hourglass, coordinate_grid


class KeypointDetector(nn.Module):
    def __init__(self, config: KeypointDetectorConfig, num_kp: int, num_channels: int = 3):
        super().__init__()
        self.num_kp = num_kp
        self.temperature = config.temperature
        self.predictor = Hourglass(config.block_expansion, num_channels, config.num_blocks, config.max_features)
        # 7×7 heads without padding: the released heat-maps are 58×58 for a 64×64 input.
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=7)
        self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * num_kp, kernel_size=7)
        nn.init.zeros_(self.jacobian.weight)
        with torch.no_grad():
            self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(num_kp))
        self.down = AntiAliasDownsample(num_channels, config.scale_factor) if config.scale_factor != 1 else None

    def forward(self, image: torch.Tensor) -> Keypoints:
        x = self.down(image) if self.down is not None else image
        features = self.predictor(x)
        # The heads run at the autocast dtype, the soft-argmax in float32: a half softmax over logits/0.1 and half
        # sums over the heat-map would move the keypoints.
        logits = self.kp(features)
        logits = logits.to(at_least_float32(logits.dtype))
        b, k, h, w = logits.shape
        heatmap = torch.softmax(logits.view(b, k, h * w) / self.temperature, dim=2).view(b, k, h, w)
        grid = coordinate_grid(h, w, device=heatmap.device, dtype=heatmap.dtype)
        value = (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3))
        jacobian_map = self.jacobian(features).to(heatmap.dtype).view(b, k, 4, h, w)
        jacobian = (heatmap.unsqueeze(2) * jacobian_map).view(b, k, 4, h * w).sum(dim=-1)
        return Keypoints(value, jacobian.view(b, k, 2, 2))
