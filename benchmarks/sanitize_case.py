"""One small case per op family through the kernels, forward and backward, in every kernel dtype: the workload
`compute-sanitizer --tool memcheck|racecheck` checks in a GPU session (benchmarks/gpu_session.py). Shapes are small
(the sanitizer slows kernels 10-100×) but cross tile edges: odd sizes, partial tiles. `--device cpu` runs the same
cases through the CPU twins (the session's rehearsal).

    compute-sanitizer --tool racecheck --error-exitcode 1 python3 benchmarks/sanitize_case.py memory_attention
"""
from __future__ import annotations

import argparse
import sys

import torch

from mcnet_rt.ops import dynamic_conv2d, memory_attention, missing_kernel, modulated_conv2d, warp_features
from mcnet_rt.precision import PRECISIONS


def run_warp(device, dtype, g):
    features = torch.randn(2, 37, 13, 11, generator=g).to(device, dtype)
    deformation = (torch.rand(2, 7, 6, 2, generator=g) * 2.4 - 1.2).to(device)
    occlusion = torch.rand(2, 1, 5, 5, generator=g).to(device)
    return warp_features, (features, deformation, occlusion)


def run_modulated_conv(device, dtype, g):
    x = torch.randn(3, 20, 9, 13, generator=g).to(device, dtype)
    weight = (torch.randn(70, 20, 3, 3, generator=g) / 13).to(device, dtype)
    styles = torch.rand(3, 20, generator=g).to(device) + 0.5
    return modulated_conv2d, (x, weight, styles)


def run_dynamic_conv(device, dtype, g):
    x = torch.randn(2, 24, 8, 9, generator=g).to(device, dtype)
    experts = (torch.randn(4, 40, 24, 3, 3, generator=g) / 15).to(device, dtype)
    bias = torch.randn(4, 40, generator=g).to(device, dtype)
    gate = torch.softmax(torch.randn(2, 4, generator=g), dim=1).to(device)
    return dynamic_conv2d, (x, experts, bias, gate)


def run_memory_attention(device, dtype, g):
    q = torch.randn(2, 40, 7, 9, generator=g).to(device, dtype)
    k = torch.randn(2, 40, 9, 9, generator=g).to(device, dtype)
    v = torch.randn(2, 40, 9, 9, generator=g).to(device, dtype)
    return memory_attention, (q, k, v)


FAMILIES = {"warp": [run_warp], "modulated_conv": [run_modulated_conv, run_dynamic_conv],
            "memory_attention": [run_memory_attention]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="+", choices=sorted(FAMILIES))
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    probe = torch.zeros(1, device=device)
    if missing_kernel(probe) is not None:  # nothing to check: say so rather than pass having run no kernel
        print(f"sanitize case: {missing_kernel(probe)}", file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(0)
    for family in args.families:
        for case in FAMILIES[family]:
            for precision in ("fp32", "fp16", "bf16"):
                dtype = PRECISIONS[precision]
                if missing_kernel(probe.to(dtype)) is not None:
                    print(f"{family} {case.__name__} {precision}: skipped ({missing_kernel(probe.to(dtype))})")
                    continue
                op, inputs = case(device, dtype, g)
                leaves = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
                out = op(*leaves, impl="kernel")
                torch.autograd.grad(out, [t for t in leaves if t.requires_grad], torch.randn_like(out))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                print(f"{family} {case.__name__} {precision}: ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
