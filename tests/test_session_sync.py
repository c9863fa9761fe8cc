"""The per-frame path never makes the host wait for the device, except to upload the driving frames and to download
the output frames. There is no GPU here, so the test counts, on the CPU, every call that would wait on one: reading
a tensor's value (.item(), bool(), float(): aten._local_scalar_dense; ops whose output shape depends on values,
like nonzero), copies to the host (.cpu(), .numpy(), .tolist(), np.asarray), blocking copies to a device
(.to(device), torch.as_tensor(..., device=)) and explicit synchronisation — each with the mcnet_rt function that
made it."""
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mcnet_rt.pipeline.step import FrameStep

from mcnet_rt.pipeline.session import Session, SessionOptions, process_batch

PACKAGE = str(Path(__file__).resolve().parent.parent / "mcnet_rt")
VALUE_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default, torch.ops.aten.masked_select.default,
               torch.ops.aten._unique2.default, torch.ops.aten.unique_consecutive.default}


def _caller() -> str:
    """The innermost mcnet_rt function on the stack."""
    frame = sys._getframe(2)
    while frame is not None and not frame.f_code.co_filename.startswith(PACKAGE):
        frame = frame.f_back
    return frame.f_code.co_qualname if frame is not None else "outside mcnet_rt"


class HostWaits(TorchDispatchMode):
    """Counts "<what> in <function>" for every call that waits on the device (see the module doc)."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.waits = Counter()
        for name in ("cpu", "numpy", "tolist", "__array__"):
            self._count(monkeypatch, torch.Tensor, name, f".{name}()")
        original_to = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            device, _, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
            if device is not None and not non_blocking:
                self.waits[f".to(device) in {_caller()}"] += 1
            return original_to(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)
        for name in ("as_tensor", "tensor"):
            original = getattr(torch, name)

            def create(*args, original=original, name=name, **kwargs):
                if kwargs.get("device") is not None:
                    self.waits[f"torch.{name}(device=) in {_caller()}"] += 1
                return original(*args, **kwargs)

            monkeypatch.setattr(torch, name, create)
        self._count(monkeypatch, torch.cuda, "synchronize", "torch.cuda.synchronize()")
        self._count(monkeypatch, torch.cuda.Event, "synchronize", "Event.synchronize()")
        self._count(monkeypatch, torch.cuda.Stream, "synchronize", "Stream.synchronize()")

    def _count(self, monkeypatch, owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            self.waits[f"{label} in {_caller()}"] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in VALUE_READS:
            self.waits[f"{func} in {_caller()}"] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_waits(monkeypatch):
    return lambda: HostWaits(monkeypatch)


def test_a_batch_waits_on_the_device_only_for_its_frames(small_model, feat_data, carphone, host_waits):
    from mcnet_rt.io.image import read_image
    from mcnet_rt.io.video import read_frames  # PyAV: imported where it is needed

    clip = list(read_frames(carphone))[:6]
    options = SessionOptions(crop="none", paste_back=True, smoothing=0.05, output_size=(96, 80))
    sessions = [Session(small_model, read_image(feat_data / "single_face.jpg"), options),
                Session(small_model, clip[0], SessionOptions(crop="centre", smoothing=0.1))]
    step = FrameStep(small_model)
    process_batch(step, sessions, clip[:2])  # the first face fixes each reference (its hull is measured once)
    batch = [sessions[0], sessions[0], sessions[1]]  # consecutive frames of one session, and another session
    with host_waits() as counter:
        outputs = process_batch(step, batch, clip[2:5])
    assert [o.shape for o in outputs] == [(80, 96, 3), (80, 96, 3), (128, 128, 3)]
    frames = len(batch)
    assert counter.waits == {".to(device) in to_tensor": frames, ".cpu() in to_uint8": frames,
                             ".numpy() in to_uint8": frames}
    assert {"crop", "keypoints", "render", "output"} <= sessions[0].stats()["stages"].keys()
    assert sessions[0].stats()["stages"]["keypoints"]["iterations"] == 3


def test_the_counter_sees_each_kind_of_wait(host_waits):
    """The counter itself: every kind of wait that the test above must never see is counted."""
    x = torch.ones(3)
    with host_waits() as counter:
        x.sum().item(), bool(x.any()), x.nonzero(), x.cpu(), x.numpy(), x.tolist(), np.asarray(x)
        x.to("cpu"), torch.as_tensor([1.0], device="cpu")
        x.to("cpu", non_blocking=True), x.to(torch.float64)  # neither waits
    assert counter.waits[f"{torch.ops.aten._local_scalar_dense.default} in outside mcnet_rt"] == 2
    assert {wait.split(" in ")[0] for wait in counter.waits} == {
        str(torch.ops.aten._local_scalar_dense.default), str(torch.ops.aten.nonzero.default), ".cpu()", ".numpy()",
        ".tolist()", ".__array__()", ".to(device)", "torch.as_tensor(device=)"}


@pytest.mark.cuda
def test_on_a_gpu_a_batch_synchronises_only_for_its_frames(small_model):
    """Where CUDA runs, PyTorch's own sync debug mode counts the waits: one upload and one download per frame (not
    yet run on a GPU). Synthetic frames: nothing but torch and NumPy is needed."""
    model = small_model.cuda()
    grid = np.linspace(0, 255, 96 * 120, dtype=np.float32).reshape(96, 120)
    frames = [np.stack([np.roll(grid, 7 * i, axis=1), np.roll(grid, 5 * i, axis=0), grid[::-1]],
                       axis=-1).astype(np.uint8) for i in range(4)]
    sessions = [Session(model, frames[0], SessionOptions(crop="none", paste_back=True, smoothing=0.05)),
                Session(model, frames[1], SessionOptions(crop="centre", smoothing=0.1))]
    step = FrameStep(model)
    batch = [sessions[0], sessions[0], sessions[1]]
    for _ in range(2):  # references fixed, the ops' dispatch decided for these shapes
        process_batch(step, batch, frames[:3])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            process_batch(step, batch, frames[1:])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    waits = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(waits) == 2 * len(batch), waits
