"""The vox-512 preset: its layout, a forward and backward at batch 1, save/load, and a vox-256 checkpoint
continued as a vox-512 model. The full 512 model takes minutes per forward and backward on this CPU, so that pass
runs on the preset's layout at 1/16 of its widths (same depths, scale factors and 512 px input)."""
import dataclasses

import pytest
import torch

import mcnet_rt
from mcnet_rt import checkpoint
from mcnet_rt.cli import main
from mcnet_rt.config import preset
from mcnet_rt.upscale import upscale


def narrow(config):
    """`config` with every width divided by 16 and a 16-channel memory: the same layout, cheap to run."""
    g = config.generator
    return dataclasses.replace(
        config,
        keypoint_detector=dataclasses.replace(config.keypoint_detector, block_expansion=2, max_features=64),
        generator=dataclasses.replace(
            g, block_expansion=4, max_features=32,
            dense_motion=dataclasses.replace(g.dense_motion, block_expansion=4, max_features=64),
            memory=dataclasses.replace(g.memory, channels=16)))


def test_vox512_layout_and_save_load(tmp_path):
    model = mcnet_rt.build_model("vox-512")
    g = model.generator
    assert len(g.down_blocks) == len(g.up_blocks) == 4 and len(g.resblock) == 8
    assert sorted(g.memory.projections, key=int) == ["32", "64", "128", "256"]  # the bottleneck stays at 32
    assert g.memory.meta_memory.shape == (1, 512, 32, 32)
    assert model.kp_detector.down.stride == g.dense_motion_network.down.stride == 8  # both still see 64×64
    path = tmp_path / "vox512.safetensors"
    checkpoint.save(model, path)
    loaded = checkpoint.load(path)
    assert loaded.config == preset("vox-512")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_vox512_layout_forward_and_backward_at_batch_1():
    torch.manual_seed(0)
    model = mcnet_rt.MCNet(narrow(preset("vox-512"))).train()
    source, driving = torch.rand(1, 3, 512, 512), torch.rand(1, 3, 512, 512)
    kp_source, kp_driving = model.kp_detector(source), model.kp_detector(driving)
    decoded, motion = model.generator(source, kp_source, kp_driving)
    assert decoded.prediction.shape == (1, 3, 512, 512) and motion.deformation.shape == (1, 64, 64, 2)
    assert [p.shape[-1] for p in decoded.projected] == [32, 64, 128, 256]
    (decoded.prediction.mean() + sum(p.mean() for p in decoded.projected)).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == ["generator.memory.iicm.noise_strength"]  # the memory noise is off
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.generator.down_blocks[3].conv.weight.grad.abs().sum() > 0


def test_a_256_model_continues_as_512(tmp_path, capsys):
    torch.manual_seed(0)
    small256, config512 = mcnet_rt.MCNet(narrow(preset("vox-256"))), narrow(preset("vox-512"))
    result = upscale(small256, config512)
    old, new = small256.state_dict(), result.model.state_dict()
    # Every level reappears at twice its resolution, counted from the image; the new coarsest level is new.
    for target, source in (("generator.up_blocks.3.conv.weight", "generator.up_blocks.2.conv.weight"),
                           ("generator.resblock.7.conv1.weight", "generator.resblock.5.conv1.weight"),
                           ("generator.down_blocks.0.conv.weight", "generator.down_blocks.0.conv.weight"),
                           ("generator.memory.projections.256.weight", "generator.memory.projections.128.weight"),
                           ("generator.memory.mcm.out_norms.64.weight", "generator.memory.mcm.out_norms.32.weight"),
                           ("generator.memory.meta_memory", "generator.memory.meta_memory"),
                           ("kp_detector.kp.weight", "kp_detector.kp.weight")):
        assert target in result.kept and torch.equal(new[target], old[source]), target
    for key in ("generator.down_blocks.3.conv.weight", "generator.memory.projections.32.weight",
                "generator.up_blocks.0.conv.weight", "generator.up_blocks.1.norm.weight"):
        assert key in result.new, key
    assert sorted(result.kept + result.new) == sorted(new)
    # The command line does the same from a checkpoint file and says what it kept.
    source_path, out = tmp_path / "256.safetensors", tmp_path / "512.safetensors"
    checkpoint.save(small256, source_path)
    with pytest.raises(Exception):
        upscale(small256, narrow(preset("vox-256")))
    assert main(["convert", str(source_path), str(out), "--upscale-to", "vox-512"]) == 0
    assert "kept" in capsys.readouterr().out and checkpoint.load(out).config == preset("vox-512")


def test_training_starts_from_given_weights(prepared, tmp_path):
    from mcnet_rt.errors import InputError
    from mcnet_rt.training.trainer import Trainer
    from support.training_fixtures import quick_config

    start = tmp_path / "start.safetensors"
    torch.manual_seed(3)
    config = Trainer(quick_config(prepared[0], tmp_path / "probe")).model.config
    checkpoint.save(mcnet_rt.MCNet(config), start)
    trainer = Trainer(quick_config(prepared[0], tmp_path / "run", f"model.init={start}"))
    assert all(torch.equal(a, b) for a, b in zip(checkpoint.load(start).state_dict().values(),
                                                 trainer.model.state_dict().values()))
    with pytest.raises(InputError, match="convert it first"):
        Trainer(quick_config(prepared[0], tmp_path / "other", f"model.init={start}", "model.image_size=128"))
