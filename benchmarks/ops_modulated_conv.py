"""Modulated-conv benchmark at the memory's shapes (32×32, 512 channels, every scale uses the same memory): the
IICM's StyleGAN2 modulated conv 512→512 on the memory expanded to the batch, and the MCM's 4-expert dynamic conv
512→1024. Variants: the released path (per-sample weights + grouped conv, = the references), the best native
alternative, and the fused kernel. Native alternatives: for the modulated conv, StyleGAN2's non-fused path (scale
x by the styles, one shared-weight cuDNN conv, scale the output by the demodulation); for the dynamic conv, the
deployment reformulation (one shared cuDNN conv over all experts' output channels, then the gated sum: K× the
FLOPs, but dense).

    python benchmarks/ops_modulated_conv.py                # CUDA: fp32/fp16/bf16, batch 1 and 8
    python benchmarks/ops_modulated_conv.py --cpu-smoke    # tiny cases through the CPU twins (CI)

Prints the rows as JSON, with each variant's largest difference from the released path's forward output.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from mcnet_rt.precision import PRECISIONS
from mcnet_rt.ops import missing_kernel
from mcnet_rt.ops.modulated_conv import (dynamic_conv2d, dynamic_conv2d_reference, modulated_conv2d,
                                         modulated_conv2d_reference)
from ops import bench_case
from timing import stamp

CHANNELS, KV_CHANNELS, MEMORY, EXPERTS = 512, 1024, 32, 4


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


def cases(device: torch.device, dtype: torch.dtype, batch: int, channels=CHANNELS, kv_channels=KV_CHANNELS,
          memory=MEMORY):
    """(case name, inputs, {variant: fn(*inputs)}) for the two per-sample convs of one MCM call."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, scale=1.0, offset=0.0):
        return (torch.randn(*shape, generator=g) * scale + offset).to(device, dtype)

    fan_in = (channels * 9) ** -0.5
    # The meta-memory is one map: the model expands it to the batch, so the variants do too.
    expand = lambda fn: lambda m, *rest: fn(m.expand(batch, -1, -1, -1), *rest)  # noqa: E731
    yield f"modulated_conv {channels}->{channels}@{memory}", [
        randn(1, channels, memory, memory), randn(channels, channels, 3, 3, scale=fan_in),
        randn(batch, channels, scale=0.3, offset=1.0)], {
        "released": expand(modulated_conv2d_reference),
        "native_fold": expand(modulated_conv2d_fold),
        "kernel": expand(lambda *a: modulated_conv2d(*a, impl="kernel")),
    }
    gate = torch.softmax(torch.randn(batch, EXPERTS, generator=g) / 34, dim=1).to(device, dtype)
    yield f"dynamic_conv {channels}->{kv_channels}@{memory}", [
        randn(batch, channels, memory, memory), randn(EXPERTS, kv_channels, channels, 3, 3, scale=fan_in),
        randn(EXPERTS, kv_channels, scale=0.1), gate], {
        "released": dynamic_conv2d_reference,
        "native_experts": dynamic_conv2d_experts,
        "kernel": lambda *a: dynamic_conv2d(*a, impl="kernel"),
    }


@torch.no_grad()
def agreement(name: str, inputs, variants) -> dict[str, float]:
    """Largest |variant − released| of the forward output, per variant."""
    expected = variants["released"](*inputs).float()
    return {variant: (fn(*inputs).float() - expected).abs().max().item() for variant, fn in variants.items()}


def run(device: torch.device, dtypes, batches, repeats=100, warmup=10, **shapes) -> list[dict]:
    """Result rows (p50 ms, peak MiB on CUDA, kernel speed-up over each alternative, agreement) for every case."""
    rows = []
    for precision in dtypes:
        for batch in batches:
            for name, inputs, variants in cases(device, PRECISIONS[precision], batch, **shapes):
                differences = agreement(name, inputs, variants)
                for row in bench_case(name, inputs, variants, device, warmup, repeats):
                    rows.append({"family": "modulated_conv", "precision": precision, "batch": batch, **row,
                                 "max_abs_diff_vs_released": differences[row["variant"]]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny cases through the CPU twins")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16"], choices=sorted(PRECISIONS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()

    if args.cpu_smoke:
        device = torch.device("cpu")
        rows = run(device, ["fp32"], [1, 3], repeats=3, warmup=1, channels=8, kv_channels=12, memory=6)
    else:
        device = torch.device("cuda")
        reason = missing_kernel(torch.zeros(1, device="cuda")) if torch.cuda.is_available() else "no CUDA device"
        if reason is not None:
            print(f"modulated conv benchmark: {reason} (use --cpu-smoke for the CPU twins)", file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = True
        rows = run(device, args.dtypes, args.batches, args.repeats)
    print(json.dumps({"benchmark": "ops_modulated_conv", **stamp(device), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
