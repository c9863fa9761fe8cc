"""The native side of the ops: the torch ops library `mcnet_rt/_ops.so` (the ops themselves, defined in C++ over
the kernels and CPU twins: csrc/torch), the module `mcnet_rt._C` (build and machine facts, the table of dtypes and
limits), and the default `impl` of every op ("auto", "reference" or "kernel"; see `dispatch`):
`MCNET_RT_OPS=reference|kernel|auto` or `use_impl(...)` sets it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

IMPLS = ("auto", "reference", "kernel")
# The ops library: a plain shared library that C++ callers load too (csrc/README.md).
OPS_LIBRARY = Path(__file__).resolve().parent.parent / "_ops.so"


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}, not {impl!r}")
    return impl


_default_impl = _check_impl(os.environ.get("MCNET_RT_OPS", "auto"))
_native: ModuleType | None = None
_import_error: str | None = None
_ops_loaded: bool | None = None
_traced_for: str | None = None


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


def ops_loaded() -> bool:
    """Load `_ops.so` into torch once (it defines torch.ops.mcnet_rt.*); False when it was not built."""
    global _ops_loaded
    if _ops_loaded is None:
        _ops_loaded = OPS_LIBRARY.is_file()
        if _ops_loaded:
            torch.ops.load_library(str(OPS_LIBRARY))
    return _ops_loaded


def register_fake(op: str) -> Callable[[Callable], Callable]:
    """`torch.library.register_fake` for an op of `_ops.so`, when it is loaded (else the op does not exist)."""
    def register(fake: Callable) -> Callable:
        if ops_loaded():
            torch.library.register_fake(f"mcnet_rt::{op}", fake)
        return fake
    return register


def register_autograd(op: str, backward: Callable, setup_context: Callable) -> None:
    if ops_loaded():
        torch.library.register_autograd(f"mcnet_rt::{op}", backward, setup_context=setup_context)


def kernel_dtypes(device_type: str) -> tuple[torch.dtype, ...]:
    """The element types the launchers run on `device_type` ("cuda", "cpu"; none without `_C`), from `_C`'s table."""
    module = native()
    if module is None or device_type not in ("cuda", "cpu"):
        return ()
    return tuple(getattr(torch, name) for name in module.limits[f"{device_type}_dtypes"])


def limit(name: str) -> int:
    """A launcher limit of `_C`'s table: "max_elements" (32-bit indexing), "max_attention_channels" (CUDA)."""
    module = native()
    if module is None:
        raise RuntimeError(not_built_message())
    return module.limits[name]


def not_built_message() -> str:
    missing = f"mcnet_rt._C ({_import_error})" if _import_error else f"mcnet_rt's ops library ({OPS_LIBRARY})"
    return (f"{missing} is not built; build it with "
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


@contextlib.contextmanager
def traced_for(device_type: str) -> Iterator[None]:
    """Trace the ops inside the block for a graph that runs on `device_type`: the plugin graph is traced on the
    CPU and runs the CUDA kernels inside TensorRT, so the kernel dispatch and the fakes' checks take that device's
    element types. Only fakes run under tracing; a real CPU kernel still refuses what it cannot run."""
    global _traced_for
    previous, _traced_for = _traced_for, device_type
    try:
        yield
    finally:
        _traced_for = previous


def kernel_device_type(device: torch.device) -> str:
    """The device type whose kernels run an op on `device`'s tensors: the traced-for one inside `traced_for`."""
    return _traced_for or device.type


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Kernels accumulate in float32 (float64 for the float64 twins); gradients come back in this type."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def differentiable(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd must record this call (the private ops with backward kernels run it then)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
