"""Warp benchmark cases at the released model's shapes: the generator's per-scale feature warps (64×64
deformation and occlusion to 32/64/128/256 maps) and the dense-motion network's 16 sparse warps of the 64×64
source. Variants: the released PyTorch path (interpolate + grid_sample + multiply), the same path through
torch.compile (the best native alternative: inductor fuses it), and the fused kernel."""
from __future__ import annotations

import torch

from mcnet_rt.ops import warp

# (name, channels, feature size) of every warp in the vox-256 generator; the deformation and occlusion are 64×64.
FEATURE_WARPS = [("features@32", 512, 32), ("features@64", 256, 64), ("features@128", 128, 128),
                 ("features@256", 64, 256), ("image@256", 3, 256)]


def cases(device: torch.device, dtype: torch.dtype, batch: int):
    """(case name, inputs, {variant: fn(*inputs)}) for every warp of one generator forward."""
    g = torch.Generator(device="cpu").manual_seed(0)
    for name, channels, size in FEATURE_WARPS:
        features = torch.randn(batch, channels, size, size, generator=g).to(device, dtype)
        deformation = (torch.rand(batch, 64, 64, 2, generator=g) * 2.2 - 1.1).to(device, torch.float32)
        occlusion = torch.rand(batch, 1, 64, 64, generator=g).to(device, torch.float32)
        inputs = [features, deformation] if name.startswith("image") else [features, deformation, occlusion]
        yield name, inputs, {
            "released": lambda *a: warp.warp_features_reference(a[0], a[1].to(a[0].dtype),
                                                                *(t.to(a[0].dtype) for t in a[2:])),
            "kernel": lambda *a: warp.warp_features(*a, impl="kernel"),
        }
    image = torch.rand(batch, 3, 64, 64, generator=g).to(device, dtype)
    motions = (torch.rand(batch, 16, 64, 64, 2, generator=g) * 2.2 - 1.1).to(device, torch.float32)
    yield "sparse_warps_16@64", [image, motions], {
        "released": lambda i, m: warp.sparse_warp_reference(i, m.to(i.dtype)),
        "kernel": lambda i, m: warp.sparse_warp(i, m, impl="kernel"),
    }
