"""One small case per op family through the CUDA kernels, forward and backward, in every kernel dtype: the
workload `compute-sanitizer --tool memcheck|racecheck` checks in a GPU session (benchmarks/gpu_session.sh).
Shapes are small (the sanitizer slows kernels 10-100×) but cross tile edges: odd sizes, partial tiles.

    compute-sanitizer --tool racecheck --error-exitcode 1 python benchmarks/sanitize_case.py memory_attention
"""
from __future__ import annotations

import argparse

import torch

from mcnet_rt.ops import dynamic_conv2d, memory_attention, modulated_conv2d, warp_features


def run_warp(dtype, g):
    features = torch.randn(2, 37, 13, 11, generator=g).to("cuda", dtype)
    deformation = (torch.rand(2, 7, 6, 2, generator=g) * 2.4 - 1.2).cuda()
    occlusion = torch.rand(2, 1, 5, 5, generator=g).cuda()
    return warp_features, (features, deformation, occlusion)


def run_modulated_conv(dtype, g):
    x = torch.randn(3, 20, 9, 13, generator=g).to("cuda", dtype)
    weight = (torch.randn(70, 20, 3, 3, generator=g) / 13).to("cuda", dtype)
    styles = torch.rand(3, 20, generator=g).cuda() + 0.5
    return modulated_conv2d, (x, weight, styles)


def run_dynamic_conv(dtype, g):
    x = torch.randn(2, 24, 8, 9, generator=g).to("cuda", dtype)
    experts = (torch.randn(4, 40, 24, 3, 3, generator=g) / 15).to("cuda", dtype)
    bias = torch.randn(4, 40, generator=g).to("cuda", dtype)
    gate = torch.softmax(torch.randn(2, 4, generator=g), dim=1).cuda()
    return dynamic_conv2d, (x, experts, bias, gate)


def run_memory_attention(dtype, g):
    q = torch.randn(2, 40, 7, 9, generator=g).to("cuda", dtype)
    k = torch.randn(2, 40, 9, 9, generator=g).to("cuda", dtype)
    v = torch.randn(2, 40, 9, 9, generator=g).to("cuda", dtype)
    return memory_attention, (q, k, v)


FAMILIES = {"warp": [run_warp], "modulated_conv": [run_modulated_conv, run_dynamic_conv],
            "memory_attention": [run_memory_attention]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=sorted(FAMILIES))
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    for case in FAMILIES[args.family]:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            op, inputs = case(dtype, g)
            leaves = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
            out = op(*leaves, impl="kernel")
            torch.autograd.grad(out, [t for t in leaves if t.requires_grad], torch.randn_like(out))
            torch.cuda.synchronize()
            print(f"{args.family} {case.__name__} {str(dtype).removeprefix('torch.')}: ran")


if __name__ == "__main__":
    main()
