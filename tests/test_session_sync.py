"""A session's per-frame path: which step runs what, the prepared-source store's key, and that the path never makes
the host wait for the device, except to upload the driving frames and to download the output frames. There is no GPU here, so the test counts, on the CPU, every call that would wait on one: reading
a tensor's value (.item(), bool(), float(): aten._local_scalar_dense; ops whose output shape depends on values,
like nonzero), copies to the host (.cpu(), .numpy(), .tolist(), np.asarray), blocking copies to a device
(.to(device), torch.as_tensor(..., device=)) and explicit synchronisation — each with the mcnet_rt function that
made it."""
import dataclasses
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mcnet_rt.faces import CropOptions
from mcnet_rt.pipeline.step import FrameStep
from mcnet_rt.pipeline.session import Session, SessionOptions, process_batch
from mcnet_rt.pipeline.source_store import source_key

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
    options = SessionOptions(crop=CropOptions("none"), paste_back=True, smoothing=0.05, output_size=(96, 80))
    step = FrameStep(small_model)
    sessions = [Session(small_model, read_image(feat_data / "single_face.jpg"), options, step=step),
                Session(small_model, clip[0], SessionOptions(crop=CropOptions("centre"), smoothing=0.1), step=step)]
    process_batch(sessions, clip[:2])  # the first face fixes each reference (its hull is measured once)
    batch = [sessions[0], sessions[0], sessions[1]]  # consecutive frames of one session, and another session
    with host_waits() as counter:
        outputs = process_batch(batch, clip[2:5])
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
    step = FrameStep(model)
    sessions = [Session(model, frames[0], SessionOptions(crop=CropOptions("none"), paste_back=True, smoothing=0.05),
                        step=step),
                Session(model, frames[1], SessionOptions(crop=CropOptions("centre"), smoothing=0.1), step=step)]
    batch = [sessions[0], sessions[0], sessions[1]]
    for _ in range(2):  # references fixed, the ops' dispatch decided for these shapes
        process_batch(batch, frames[:3])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            process_batch(batch, frames[1:])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    waits = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(waits) == 2 * len(batch), waits


def count_calls(monkeypatch, step) -> Counter:
    """Counts the calls of `step`'s two halves (which object runs is the point, not what it computes)."""
    calls = Counter()
    for name in ("keypoints", "render"):
        method = getattr(step, name)
        monkeypatch.setattr(step, name, lambda *args, name=name, method=method: (calls.update([name]),
                                                                                 method(*args))[1])
    return calls


def test_a_session_measures_its_reference_eagerly_and_runs_batches_on_its_own_step(small_model, carphone,
                                                                                   monkeypatch):
    from mcnet_rt.io.video import read_frames

    clip = list(read_frames(carphone))[:3]
    step = FrameStep(small_model)  # a backend's step in use; a separate object from the session's eager one
    session = Session(small_model, clip[0], SessionOptions(crop=CropOptions("centre")), step=step)
    assert session.step is step and type(session.eager) is FrameStep and session.eager is not step
    batched, eager = count_calls(monkeypatch, step), count_calls(monkeypatch, session.eager)
    session.set_reference(clip[1])
    assert eager == {"keypoints": 1} and not batched and session.reference is not None
    process_batch([session, session], clip[1:3])
    assert batched == {"keypoints": 1, "render": 1} and eager == {"keypoints": 1}
    session.process(clip[0])
    assert eager == {"keypoints": 2, "render": 1} and batched == {"keypoints": 1, "render": 1}
    absolute = Session(small_model, clip[0], SessionOptions(crop=CropOptions("none")),
                       step=FrameStep(small_model, relative=False))
    assert absolute.eager.relative is False  # the eager step keeps the step's motion mode


def test_a_batch_refuses_sessions_that_run_different_steps(small_model, carphone):
    from mcnet_rt.io.video import read_frames

    clip = list(read_frames(carphone))[:2]
    options = SessionOptions(crop=CropOptions("centre"))
    one, other = (Session(small_model, clip[0], options, step=FrameStep(small_model)) for _ in range(2))
    with pytest.raises(ValueError, match="the sessions run different steps"):
        process_batch([one, other], clip)
    assert one.frames == other.frames == 0  # refused before any work
    assert len(process_batch([one, Session(small_model, clip[1], options, step=one.step)], clip)) == 2


# One other valid value per CropOptions field: a field added without one fails here by name.
CHANGED = {"mode": "centre", "margin": 0.5, "face": "left", "align": "none"}


def test_the_source_store_key_changes_with_every_crop_option(small_model):
    image = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    key = source_key(small_model, image, CropOptions(), torch.float32)
    assert source_key(small_model, image, CropOptions(), torch.float32) == key
    for field in dataclasses.fields(CropOptions):
        changed = dataclasses.replace(CropOptions(), **{field.name: CHANGED[field.name]})
        assert source_key(small_model, image, changed, torch.float32) != key, field.name
