"""Warp op family: the generator's per-scale feature warp and the dense-motion network's K+1 sparse warps.

The released code mixes `align_corners` conventions and the checkpoint depends on that mix: the generator's
deformation resize, grid sample and occlusion resize use `align_corners=True`, while the dense-motion sparse
warps leave `grid_sample` at its default (`False`). The fused kernels reproduce these references.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def warp_features_reference(
    features: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor | None = None
) -> torch.Tensor:
    """Sample `features` (B,C,H,W) at `deformation` (B,h,w,2, x then y in [-1,1]), times `occlusion` (B,1,h',w').

    The deformation and the occlusion map are resized bilinearly to H×W first (align_corners=True).
    """
    size = tuple(features.shape[-2:])
    grid = _resize(deformation.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if occlusion is not None:
        out = out * _resize(occlusion, size)
    return out


def sparse_warp_reference(image: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
    """Warp `image` (B,C,H,W) by each of the K+1 grids in `motions` (B,K+1,H,W,2) -> (B,K+1,C,H,W)."""
    b, c, h, w = image.shape
    k = motions.shape[1]
    repeated = image.unsqueeze(1).expand(b, k, c, h, w).reshape(b * k, c, h, w)
    out = F.grid_sample(repeated, motions.reshape(b * k, h, w, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.view(b, k, c, h, w)


def warp_features(features: torch.Tensor, deformation: torch.Tensor,
                  occlusion: torch.Tensor | None = None) -> torch.Tensor:
    """The models' entry point: the fused kernel replaces the reference here, nowhere else."""
    return warp_features_reference(features, deformation, occlusion)


def sparse_warp(image: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
    """The models' entry point for the K+1 sparse warps (see `warp_features`)."""
    return sparse_warp_reference(image, motions)
