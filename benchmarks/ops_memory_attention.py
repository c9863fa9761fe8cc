"""Memory-attention benchmark at the MCM's shapes: 512-wide heads, 32×32 = 1024 memory slots, queries at the
32/64/128 feature scales (1024/4096/16384). Variants: the released path (bmm, materialised softmax, bmm), PyTorch
SDPA on (B,1,N,C) tokens (the best native path; at head size 512 it cannot use the flash or memory-efficient
backends), and the flash-style kernel.

    python benchmarks/ops_memory_attention.py                # CUDA: fp32/fp16/bf16, batch 1 and 8, all scales
    python benchmarks/ops_memory_attention.py --cpu-smoke    # a tiny case through the CPU twin (CI)

Prints the rows as JSON and the targets of issue 3 as measured: at scale 128, batch 8, fp16, forward, the kernel
≥3× faster than the released path and ≥1.5× faster than SDPA, with peak memory below one 16384×1024 matrix.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from mcnet_rt.precision import PRECISIONS
from mcnet_rt.ops import memory_attention, memory_attention_reference, missing_kernel
from ops import bench_case
from timing import stamp

SCALES = (32, 64, 128)
CHANNELS, MEMORY = 512, 32


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    tokens = [t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (query, key, value)]
    out = F.scaled_dot_product_attention(*tokens, scale=0.25)
    return out.squeeze(1).transpose(1, 2).reshape(query.shape)


def cases(device: torch.device, dtype: torch.dtype, batch: int, scales=SCALES, channels=CHANNELS, memory=MEMORY):
    """(case name, inputs, {variant: fn(*inputs)}) for the attention at each feature scale."""
    g = torch.Generator(device="cpu").manual_seed(0)
    for size in scales:
        # ReLU'd projections, as in the MCM (queries and keys are non-negative)
        query = torch.rand(batch, channels, size, size, generator=g).to(device, dtype)
        key = torch.rand(batch, channels, memory, memory, generator=g).to(device, dtype)
        value = torch.rand(batch, channels, memory, memory, generator=g).to(device, dtype)
        yield f"attention@{size}", [query, key, value], {
            "released": memory_attention_reference,
            "sdpa": sdpa,
            "kernel": lambda q, k, v: memory_attention(q, k, v, impl="kernel"),
        }


def run(device: torch.device, dtypes, batches, scales=SCALES, repeats=100, warmup=10, channels=CHANNELS,
        memory=MEMORY) -> list[dict]:
    """Result rows (p50 ms, peak MiB on CUDA, kernel speed-up over each alternative) for every case."""
    rows = []
    for precision in dtypes:
        for batch in batches:
            for name, inputs, variants in cases(device, PRECISIONS[precision], batch, scales, channels, memory):
                for row in bench_case(name, inputs, variants, device, warmup, repeats):
                    rows.append({"family": "memory_attention", "precision": precision, "batch": batch, **row})
    return rows


def targets(rows: list[dict]) -> dict:
    """The issue's targets, read off the measured rows (absent when that case was not run)."""
    picked = {r["variant"]: r for r in rows if r["case"] == "attention@128" and r["batch"] == 8
              and r["precision"] == "fp16" and r["mode"] == "forward"}
    if "kernel" not in picked:
        return {}
    scores_mib = 8 * 128 * 128 * 1024 * 2 / 2**20  # the fp16 score matrices the released path materialises
    kernel = picked["kernel"]
    found = {"kernel_p50_ms": kernel["p50_ms"], "score_matrix_mib": scores_mib}
    for variant, need in (("released", 3.0), ("sdpa", 1.5)):
        if variant in picked:
            found[f"speedup_vs_{variant}"] = picked[variant]["kernel_speedup"]
            found[f"speedup_vs_{variant}_met"] = picked[variant]["kernel_speedup"] >= need
    if "peak_mib" in kernel:
        found["kernel_peak_mib"] = kernel["peak_mib"]
        found["memory_met"] = kernel["peak_mib"] < scores_mib / 4
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="one tiny case through the CPU twin")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16"], choices=sorted(PRECISIONS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--scales", nargs="+", type=int, default=list(SCALES))
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()

    if args.cpu_smoke:
        device = torch.device("cpu")
        rows = run(device, ["fp32"], [1], scales=[8], repeats=3, warmup=1, channels=16, memory=4)
    else:
        device = torch.device("cuda")
        reason = missing_kernel(torch.zeros(1, device="cuda")) if torch.cuda.is_available() else "no CUDA device"
        if reason is not None:
            print(f"memory attention benchmark: {reason} (use --cpu-smoke for the CPU twin)", file=sys.stderr)
            return 2
        rows = run(device, args.dtypes, args.batches, args.scales, args.repeats)
    print(json.dumps({"benchmark": "ops_memory_attention", **stamp(device), "results": rows,
                      "targets": targets(rows)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
