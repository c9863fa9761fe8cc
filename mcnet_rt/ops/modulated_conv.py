"""Per-sample convolutions of the memory: StyleGAN2 modulated conv (IICM) and the expert-mixture dynamic conv (MCM).

Both apply a different kernel to every sample. The references build the per-sample weights and run one grouped
convolution with groups = batch, as the released code does; the fused kernels fold modulation, demodulation and
expert mixing into the convolution instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """Convolve sample i of `x` (B,Cin,H,W) with `weight[i]` (B,Cout,Cin,k,k) and `bias[i]` (B,Cout)."""
    b, c_in, h, w = x.shape
    c_out = weight.shape[1]
    out = F.conv2d(x.reshape(1, b * c_in, h, w), weight.reshape(b * c_out, *weight.shape[2:]),
                   None if bias is None else bias.reshape(-1), padding=padding, groups=b)
    return out.view(b, c_out, out.shape[-2], out.shape[-1])


def modulated_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                               demodulate: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 conv: `weight` (Cout,Cin,k,k), already scaled by 1/sqrt(Cin·k²), times per-sample input-channel
    `styles` (B,Cin), demodulated per output channel with rsqrt(Σw² + eps); 'same' padding, no bias."""
    w = weight.unsqueeze(0) * styles[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + eps)[:, :, None, None, None]
    return _grouped_conv(x, w, None, padding=weight.shape[-1] // 2)


def dynamic_conv2d_reference(x: torch.Tensor, expert_weight: torch.Tensor, expert_bias: torch.Tensor,
                             gate: torch.Tensor) -> torch.Tensor:
    """Conv of `x` (B,Cin,H,W) with the per-sample mixture Σₖ gate[b,k]·expert_weight[k] (K,Cout,Cin,k,k) and
    Σₖ gate[b,k]·expert_bias[k] (K,Cout); `gate` is (B,K); 'same' padding."""
    k = expert_weight.shape[0]
    weight = torch.mm(gate, expert_weight.reshape(k, -1)).view(gate.shape[0], *expert_weight.shape[1:])
    bias = torch.mm(gate, expert_bias)
    return _grouped_conv(x, weight, bias, padding=expert_weight.shape[-1] // 2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """The models' entry point: the fused kernel replaces the reference here, nowhere else."""
    return modulated_conv2d_reference(x, weight, styles, demodulate, eps)


def dynamic_conv2d(x: torch.Tensor, expert_weight: torch.Tensor, expert_bias: torch.Tensor,
                   gate: torch.Tensor) -> torch.Tensor:
    """The models' entry point for the expert-mixture conv (see `modulated_conv2d`)."""
    return dynamic_conv2d_reference(x, expert_weight, expert_bias, gate)
