"""Convolution blocks shared by the keypoint detector, the dense-motion network and the generator.

Module and attribute names follow the released code where they appear in the checkpoint's keys.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H,W,2) grid of (x, y) spanning [-1, 1] with inclusive end-points, as the released keypoints use."""
    x = 2 * (torch.arange(width, device=device, dtype=dtype) / (width - 1)) - 1
    y = 2 * (torch.arange(height, device=device, dtype=dtype) / (height - 1)) - 1
    return torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)


class SameBlock2d(nn.Module):
    """conv → BatchNorm → ReLU at constant resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(SameBlock2d):
    """conv3×3 → BatchNorm → ReLU → 2×2 average pool."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), 2)


class UpBlock2d(SameBlock2d):
    """Nearest ×2 upsampling → conv3×3 → BatchNorm → ReLU."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: (BN → ReLU → conv3×3) twice, plus identity."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(features)
        self.norm2 = nn.BatchNorm2d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(out))) + x


class Encoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        widths = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock2d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class Decoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            width_in = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(UpBlock2d(width_in, min(max_features, block_expansion * 2 ** i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net whose output concatenates the input: `out_filters` = block_expansion + in_features channels."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = Encoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = Decoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def gaussian_kernel(sigma: float, size: int) -> torch.Tensor:
    """Normalised (size,size) Gaussian, centred on (size−1)/2."""
    t = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    kernel = g[:, None] * g[None, :]
    return kernel / kernel.sum()


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (sigma = (1/scale − 1)/2) then strided sampling: band-limited downscaling by `scale`.

    The kernel is the checkpoint buffer `down.weight`; it is deterministic and rebuilt here identically.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.pad = size // 2
        self.stride = int(1 / scale)
        self.register_buffer("weight", gaussian_kernel(sigma, size).expand(channels, 1, size, size).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(F.pad(x, (self.pad,) * 4), self.weight, groups=x.shape[1])
        return out[:, :, :: self.stride, :: self.stride]
