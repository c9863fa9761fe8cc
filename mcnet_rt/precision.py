"""Precision names and the one autocast switch used by the step, the CLI and the benchmarks.

Mixed precision is autocast at the chosen dtype plus the float32 regions the code marks, where half precision
would move the geometry: the motion transfer (`pipeline.step`), the keypoints' heat-map soft-argmax and the
dense motion's sampling coordinates and mask (`models`). The exported fp16 graphs are traced from the same code,
so they keep the same regions in float32."""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(device: torch.device | str, dtype: torch.dtype):
    """Mixed precision at `dtype` on `device`, or nothing for float32."""
    device_type = torch.device(device).type
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def full_precision(device: torch.device | str):
    """Autocast off inside a mixed-precision region (motion transfer composes jacobians and their inverses)."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a float32 region: float32 for half types, the input's own for float64 (double-precision runs
    such as gradient checks stay double)."""
    return torch.promote_types(dtype, torch.float32)
