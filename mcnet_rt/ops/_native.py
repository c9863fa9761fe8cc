"""The native module `mcnet_rt._C`, the launchers' argument helpers, and the default `impl` of every op
("auto", "reference" or "kernel"; see `dispatch`): `MCNET_RT_OPS=reference|kernel|auto` or `use_impl(...)` sets it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

import torch

IMPLS = ("auto", "reference", "kernel")
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")
    return impl


_default_impl = _check_impl(os.environ.get("MCNET_RT_OPS", "auto"))
_native: ModuleType | None = None
_import_error: str | None = None


def native() -> ModuleType | None:
    """The `_C` module, or None when it was not built (the reason is kept for error messages)."""
    global _native, _import_error
    if _native is None and _import_error is None:
        try:
            from .. import _C
            _native = _C
        except ImportError as error:
            _import_error = str(error)
    return _native


def not_built_message() -> str:
    return (f"the native module mcnet_rt._C is not built ({_import_error}); build it with "
            "`pip install --no-build-isolation .` or `python setup.py build_ext --inplace`")


def resolve_impl(impl: str | None) -> str:
    """`impl` itself when given, else the default."""
    return _check_impl(impl or _default_impl)


@contextlib.contextmanager
def use_impl(impl: str) -> Iterator[None]:
    """Run every op with `impl` inside the block (e.g. a whole model through the kernels or their twins)."""
    global _default_impl
    previous, _default_impl = _default_impl, _check_impl(impl)
    try:
        yield
    finally:
        _default_impl = previous


def dtype_code(dtype: torch.dtype) -> int:
    return _DTYPE_CODES[dtype]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Kernels accumulate in float32 (float64 for the float64 twins); gradients come back in this type."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def address(tensor: torch.Tensor | None) -> int:
    """A launcher's pointer argument: the tensor's data pointer, 0 for an absent optional tensor."""
    return 0 if tensor is None else tensor.data_ptr()


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Make the operands' CUDA device current around a launch: the launchers take no device, so a kernel for
    `cuda:1` tensors would otherwise start on whichever device happens to be current."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def differentiable(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd must record this call (the private ops with backward kernels run it then)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def launch_args(tensor: torch.Tensor) -> tuple[bool, int]:
    """(is CUDA, current stream handle) for a launcher: kernels run on PyTorch's current stream."""
    if tensor.device.type == "cuda":
        return True, torch.cuda.current_stream(tensor.device).cuda_stream
    return False, 0
