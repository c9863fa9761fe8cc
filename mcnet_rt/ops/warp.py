"""Warp op family: the generator's per-scale feature warp and the dense-motion network's K+1 sparse warps.

The released code mixes `align_corners` conventions and the checkpoint depends on that mix: the generator's
deformation resize, grid sample and occlusion resize use `align_corners=True`, while the dense-motion sparse
warps leave `grid_sample` at its default (`False`). Both are one fused kernel (`csrc/kernels/warp.cu`): the
deformation and occlusion are resized on the fly at each output pixel, never materialised. The ops
(torch.ops.mcnet_rt.warp_features, sparse_warp; private warp, warp_backward) are defined in C++ (csrc/torch/warp.cpp);
here are their fake implementations, their autograd and the models' entry points.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks, _native, dispatch


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


def _check(op: str, features: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor | None,
           grids: int) -> None:
    """The launchers' contract (csrc/include/mcnet_rt/warp.h), as csrc/torch/warp.cpp checks it."""
    torch._check(grids >= 1, lambda: f"{op}: grids must be at least 1, not {grids}")
    _checks.tensor(op, "features", features, dtype=_checks.kernel_dtypes(features.device), device=features.device,
                   ndim=4)
    acc = _native.accumulation_dtype(features.dtype)
    _checks.tensor(op, "deformation", deformation, dtype=acc, device=features.device, ndim=4)
    _checks.size(op, "deformation", deformation, 0, features.shape[0] * grids, "batch × grids of features")
    _checks.size(op, "deformation", deformation, 3, 2, "x and y")
    if occlusion is not None:
        _checks.tensor(op, "occlusion", occlusion, dtype=acc, device=features.device, ndim=4)
        _checks.size(op, "occlusion", occlusion, 0, deformation.shape[0], "the grids of deformation")
        _checks.size(op, "occlusion", occlusion, 1, 1, "one channel")


@_native.register_fake("warp")
def _(features, deformation, occlusion, grids, align_corners):
    _check("warp", features, deformation, occlusion, grids)
    b, c, h, w = features.shape
    return features.new_empty((b * grids, c, h, w))


def _check_backward(grad_out, features, deformation, occlusion, grids) -> None:
    _check("warp_backward", features, deformation, occlusion, grids)
    torch._check(grad_out.dtype == features.dtype and grad_out.device == features.device,
                 lambda: f"warp_backward: grad_out ({grad_out.dtype}, {grad_out.device}) must match features")
    torch._check(grad_out.shape == (features.shape[0] * grids, *features.shape[1:]),
                 lambda: f"warp_backward: grad_out has shape {tuple(grad_out.shape)}, the output's is "
                         f"{(features.shape[0] * grids, *features.shape[1:])}")


@_native.register_fake("warp_backward")
def _(grad_out, features, deformation, occlusion, grids, align_corners):
    _check_backward(grad_out, features, deformation, occlusion, grids)
    acc = _native.accumulation_dtype(features.dtype)
    grad_occlusion = torch.empty_like(occlusion) if occlusion is not None else deformation.new_empty(0)
    return features.new_empty(features.shape, dtype=acc), torch.empty_like(deformation), grad_occlusion


def _setup_context(ctx, inputs, output):
    features, deformation, occlusion, grids, align_corners = inputs
    ctx.save_for_backward(features, deformation, occlusion)
    ctx.grids, ctx.align_corners = grids, align_corners


def _backward(ctx, grad_out):
    features, deformation, occlusion = ctx.saved_tensors
    grad_features, grad_deformation, grad_occlusion = torch.ops.mcnet_rt.warp_backward(
        grad_out, features, deformation, occlusion, ctx.grids, ctx.align_corners)
    return (grad_features.to(features.dtype), grad_deformation, grad_occlusion if occlusion is not None else None,
            None, None)


_native.register_autograd("warp", _backward, _setup_context)


def _warp_kernel(features: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor | None, grids: int,
                 align_corners: bool) -> torch.Tensor:
    """The kernel path of both entry points, with autograd (the private ops)."""
    acc = _native.accumulation_dtype(features.dtype)
    return torch.ops.mcnet_rt.warp(features.contiguous(), deformation.to(acc).contiguous(),
                                   None if occlusion is None else occlusion.to(acc).contiguous(), grids,
                                   align_corners)


def _sparse_warp_kernel(image: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
    b, k, h, w, _ = motions.shape
    out = _warp_kernel(image, motions.reshape(b * k, h, w, 2), None, k, False)
    return out.view(b, k, *image.shape[1:])


@_native.register_fake("warp_features")
def _(features, deformation, occlusion):
    _check("warp_features", features, deformation, occlusion, 1)
    return torch.empty_like(features)


def _check_sparse(image: torch.Tensor, motions: torch.Tensor) -> None:
    op = "sparse_warp"
    _checks.tensor(op, "image", image, dtype=_checks.kernel_dtypes(image.device), device=image.device, ndim=4)
    _checks.tensor(op, "motions", motions, dtype=_native.accumulation_dtype(image.dtype), device=image.device,
                   ndim=5)
    for dim, expected, what in ((0, image.shape[0], "the batch of image"), (2, image.shape[2], "the height of image"),
                                (3, image.shape[3], "the width of image"), (4, 2, "x and y")):
        _checks.size(op, "motions", motions, dim, expected, what)


@_native.register_fake("sparse_warp")
def _(image, motions):
    _check_sparse(image, motions)
    return image.new_empty((image.shape[0], motions.shape[1], *image.shape[1:]))


def _warp_features_kernel(features: torch.Tensor, deformation: torch.Tensor,
                          occlusion: torch.Tensor | None) -> torch.Tensor:
    """The public op, or the private ops when autograd records the call."""
    if _native.differentiable(features, deformation, occlusion):
        return _warp_kernel(features, deformation, occlusion, 1, True)
    acc = _native.accumulation_dtype(features.dtype)
    return torch.ops.mcnet_rt.warp_features(features.contiguous(), deformation.to(acc).contiguous(),
                                            None if occlusion is None else occlusion.to(acc).contiguous())


def _sparse_warp_public(image: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
    if _native.differentiable(image, motions):
        return _sparse_warp_kernel(image, motions)
    acc = _native.accumulation_dtype(image.dtype)
    return torch.ops.mcnet_rt.sparse_warp(image.contiguous(), motions.to(acc).contiguous())


def warp_features(features: torch.Tensor, deformation: torch.Tensor, occlusion: torch.Tensor | None = None,
                  impl: str | None = None) -> torch.Tensor:
    """The generator's warp (see `warp_features_reference`), through the fused kernel when `impl` allows."""
    return dispatch.run(impl, "warp_features", (features, deformation, occlusion), _warp_features_kernel,
                        warp_features_reference)


def sparse_warp(image: torch.Tensor, motions: torch.Tensor, impl: str | None = None) -> torch.Tensor:
    """The dense-motion network's K+1 warps (see `sparse_warp_reference`) in one launch."""
    return dispatch.run(impl, "sparse_warp", (image, motions), _sparse_warp_public, sparse_warp_reference)
