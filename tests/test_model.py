"""The network's public API and the invariants users rely on (small preset, CPU)."""
import math

import pytest
import torch

import mcnet_rt
from mcnet_rt.keypoints import (Keypoints, convex_hull_area, inverse_2x2, movement_scale, relative_keypoints)
from mcnet_rt.profile import gflops_per_frame, parameter_counts


def images(batch, size=128, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_shapes_and_ranges(small_model):
    x = images(2)
    kp = small_model.detect_keypoints(x)
    assert kp.value.shape == (2, 15, 2) and kp.jacobian.shape == (2, 15, 2, 2)
    assert kp.value.abs().max() <= 1
    out = small_model.generate(x, kp, kp)
    assert out.shape == (2, 3, 128, 128)
    assert 0 <= out.min() and out.max() <= 1


@torch.no_grad()
def test_batch_elements_are_independent(small_model):
    """BatchNorm runs on running statistics in eval mode: a sample's output does not depend on its batch."""
    x = images(3)
    kp = small_model.detect_keypoints(x)
    together = small_model.generate(x, kp, Keypoints(kp.value.flip(0), kp.jacobian.flip(0)))
    alone = small_model.generate(x[1:2], Keypoints(kp.value[1:2], kp.jacobian[1:2]),
                                 Keypoints(kp.value[1:2], kp.jacobian[1:2]))
    assert torch.allclose(together[1:2], alone, atol=1e-5)


@torch.no_grad()
def test_cached_source_matches_generate(small_model):
    source, driving = images(1, seed=1), images(4, seed=2)
    cache = small_model.encode_source(source)
    kp_driving = small_model.detect_keypoints(driving)
    per_frame = small_model.animate(cache, kp_driving)
    kp_source = Keypoints(cache.keypoints.value.expand(4, -1, -1), cache.keypoints.jacobian.expand(4, -1, -1, -1))
    direct = small_model.generate(source.expand(4, -1, -1, -1), kp_source, kp_driving)
    assert torch.allclose(per_frame, direct, atol=1e-5)


@torch.no_grad()
def test_identity_motion_keeps_the_source_close(small_model):
    """With driving keypoints equal to the source's, the deformation is the identity grid."""
    source = images(1, seed=3)
    kp = small_model.detect_keypoints(source)
    motion = small_model.generator.estimate_motion(source, kp, kp)
    h = motion.deformation.shape[1]
    identity = torch.stack(torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, h), indexing="xy"), -1)
    assert torch.allclose(motion.deformation[0], identity, atol=1e-5)


@torch.no_grad()
def test_deterministic_by_default_and_noise_switch(small_model):
    x = images(1)
    kp = small_model.detect_keypoints(x)
    small_model.generator.memory.iicm.noise_strength.fill_(1.0)
    assert torch.equal(small_model.generate(x, kp, kp), small_model.generate(x, kp, kp))
    noisy = mcnet_rt.MCNet(small_model.config.with_memory_noise(True)).eval()
    noisy.load_state_dict(small_model.state_dict())
    assert not torch.equal(noisy.generate(x, kp, kp), noisy.generate(x, kp, kp))


def test_bad_tensors_are_rejected(small_model):
    with pytest.raises(ValueError, match=r"expected a \(B, 3, 128, 128\) tensor"):
        small_model.detect_keypoints(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="floating-point"):
        small_model.detect_keypoints(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))
    bad = images(1)
    bad[0, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        small_model.detect_keypoints(bad)


def test_inverse_2x2_matches_linalg():
    m = torch.randn(5, 15, 2, 2, dtype=torch.float64) + 2 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(inverse_2x2(m), torch.linalg.inv(m), atol=1e-10)


def test_convex_hull_area_and_movement_scale():
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.7]])
    assert convex_hull_area(square) == pytest.approx(1.0)
    small = Keypoints(square[None] * 0.5, torch.eye(2).expand(1, 6, 2, 2))
    big = Keypoints(square[None], torch.eye(2).expand(1, 6, 2, 2))
    assert movement_scale(small, big) == pytest.approx(0.5)


def test_relative_keypoints():
    g = torch.Generator().manual_seed(0)
    src = Keypoints(torch.rand(1, 15, 2, generator=g), torch.eye(2) + 0.1 * torch.rand(1, 15, 2, 2, generator=g))
    d0 = Keypoints(torch.rand(1, 15, 2, generator=g), torch.eye(2) + 0.1 * torch.rand(1, 15, 2, 2, generator=g))
    # The first driving frame maps to the source keypoints themselves.
    same = relative_keypoints(src, d0, d0, scale=0.7)
    assert torch.allclose(same.value, src.value) and torch.allclose(same.jacobian, src.jacobian, atol=1e-6)
    # A pure translation of the driver moves the source by the scaled translation.
    moved = Keypoints(d0.value + 0.1, d0.jacobian)
    assert torch.allclose(relative_keypoints(src, moved, d0, scale=0.5).value, src.value + 0.05, atol=1e-6)


@pytest.mark.slow
def test_released_size_and_cost():
    """Independent numbers from the reference notes' measurements of the released modules (§1.8)."""
    model = mcnet_rt.build_model("vox-256")
    params = parameter_counts(model)
    assert params["keypoint_detector"] == 14_258_268
    assert round(params["generator"] / 1e6, 2) == 87.58
    assert round(params["generator.memory_unit"] / 1e6, 2) == 25.05
    assert round(params["generator.dense_motion"] / 1e6, 2) == 37.80
    flops = gflops_per_frame(model)
    assert flops["generator (uncached)"] == pytest.approx(392.6, rel=2e-3)
    assert flops["keypoint_detector"] == pytest.approx(2.9, rel=1e-2)
    assert math.isclose(flops["encoder (per source)"], 30, rel_tol=0.02)
