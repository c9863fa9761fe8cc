"""Per-op benchmark: each fused op family forward and forward+backward against the released PyTorch path and
the best native alternative, at the model's real shapes; median of many runs (CUDA events), peak memory, and
the kernel's speed-up over each alternative, measured in one run.

    python benchmarks/ops.py                         # CUDA: fp32/fp16/bf16, batch 1 and 8, every family
    python benchmarks/ops.py --device cpu --dtypes fp32 --batches 1 --iterations 3   # CPU twins (smoke run)

Each family module (ops_<family>.py) yields cases: (name, inputs, {variant: fn(*inputs)}) where "released" is
the released code's path and "kernel" ours; `--compile` adds torch.compile of the released path.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

from mcnet_rt.precision import PRECISIONS
from mcnet_rt.ops import missing_kernel
from timing import RESULTS, measure, stamp

FAMILIES = ("warp", "memory_attention", "modulated_conv")


def forward_backward(fn, inputs):
    """A closure running fn forward, then backward into every floating input."""
    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    differentiable = [t for t in leaves if t.requires_grad]

    def step():
        out = fn(*leaves)
        torch.autograd.grad(out, differentiable, torch.ones_like(out))
    return step


def bench_case(name, inputs, variants, device, warmup, iterations):
    rows = []
    for mode in ("forward", "forward+backward"):
        timings = {}
        for variant, fn in variants.items():
            if mode == "forward":
                def step(fn=fn):
                    with torch.no_grad():
                        fn(*inputs)
            else:
                step = forward_backward(fn, inputs)
            timings[variant] = measure(step, device, warmup, iterations)
        kernel = timings.get("kernel")
        for variant, t in timings.items():
            row = {"case": name, "mode": mode, "variant": variant, **t}
            if kernel is not None and variant != "kernel":
                row["kernel_speedup"] = t["p50_ms"] / kernel["p50_ms"]
            rows.append(row)
            extra = f"  kernel {row['kernel_speedup']:.2f}x faster" if "kernel_speedup" in row else ""
            memory = f", peak {t['peak_mib']:.1f} MiB" if "peak_mib" in t else ""
            print(f"  {name:24s} {mode:17s} {variant:9s} p50 {t['p50_ms']:8.3f} ms{memory}{extra}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--dtypes", nargs="+", default=None, choices=sorted(PRECISIONS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--compile", action="store_true", help="add torch.compile of the released path")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtypes = args.dtypes or (["fp32", "fp16", "bf16"] if device.type == "cuda" else ["fp32"])
    probe = torch.zeros(1, device=device)
    if missing_kernel(probe) is not None:
        print(f"ops benchmark: {missing_kernel(probe)}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = []
    for family in args.families:
        module = importlib.import_module(f"ops_{family}")
        for precision in dtypes:
            dtype = PRECISIONS[precision]
            if missing_kernel(probe.to(dtype)) is not None:
                print(f"{family} {precision}: skipped ({missing_kernel(probe.to(dtype))})")
                continue
            for batch in args.batches:
                print(f"{family} {precision} batch {batch}")
                for name, inputs, variants in module.cases(device, dtype, batch):
                    if args.compile:
                        variants = {**variants, "compiled": torch.compile(variants["released"], dynamic=False)}
                    for row in bench_case(name, inputs, variants, device, args.warmup, args.iterations):
                        results.append({"family": family, "precision": precision, "batch": batch, **row})
    report = {"benchmark": "ops", **stamp(device), "results": results}
    output = args.output or RESULTS / f"ops_{device.type}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
