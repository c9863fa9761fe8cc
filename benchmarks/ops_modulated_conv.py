"""Modulated conv (IICM) and expert-mixture dynamic conv (MCM) at the memory's real shapes: the released path
(per-sample weights + grouped conv, = the references), the best native alternative, and the fused kernel.

Native alternatives: for the modulated conv, StyleGAN2's non-fused path (scale x by the styles, one shared-weight
cuDNN conv, scale the output by the demodulation); for the dynamic conv, the deployment reformulation (one cuDNN
conv with all K experts' output channels, then the gated sum: K× the FLOPs, but dense and shared). Each case is
timed forward and forward+backward with CUDA events (median of many runs) with its peak memory, its largest
difference from the released path's output, and its speed-up over the released path and the native alternative.

    python benchmarks/ops_modulated_conv.py                 # GPU: batch 1 and 8, fp32/fp16/bf16, JSON on stdout
    python benchmarks/ops_modulated_conv.py --cpu-smoke     # tiny CPU run (the twins) so CI can check it runs
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from mcnet_rt.ops import _native
from mcnet_rt.ops.modulated_conv import (dynamic_conv2d, dynamic_conv2d_reference, modulated_conv2d,
                                         modulated_conv2d_reference)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def modulated_conv2d_fold(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                          eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2's non-fused modulated conv: the per-sample scales move onto the activations, so the weight is
    shared and one ordinary conv runs for the whole batch."""
    demod = torch.rsqrt(styles.float().pow(2) @ weight.float().pow(2).sum(dim=(2, 3)).t() + eps).to(x.dtype)
    out = F.conv2d(x * styles[:, :, None, None], weight, padding=1)
    return out * demod[:, :, None, None]


def dynamic_conv2d_experts(x: torch.Tensor, expert_weight: torch.Tensor, expert_bias: torch.Tensor,
                           gate: torch.Tensor) -> torch.Tensor:
    """Σₖ gate[b,k] · (conv(x, Wₖ) + bₖ) as one shared conv over all experts' output channels."""
    k, c_out = expert_weight.shape[:2]
    out = F.conv2d(x, expert_weight.reshape(k * c_out, *expert_weight.shape[2:]), expert_bias.reshape(-1),
                   padding=1)
    return (out.view(x.shape[0], k, c_out, *out.shape[2:]) * gate[:, :, None, None, None]).sum(1)


def _cases(batch: int, channels: int, out_channels: int, size: int, dtype: torch.dtype, device: torch.device):
    """(op, paths, input factory) at the model's shapes; inputs are leaves that require grad."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def leaf(*shape, scale=1.0, offset=0.0):
        t = (torch.randn(*shape, generator=g) * scale + offset).to(device, dtype)
        return t.requires_grad_()

    def modulated_inputs():
        memory = leaf(1, channels, size, size)
        return (memory, leaf(channels, channels, 3, 3, scale=(channels * 9) ** -0.5),
                leaf(batch, channels, scale=0.3, offset=1.0))

    def dynamic_inputs():
        gate = torch.softmax(torch.randn(batch, 4, generator=g) / 34, dim=1).to(device, dtype).requires_grad_()
        return (leaf(batch, channels, size, size), leaf(4, out_channels, channels, 3, 3, scale=(channels * 9) ** -0.5),
                leaf(4, out_channels, scale=0.1), gate)

    def expanded(fn):
        return lambda memory, *rest: fn(memory.expand(batch, -1, -1, -1), *rest)

    yield ("modulated_conv2d", f"{channels}->{channels}", modulated_inputs, {
        "released": expanded(modulated_conv2d_reference),
        "native_fold": expanded(modulated_conv2d_fold),
        "kernel": expanded(lambda *a: modulated_conv2d(*a, impl="kernel")),
    })
    yield ("dynamic_conv2d", f"{channels}->{out_channels}", dynamic_inputs, {
        "released": dynamic_conv2d_reference,
        "native_experts": dynamic_conv2d_experts,
        "kernel": lambda *a: dynamic_conv2d(*a, impl="kernel"),
    })


def _measure(fn, device: torch.device, warmup: int, iters: int) -> tuple[float, float]:
    """(median milliseconds, peak MiB allocated during the runs beyond what was live before)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if cuda else None
    return statistics.median(times), peak


def run(device: str = "cuda", batches=(1, 8), dtypes=("fp32", "fp16", "bf16"), channels: int = 512,
        dynamic_out_channels: int = 1024, size: int = 32, warmup: int = 5, iters: int = 50) -> list[dict]:
    """Result dicts, one per (op, batch, dtype, path, pass)."""
    device = torch.device(device)
    results = []
    for batch in batches:
        for dtype_name in dtypes:
            for op, channel_text, make_inputs, paths in _cases(batch, channels, dynamic_out_channels, size,
                                                               DTYPES[dtype_name], device):
                inputs = make_inputs()
                case = []
                with torch.no_grad():
                    expected = paths["released"](*inputs).float()
                for path, fn in paths.items():
                    with torch.no_grad():
                        error = (fn(*inputs).float() - expected).abs().max().item()

                    def forward():
                        with torch.no_grad():
                            fn(*inputs)

                    def forward_backward():
                        out = fn(*inputs)
                        torch.autograd.grad(out, inputs, torch.ones_like(out))

                    for pass_name, call in (("forward", forward), ("forward+backward", forward_backward)):
                        ms, peak = _measure(call, device, warmup, iters)
                        case.append({"op": op, "channels": channel_text, "size": size, "batch": batch,
                                     "dtype": dtype_name, "path": path, "pass": pass_name,
                                     "median_ms": round(ms, 4),
                                     "peak_mib": None if peak is None else round(peak, 2),
                                     "max_abs_diff_vs_released": error,
                                     "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                                     else "cpu"})
                results += _with_ratios(case)
    return results


def _with_ratios(case: list[dict]) -> list[dict]:
    """Adds each path's speed-up over the released path and over the native alternative (> 1: faster)."""
    ms = {(r["path"], r["pass"]): r["median_ms"] for r in case}
    native = next(r["path"] for r in case if r["path"].startswith("native"))
    return [{**r, "speedup_vs_released": round(ms["released", r["pass"]] / r["median_ms"], 3),
             "speedup_vs_native": round(ms[native, r["pass"]] / r["median_ms"], 3)} for r in case]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU twins (for CI)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "fp16", "bf16"])
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        results = run("cpu", batches=(1, 3), dtypes=("fp32",), channels=8, dynamic_out_channels=12, size=6,
                      warmup=1, iters=3)
    else:
        if not _native.cuda_kernels_available():
            print("ops_modulated_conv: needs mcnet_rt._C with CUDA kernels and a GPU (use --cpu-smoke on the CPU)",
                  file=sys.stderr)
            return 2
        results = run("cuda", batches=args.batches, dtypes=args.dtypes, iters=args.iters)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
