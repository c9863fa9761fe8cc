"""The self-test behind `impl="auto"`: on the op's own input, run the kernel and the native implementations (the
reference first, then alternatives such as SDPA), check that the kernel agrees with the reference, time them all,
and name the one to use. Training inputs (grad enabled, an input requiring grad) are checked and timed forward +
backward, inference inputs forward only.

The tolerances catch a kernel that computes the wrong thing (errors of order 1: a bad image, a layout bug, a
missed tile), not precision: the unit tests hold the kernels to PyTorch's own error. A kernel that raises (no
image for this GPU, too little shared memory, an old driver) loses the test the same way.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

# Largest error accepted, relative to the largest magnitude of the reference's result.
TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 1e-1}
TIMED_RUNS = 3


@dataclass
class Decision:
    """What `auto` runs for one (device, op, dtype, shape class): `use` is "kernel" or a native's name."""
    use: str
    why: str
    ms: dict[str, float] = field(default_factory=dict)
    error: float | None = None


def _leaves(inputs: Sequence, train: bool) -> list:
    """Fresh copies of the inputs' autograd leaves, so that every trial differentiates the same graph-free inputs."""
    return [x.detach().requires_grad_(train and x.requires_grad) if isinstance(x, torch.Tensor) else x
            for x in inputs]


def _trial(fn: Callable, inputs: Sequence, train: bool) -> list[torch.Tensor]:
    """fn's output and, when training, the gradients of its inputs for a fixed upstream gradient."""
    args = _leaves(inputs, train)
    with torch.set_grad_enabled(train):
        out = fn(*args)
    if not train:
        return [out]
    wanted = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
    grads = torch.autograd.grad(out, wanted, upstream, allow_unused=True)
    return [out.detach(), *(g for g in grads if g is not None)]


def relative_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    """Largest |got − want| over each result, relative to that result's largest |want|."""
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return float("inf")
        scale = w.double().abs().max().clamp_min(torch.finfo(torch.float32).tiny)
        worst = max(worst, ((g.double() - w.double()).abs().max() / scale).item())
    return worst


def _milliseconds(fn: Callable, inputs: Sequence, train: bool, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    for _ in range(TIMED_RUNS):
        sync()
        start = time.perf_counter()
        _trial(fn, inputs, train)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def self_test(inputs: Sequence, kernel: Callable, natives: dict[str, Callable], dtype: torch.dtype) -> Decision:
    """Decide between `kernel` and `natives` (name -> implementation; the first is the reference) on `inputs`."""
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    device = tensors[0].device
    train = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    reference = next(iter(natives))
    try:
        got = _trial(kernel, inputs, train)
    except Exception as error:  # noqa: BLE001 - any failure means the kernel cannot serve this input
        return Decision(reference, f"the kernel failed its self-test: {error}")
    error = relative_error(got, _trial(natives[reference], inputs, train))
    tolerance = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
    if not error <= tolerance:
        return Decision(reference, f"the kernel disagrees with the reference (relative error {error:.2g} > "
                                   f"{tolerance:g})", error=error)
    ms = {"kernel": _milliseconds(kernel, inputs, train, device)}
    ms.update({name: _milliseconds(fn, inputs, train, device) for name, fn in natives.items()})
    fastest_native = min(natives, key=ms.get)
    mode = "forward+backward" if train else "forward"
    timing = ", ".join(f"{name} {value:.3g} ms" for name, value in ms.items())
    if ms["kernel"] < ms[fastest_native]:
        return Decision("kernel", f"agrees (relative error {error:.2g}) and is the fastest {mode}: {timing}", ms,
                        error)
    return Decision(fastest_native, f"the kernel agrees but {fastest_native} is faster ({mode}: {timing})", ms,
                    error)
