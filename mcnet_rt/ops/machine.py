"""What the dispatch needs to know about this machine, behind one small interface: the CUDA build of the kernels
(facts reported by `_C`, compiled with them), and per device its name, compute capability and driver. Tests swap
in mocked answers (`use_machine`) to play an sm_75, an sm_120 or an old-driver GPU on a machine that has none."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from . import _native


@dataclass(frozen=True)
class Build:
    """The CUDA build of the kernels: machine-code architectures (e.g. 86 for sm_86), the architecture of their PTX,
    the CUDA runtime linked (1000·major + 10·minor), as `_C` reports them, and a hash of the built ops library
    `_ops.so` that holds the kernels (a rebuild of them changes it)."""
    sass_archs: tuple[int, ...]
    ptx_arch: int
    runtime_version: int
    build_hash: str


@dataclass(frozen=True)
class DeviceFacts:
    """One device as the dispatch sees it. device_count is `_C.cuda_device_count()`: negative (-cudaError_t) when
    _C's runtime cannot use the driver, even where torch's runtime can."""
    name: str
    capability: tuple[int, int]
    driver_version: int
    device_count: int


class Machine:
    """The real answers, from `_C` and torch, asked once per process (every op call consults them).
    `measure_cpu` lets the measured dispatch run on CPU tensors (the CPU twins), which tests use to exercise it
    without a GPU; the real machine leaves CPU tensors to the references."""

    measure_cpu = False

    def build(self) -> Build | None:
        """None when `_C` or the ops library is missing, or the build has no CUDA code."""
        module = _native.native()
        if module is None or not module.with_cuda or not _native.OPS_LIBRARY.is_file():
            return None
        return Build(tuple(module.cuda_archs), module.ptx_arch, module.cuda_runtime_version,
                     _file_hash(str(_native.OPS_LIBRARY)))

    def device(self, device: torch.device) -> DeviceFacts:
        index = device.index
        if device.type == "cuda" and index is None and torch.cuda.is_available():
            index = torch.cuda.current_device()
        return _device_facts(device.type, index)


@functools.cache
def _device_facts(kind: str, index: int | None) -> DeviceFacts:
    if kind != "cuda":
        return DeviceFacts(platform.processor() or platform.machine(), (0, 0), 0, 0)
    module = _native.native()
    count = module.cuda_device_count() if module is not None else 0
    driver = module.cuda_driver_version() if module is not None else 0
    if not torch.cuda.is_available():
        return DeviceFacts("no CUDA device", (0, 0), driver, count)
    return DeviceFacts(torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index), driver, count)


@functools.cache
def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


_machine: Machine = Machine()


def machine() -> Machine:
    return _machine


@contextlib.contextmanager
def use_machine(replacement: Machine) -> Iterator[None]:
    """Answer every query from `replacement` inside the block (tests: mocked GPUs and drivers)."""
    global _machine
    previous, _machine = _machine, replacement
    try:
        yield
    finally:
        _machine = previous
