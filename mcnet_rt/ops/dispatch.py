"""The one switch between the kernels of the ops library `mcnet_rt/_ops.so` and the PyTorch implementations, for
every op.

`impl="reference"` runs the pure-PyTorch oracle; `impl="kernel"` runs the kernels (the CPU twins on CPU tensors) and
fails with a message naming what is missing; `impl="auto"` (the default) runs a CUDA kernel only where it can run
and has earned its place:

1. The kernels must be able to run on the device: CUDA code in the build, a driver that supports the CUDA runtime
   they link, machine code for the GPU's architecture (or PTX the driver can compile for it), a kernel for the
   dtype (the build's facts come from `_C`, compiled with the kernels). Otherwise the reference runs, with one
   logged note per reason.
2. The first time an op meets a (GPU, dtype, shape class), the self-test (`selftest.py`) checks the kernel against
   the reference on that input and times both (and any native alternative); the kernel runs only where it agrees
   and is faster. Decisions are cached in memory and on disk (`decisions.py`).

CPU tensors go to the references under `auto`: the twins are the kernels' algorithms in plain C++ for testing, not
faster than PyTorch's vectorised CPU ops.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from . import _native, decisions
from .machine import Build, DeviceFacts, machine
from .selftest import Decision, self_test

# Op -> family: the families are what `mcnet-rt info --kernels` reports.
FAMILIES = {"warp_features": "warp", "sparse_warp": "warp", "memory_attention": "memory_attention",
            "modulated_conv2d": "modulated_conv", "dynamic_conv2d": "modulated_conv"}

log = logging.getLogger("mcnet_rt.ops")
_noted: set[str] = set()
_decided: dict[tuple[str, str], Decision] = {}


def _version(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}"


def cuda_problem(build: Build | None, facts: DeviceFacts, dtype: torch.dtype) -> str | None:
    """Why mcnet_rt cannot run a CUDA kernel in `dtype` on the device described by `facts`, or None when it can."""
    if build is None:
        return "mcnet_rt was built without CUDA kernels (nvcc was not found at build time); rebuild it with nvcc"
    runtime = _version(build.runtime_version)
    if facts.driver_version == 0:
        return "no NVIDIA driver answers mcnet_rt's CUDA runtime (no GPU on this machine?)"
    if facts.driver_version // 1000 < build.runtime_version // 1000:
        return (f"the NVIDIA driver supports CUDA up to {_version(facts.driver_version)}, but mcnet_rt's kernels "
                f"link the CUDA {runtime} runtime, which needs a driver for CUDA {build.runtime_version // 1000}.0 or "
                f"newer; update the driver, or rebuild mcnet_rt with a CUDA {facts.driver_version // 1000}.x toolkit")
    if facts.device_count < 0:
        return (f"mcnet_rt's CUDA {runtime} runtime cannot use this machine's driver "
                f"(cudaError {-facts.device_count})")
    major, minor = facts.capability
    arch = 10 * major + minor
    native = any(sass // 10 == major and sass <= arch for sass in build.sass_archs)
    if not native and build.ptx_arch > arch:
        built = ", ".join(f"sm_{a}" for a in build.sass_archs)
        return (f"mcnet_rt's kernels have no code for {facts.name} (sm_{arch}): they carry {built} and PTX for "
                f"compute_{build.ptx_arch}; rebuild them with MCNET_RT_CUDA_ARCHS={arch}")
    return missing_dtype("cuda", dtype)


def missing_dtype(device_type: str, dtype: torch.dtype) -> str | None:
    """Why mcnet_rt has no kernel for `dtype` on `device_type`, or None when it has."""
    if dtype in _native.kernel_dtypes(device_type):
        return None
    names = ", ".join(str(d).removeprefix("torch.") for d in _native.kernel_dtypes(device_type))
    return f"mcnet_rt's kernels run {device_type} tensors in {names}, not {dtype}"


def missing_device_kernel(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the kernels cannot run an op on `device` in `dtype`, or None when it can."""
    if _native.native() is None or not _native.ops_loaded():
        return _native.not_built_message()
    traced_for = _native.kernel_device_type(device)
    if traced_for != device.type:  # a graph traced here for another device (`_native.traced_for`): its dtypes
        return missing_dtype(traced_for, dtype)
    if device.type == "cuda":
        return cuda_problem(machine().build(), machine().device(device), dtype)
    if device.type != "cpu":
        return f"mcnet_rt has no kernels for {device.type} tensors"
    return missing_dtype("cpu", dtype)


def missing_kernel(tensor: torch.Tensor) -> str | None:
    """Why the kernels cannot run an op on `tensor`'s device and dtype, or None when it can."""
    return missing_device_kernel(tensor.device, tensor.dtype)


def cuda_kernels_available() -> bool:
    """Whether the CUDA kernels can run here (what the CUDA tests and benchmarks need)."""
    return torch.cuda.is_available() and missing_device_kernel(torch.device("cuda"), torch.float32) is None


