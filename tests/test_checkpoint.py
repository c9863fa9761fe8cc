"""Checkpoint formats and the errors a wrong file gets: one sentence that says what the file is."""
import pickle

import pytest
import torch

import mcnet_rt
from mcnet_rt.checkpoint import official_state, official_to_ours, ours_to_official
from mcnet_rt.errors import CheckpointError


def fake_official(generator: dict, kp_detector: dict | None = None) -> dict:
    return {"generator": generator, "kp_detector": kp_detector or {"module.kp.weight": torch.zeros(15, 35, 7, 7)},
            "epoch": 1}


def expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        mcnet_rt.load(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    return message


def test_key_renames_cover_every_official_key():
    model = mcnet_rt.build_model("vox-256")
    official = official_state(model)
    for net, state in official.items():
        ours = getattr(model, net).state_dict()
        mapped = {official_to_ours(k[len("module."):]) for k in state}
        assert mapped == set(ours)
    # The memory unit's official names, as listed in the reference notes.
    gen = {k[len("module."):] for k in official["generator"]}
    for key in ("mbUnit.mb", "mbUnit.style_route.0.weight", "mbUnit.styleconv.weight",
                "mbUnit.styleconv.modulated_conv.modulation.bias", "mbUnit.styleconv.activate.bias",
                "mbUnit.conv_kv.attention.fc1.weight", "mbUnit.conv_kv.bias", "mbUnit.feat_forward_proj_128.weight",
                "mbUnit.conv_64.weight", "mbUnit.norm_32.bias", "mbUnit.query_conv.weight", "mbUnit.diff_conv.bias"):
        assert key in gen
        assert ours_to_official(official_to_ours(key)) == key


def test_safetensors_round_trip_small(tmp_path, small_model):
    path = tmp_path / "small.safetensors"
    mcnet_rt.save(small_model, path)
    loaded = mcnet_rt.load(path)
    assert loaded.config == small_model.config
    for net in ("kp_detector", "generator"):
        a, b = getattr(small_model, net).state_dict(), getattr(loaded, net).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not loaded.training


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.pth.tar", "not found")


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    expect_error(empty, "empty file")
    text = tmp_path / "notes.pth.tar"
    text.write_text("hello, not a checkpoint")
    expect_error(text, "neither a PyTorch checkpoint nor a safetensors file")


def test_truncated_official_checkpoint(tmp_path, official_checkpoint):
    cut = tmp_path / "cut.pth.tar"
    data = official_checkpoint.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    expect_error(cut, "corrupt or truncated")


def test_truncated_safetensors(tmp_path, small_model):
    path = tmp_path / "small.safetensors"
    mcnet_rt.save(small_model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "corrupt or truncated")


class Payload:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"generator": Payload()}, path, pickle_module=pickle)
    expect_error(path, "refusing to unpickle")


def test_fomm_checkpoint(tmp_path):
    path = tmp_path / "vox-cpk.pth.tar"
    torch.save(fake_official({"bottleneck.r0.conv1.weight": torch.zeros(1), "first.conv.weight": torch.zeros(1)},
                             {"kp.weight": torch.zeros(10, 35, 7, 7)}), path)
    expect_error(path, "First Order Motion Model")


def test_dagan_checkpoint(tmp_path):
    path = tmp_path / "DaGAN.pth.tar"
    torch.save(fake_official({"module.src_first.conv.weight": torch.zeros(1),
                              "module.AttnModule.query_conv.weight": torch.zeros(1)}), path)
    expect_error(path, "DaGAN")


def test_dagan_depth_weights(tmp_path):
    path = tmp_path / "encoder.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(1), "height": 256, "width": 256, "use_stereo": False}, path)
    expect_error(path, "depth-network")


def test_tpsmm_checkpoint(tmp_path):
    path = tmp_path / "vox.pth.tar"
    torch.save({"inpainting_network": {}, "keypoint_detector": {}, "dense_motion_network": {}, "epoch": 1}, path)
    expect_error(path, "Thin-Plate Spline")


def test_unrelated_dictionary(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}, path)
    expect_error(path, "not an MCNet checkpoint", "conv1.weight")


def test_not_a_dictionary(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    expect_error(path, "not a checkpoint dictionary")


def test_wrong_number_of_keypoints(tmp_path):
    state = official_state(mcnet_rt.build_model("vox-256"))
    state["kp_detector"]["module.kp.weight"] = torch.zeros(10, 35, 7, 7)
    path = tmp_path / "kp10.pth.tar"
    torch.save(state, path)
    expect_error(path, "10 keypoints", "needs 15")


def test_missing_and_misshapen_weights_are_summarised(tmp_path):
    state = official_state(mcnet_rt.build_model("vox-256"))
    for key in [k for k in state["generator"] if k.startswith("module.mbUnit.conv_kv")]:
        del state["generator"][key]
    state["generator"]["module.final.weight"] = torch.zeros(3, 64, 3, 3)
    path = tmp_path / "partial.pth.tar"
    torch.save(state, path)
    message = expect_error(path, "weights missing", "memory.mcm.* (5)", "final.weight (3, 64, 3, 3)")
    assert len(message) < 600


def test_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    expect_error(path, "not an mcnet_rt checkpoint")
