"""Operand checks of the fake (meta) implementations: the rules that the ops themselves (csrc/torch, C++) apply
before any launch, with the same errors naming the op and the operand.

The launchers read raw pointers with sizes from a shape struct: a wrong dtype is reinterpreted, a host pointer on
the GPU is read as device memory, a strided view is read as if packed. So every operand is checked, under
torch.export and torch.compile as in eager. `torch._check` keeps symbolic shapes symbolic under
torch.compile/torch.export (a relation becomes a guard or a run-time assert instead of specialising the shape).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _native


def tensor(op: str, name: str, value: torch.Tensor, *, dtype: torch.dtype | Sequence[torch.dtype],
           device: torch.device, ndim: int) -> None:
    """`value` is a packed `ndim`-D tensor of `dtype` (or one of them) on `device`, small enough for int indexing."""
    dtypes = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
    torch._check(value.dtype in dtypes, lambda: f"{op}: {name} must be "
                 f"{' or '.join(str(d).removeprefix('torch.') for d in dtypes)}, not {value.dtype}")
    torch._check(value.device == device,
                 lambda: f"{op}: {name} is on {value.device}, the op runs on {device}")
    torch._check(value.dim() == ndim, lambda: f"{op}: {name} must be {ndim}-D, not {tuple(value.shape)}")
    torch._check(value.is_contiguous(), lambda: f"{op}: {name} must be contiguous (strides {value.stride()})")
    most = _native.limit("max_elements")
    torch._check(value.numel() <= most,
                 lambda: f"{op}: {name} has {value.numel()} elements, the kernels index at most {most}")


def size(op: str, name: str, value: torch.Tensor, dim: int, expected, what: str) -> None:
    """`value.shape[dim] == expected` (a relation to another operand, described by `what`)."""
    torch._check(value.shape[dim] == expected,
                 lambda: f"{op}: {name} must have {what} ({expected}) in dim {dim}, not {tuple(value.shape)}")


def kernel_dtypes(device: torch.device) -> tuple[torch.dtype, ...]:
    """The element types the launchers run on `device` (meta tensors: any of them; a graph traced for another
    device: that device's, see `_native.traced_for`)."""
    device_type = _native.kernel_device_type(device)
    if device_type == "meta":
        return tuple(dict.fromkeys((*_native.kernel_dtypes("cuda"), *_native.kernel_dtypes("cpu"))))
    return _native.kernel_dtypes(device_type)
