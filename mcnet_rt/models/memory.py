"""MCNet's memory: the global facial meta-memory, the IICM that conditions it on an implicit identity code, and
the MCM that compensates a warped feature map by cross-attention into the conditioned memory.

One `MemoryUnit` (the released `mbUnit`, `ExpendMemoryUnit`) serves every compensated scale; only the input
projection and the output conv/norm are per scale. The released code's constants are kept: interleaved channel
split (odd channels compensated), StyleGAN2 modulation (1/sqrt(fan-in) scales, modulation bias 1, demod eps 1e-8,
leaky-ReLU 0.2 × √2), expert gate temperature 34, attention scale 1/4.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MemoryConfig
from ..ops.memory_attention import memory_attention
from ..ops.modulated_conv import dynamic_conv2d, modulated_conv2d


class ModulatedConv(nn.Module):
    """StyleGAN2 modulated 3×3 conv with equalised learning rate (weights scaled at run time)."""

    def __init__(self, channels: int, style_dim: int, kernel_size: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, channels, kernel_size, kernel_size))
        self.modulation = nn.Linear(style_dim, channels)
        nn.init.normal_(self.modulation.weight)
        nn.init.ones_(self.modulation.bias)
        self.weight_gain = 1 / math.sqrt(channels * kernel_size ** 2)
        self.style_gain = 1 / math.sqrt(style_dim)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        styles = F.linear(style, self.modulation.weight * self.style_gain, self.modulation.bias)
        return modulated_conv2d(x, self.weight[0] * self.weight_gain, styles, demodulate=True, eps=1e-8)


class IdentityConditionedMemory(nn.Module):
    """IICM: an implicit identity code from the pooled projected feature and the source keypoints modulates the
    meta-memory into a source-specific memory.

    The code depends on the warped (driving-dependent) feature, so this runs per frame and per scale.
    """

    def __init__(self, config: MemoryConfig, num_kp: int):
        super().__init__()
        channels = config.channels
        self.noise = config.noise
        self.identity_mlp = nn.Sequential(nn.Linear(channels + 2 * num_kp, 128), nn.ReLU(True),
                                          nn.Linear(128, channels))
        self.modulated_conv = ModulatedConv(channels, style_dim=channels)
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.activation_bias = nn.Parameter(torch.zeros(channels))

    def identity_code(self, projected: torch.Tensor, kp_source_value: torch.Tensor) -> torch.Tensor:
        pooled = projected.mean(dim=(2, 3))
        return self.identity_mlp(torch.cat([pooled, kp_source_value.flatten(1)], dim=1))

    def forward(self, meta_memory: torch.Tensor, projected: torch.Tensor,
                kp_source_value: torch.Tensor) -> torch.Tensor:
        code = self.identity_code(projected, kp_source_value)
        memory = self.modulated_conv(meta_memory, code)  # batch 1, shared by every sample
        if self.noise:
            memory = memory + self.noise_strength * torch.randn_like(memory[:, :1])
        return F.leaky_relu(memory + self.activation_bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2)


class ExpertGate(nn.Module):
    """Softmax over K experts from a pooled feature, at a fixed temperature (the released 34 is never annealed)."""

    def __init__(self, in_channels: int, num_experts: int, temperature: float):
        super().__init__()
        hidden = int(in_channels * 0.25) + 1
        self.fc1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, num_experts, 1)
        self.temperature = temperature
        for conv in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return torch.softmax(logits.flatten(1) / self.temperature, dim=1)


class DynamicConv(nn.Module):
    """3×3 conv whose kernel is a per-sample mixture of K experts, gated by another feature map."""

    def __init__(self, in_channels: int, out_channels: int, num_experts: int, temperature: float):
        super().__init__()
        self.gate = ExpertGate(in_channels, num_experts, temperature)
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(num_experts, out_channels))
        for expert in self.weight:
            nn.init.kaiming_uniform_(expert)

    def forward(self, gate_input: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return dynamic_conv2d(x, self.weight, self.bias, self.gate(gate_input))


class MemoryCompensationModule(nn.Module):
    """MCM: keys and values from the conditioned memory, queries from the projected feature, cross-attention,
    then a difference branch and a per-scale output conv that returns the compensated half of the channels."""

    def __init__(self, config: MemoryConfig, out_channels: dict[str, int]):
        super().__init__()
        c = config.channels
        self.attention_scale = config.attention_scale
        self.kv_conv = DynamicConv(c, 2 * c, config.num_experts, config.gate_temperature)
        self.query_conv = nn.Conv2d(c, c, 1)
        self.diff_conv = nn.Conv2d(c, c, 1)
        self.out_convs = nn.ModuleDict({r: nn.Conv2d(c, n, 3, padding=1) for r, n in out_channels.items()})
        self.out_norms = nn.ModuleDict({r: nn.InstanceNorm2d(n, affine=True) for r, n in out_channels.items()})

    def query_key_value(self, projected: torch.Tensor, memory: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The attention's queries (from the projected feature), keys and values (from the conditioned memory)."""
        key, value = F.relu(self.kv_conv(projected, memory)).chunk(2, dim=1)
        return F.relu(self.query_conv(projected)), key, value

    def forward(self, projected: torch.Tensor, memory: torch.Tensor, scale: str) -> tuple[torch.Tensor, torch.Tensor]:
        query, key, value = self.query_key_value(projected, memory)
        residual = memory_attention(query, key, value, self.attention_scale)
        out = F.relu(self.diff_conv(projected - residual)) + projected
        return F.relu(self.out_norms[scale](self.out_convs[scale](out))), value


class MemoryUnit(nn.Module):
    """The released `mbUnit`: meta-memory + IICM + MCM, shared by the compensated scales.

    `feature_channels` maps each compensated resolution (as a string, e.g. "32") to the channel count of the
    warped feature compensated there. Even channels pass through; odd channels are compensated and
    re-interleaved in place.
    """

    def __init__(self, config: MemoryConfig, feature_channels: dict[str, int], num_kp: int):
        super().__init__()
        c = config.channels
        self.meta_memory = nn.Parameter(torch.empty(1, c, config.spatial, config.spatial))
        nn.init.kaiming_uniform_(self.meta_memory, mode="fan_in", nonlinearity="relu")
        halves = {r: n // 2 for r, n in feature_channels.items()}
        self.projections = nn.ModuleDict({r: nn.Conv2d(n, c, 1) for r, n in halves.items()})
        self.iicm = IdentityConditionedMemory(config, num_kp)
        self.mcm = MemoryCompensationModule(config, halves)

    def forward(self, feature: torch.Tensor, kp_source_value: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the compensated feature, and the projected feature and memory value that the consistency
        loss compares."""
        b, c, h, w = feature.shape
        scale = str(h)
        kept, compensated = feature[:, 0::2], feature[:, 1::2]
        projected = self.projections[scale](compensated)
        memory = self.iicm(self.meta_memory, projected, kp_source_value)
        compensated, value = self.mcm(projected, memory, scale)
        out = torch.stack([kept, compensated], dim=2).view(b, c, h, w)
        return out, projected, value