def _note(op: str, reason: str) -> None:
    if reason not in _noted:
        _noted.add(reason)
        log.warning("mcnet_rt %s: using the PyTorch reference: %s", op, reason)


def shape_class(inputs: Sequence) -> str:
    """Inputs' shapes with every size rounded up to a power of two: one self-test covers nearby shapes."""
    return ",".join("x".join(str(1 << max(size - 1, 0).bit_length()) for size in x.shape)
                    for x in inputs if isinstance(x, torch.Tensor))


def _decision_name(op: str, dtype: torch.dtype, inputs: Sequence) -> str:
    train = torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in inputs)
    return f"{op} {str(dtype).removeprefix('torch.')} {shape_class(inputs)} {'train' if train else 'inference'}"


def _capturing(device: torch.device) -> bool:
    """Inside torch.compile tracing or CUDA-graph capture nothing may be measured (or synchronised)."""
    return torch.compiler.is_compiling() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing())


def measured(op: str, inputs: Sequence, kernel: Callable, natives: dict[str, Callable],
             dtype: torch.dtype) -> Decision:
    """The cached decision for this input's class on this machine, self-testing on a miss."""
    device = next(x for x in inputs if isinstance(x, torch.Tensor)).device
    key = decisions.machine_key(machine().device(device), machine().build())
    name = _decision_name(op, dtype, inputs)
    if (key, name) not in _decided:
        stored = decisions.load(key)
        _decided.update({(key, n): d for n, d in stored.items()})
    if (key, name) in _decided:
        return _decided[key, name]
    reference = next(iter(natives))
    if _capturing(device):
        return Decision(reference, "not measured yet, and nothing can be measured while compiling or capturing")
    decision = self_test(inputs, kernel, natives, dtype)
    _decided[key, name] = decision
    decisions.store(key, name, decision)
    if decision.use == reference:
        _note(op, f"{name}: {decision.why}")
    return decision


def run(impl: str | None, op: str, inputs: Sequence, kernel: Callable, reference: Callable, *,
        dtype: torch.dtype | None = None, alternatives: dict[str, Callable] | None = None):
    """Run `op` on `inputs` through `kernel`, `reference` or an alternative native implementation, as `impl` (or
    the default set by `use_impl` / MCNET_RT_OPS) says. `dtype` is the element type the kernel would run in
    (autocast's), by default the first input's."""
    impl = _native.resolve_impl(impl)
    if impl == "reference":
        return reference(*inputs)
    first = next(x for x in inputs if isinstance(x, torch.Tensor))
    dtype = dtype or first.dtype
    problem = missing_device_kernel(first.device, dtype)
    if impl == "kernel":
        if problem is not None:
            raise RuntimeError(f"{op}: no kernel to run: {problem}")
        return kernel(*inputs)
    if problem is not None:
        if first.device.type == "cuda":
            _note(op, problem)
        return reference(*inputs)
    if first.device.type != "cuda" and not machine().measure_cpu:
        return reference(*inputs)
    natives = {"reference": reference, **(alternatives or {})}
    use = measured(op, inputs, kernel, natives, dtype).use
    return kernel(*inputs) if use == "kernel" else natives[use](*inputs)


def report(device: torch.device) -> dict:
    """What `auto` would run on `device`, per op family and dtype, with the reason, and the decisions measured so
    far on this machine (`mcnet-rt info --kernels`)."""
    build = machine().build()
    picks = {}
    for dtype in _native.kernel_dtypes(device.type):
        problem = missing_device_kernel(device, dtype)
        if problem is not None:
            pick = f"reference: {problem}"
        elif device.type != "cuda":
            pick = "reference: auto leaves CPU tensors to PyTorch (the twins are for testing; impl='kernel' runs them)"
        else:
            pick = "measured: the kernel where its self-test on the first input of a shape class agrees and is faster"
        picks[str(dtype).removeprefix("torch.")] = pick
    families = {family: picks for family in dict.fromkeys(FAMILIES.values())}
    facts = machine().device(device)
    key = decisions.machine_key(facts, build)
    where = (f"sm_{facts.capability[0]}{facts.capability[1]}, driver for CUDA {_version(facts.driver_version)}"
             if device.type == "cuda" else device.type)
    return {
        "device": f"{facts.name} ({where})",
        "compiled": ({"sass": [f"sm_{a}" for a in build.sass_archs], "ptx": f"compute_{build.ptx_arch}",
                      "cuda_runtime": _version(build.runtime_version), "build_hash": build.build_hash}
                     if build else None),
        "cuda_kernels": missing_device_kernel(torch.device("cuda"), torch.float32) or "can run",
        "auto": families,
        "measured": {name: {"use": d.use, "why": d.why} for name, d in decisions.load(key).items()},
        "cache": str(decisions.cache_path()),
    }
