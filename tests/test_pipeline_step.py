"""The one per-frame step: what it computes, per-caller sources in one batch, and no host synchronisation."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mcnet_rt.keypoints import Keypoints, movement_scale, relative_keypoints
from mcnet_rt.pipeline.step import FrameStep, motion_reference, prepare_source


def images(n, size=128, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def repeat(keypoints, n):
    return Keypoints(*(t.expand(n, *t.shape[1:]) for t in keypoints))


def test_step_is_relative_motion_then_the_generator(small_model):
    source, driving = images(1, seed=1), images(3, seed=2)
    prepared = prepare_source(small_model, source)
    reference = motion_reference(small_model, prepared, driving[:1])
    step = FrameStep(small_model)
    with torch.no_grad():
        out = step(driving, *step.inputs(prepared, reference))
        kp_source = small_model.kp_detector(source)
        kp_reference = small_model.kp_detector(driving[:1])
        scale = movement_scale(kp_source, kp_reference)
        kp = relative_keypoints(kp_source, small_model.kp_detector(driving), kp_reference, scale)
        expected = small_model.generate(source.expand(3, -1, -1, -1), repeat(kp_source, 3), kp)
    assert reference.scale.shape == (1,) and reference.scale.item() == pytest.approx(scale, rel=1e-6)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 128, 128)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_absolute_motion_ignores_the_reference(small_model):
    source, driving = images(1, seed=3), images(2, seed=4)
    prepared = prepare_source(small_model, source)
    step = FrameStep(small_model, relative=False)
    a = motion_reference(small_model, prepared, driving[:1])
    b = motion_reference(small_model, prepared, images(1, seed=5), adapt_scale=False)
    with torch.no_grad():
        out_a = step(driving, *step.inputs(prepared, a))
        out_b = step(driving, *step.inputs(prepared, b))
        expected = small_model.generate(source.expand(2, -1, -1, -1), repeat(prepared.keypoints, 2),
                                        small_model.kp_detector(driving))
    assert torch.equal(out_a, out_b)
    torch.testing.assert_close(out_a, expected, atol=1e-5, rtol=0)


def test_one_batch_serves_callers_with_their_own_source_and_reference(small_model):
    """The browser server batches several callers: per-sample sources and references give what each alone gives."""
    sources, driving, references = images(2, seed=6), images(2, seed=7), images(2, seed=8)
    step = FrameStep(small_model)
    with torch.no_grad():
        prepared = prepare_source(small_model, sources)
        batched = step(driving, *step.inputs(prepared, motion_reference(small_model, prepared, references)))
        for i in range(2):
            alone = prepare_source(small_model, sources[i:i + 1])
            reference = motion_reference(small_model, alone, references[i:i + 1])
            torch.testing.assert_close(batched[i:i + 1], step(driving[i:i + 1], *step.inputs(alone, reference)),
                                       atol=1e-4, rtol=0)  # batch-size rounding only


def test_step_needs_no_tensor_values(small_model):
    """Run on fake tensors (shapes only): any .item(), bool(tensor) or NumPy round trip — a GPU->CPU sync — fails."""
    prepared = prepare_source(small_model, images(1, seed=9))
    step = FrameStep(small_model)
    inputs = step.inputs(prepared, motion_reference(small_model, prepared, images(1, seed=10)))
    with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
        out = step(mode.from_tensor(images(4)), *(mode.from_tensor(t) for t in inputs))
    assert out.shape == (4, 3, 128, 128)


def test_bad_source_is_refused_once_at_preparation(small_model):
    bad = images(1)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="source: contains NaN"):
        prepare_source(small_model, bad)
