"""The official checkpoint works in our engine: the released code's outputs on real frames are reproduced."""
import numpy as np
import pytest
import torch

import mcnet_rt
from mcnet_rt.cli import main
from mcnet_rt.ops import use_impl
from support.official_fixture import fixture_arrays, image_tensor

KP_TOL = 1e-5
PRED_TOL = 1e-4


@pytest.fixture(scope="module")
def arrays():
    return fixture_arrays()


def released_keypoints(arrays, name):
    return mcnet_rt.Keypoints(torch.from_numpy(arrays[f"kp_{name}_value"])[None],
                              torch.from_numpy(arrays[f"kp_{name}_jacobian"])[None])


def max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    return (ours - torch.from_numpy(theirs)).abs().max().item()


@pytest.fixture(scope="module")
def official_model(official_checkpoint):
    return mcnet_rt.load(official_checkpoint)


@torch.no_grad()
def test_keypoints_match_released_code(official_model, arrays):
    for name in ("source", "driving"):
        kp = official_model.detect_keypoints(image_tensor(arrays[name]))
        assert kp.value.shape == (1, 15, 2) and kp.jacobian.shape == (1, 15, 2, 2)
        assert max_diff(kp.value[0], arrays[f"kp_{name}_value"]) <= KP_TOL
        assert max_diff(kp.jacobian[0], arrays[f"kp_{name}_jacobian"]) <= KP_TOL


@pytest.mark.slow
@torch.no_grad()
def test_prediction_and_motion_match_released_code(official_model, arrays):
    source = image_tensor(arrays["source"])
    kp_source, kp_driving = released_keypoints(arrays, "source"), released_keypoints(arrays, "driving")
    decoded, motion = official_model.generator(source, kp_source, kp_driving)
    assert max_diff(motion.deformation[0], arrays["deformation"]) <= 1e-5
    assert max_diff(motion.occlusion[0], arrays["occlusion_map"]) <= 1e-5
    assert max_diff(decoded.prediction[0], arrays["prediction"]) <= PRED_TOL
    # The public call gives the same image.
    prediction = official_model.generate(source, kp_source, kp_driving)
    assert max_diff(prediction[0], arrays["prediction"]) <= PRED_TOL
    # A sanity bound that the comparison is meaningful: the prediction is not the source itself.
    assert (prediction - source).abs().mean() > 0.01


@pytest.mark.slow
@torch.no_grad()
def test_released_noise_switch(official_checkpoint, arrays):
    """The released noise injection is reproduced when asked: random output once its strength is non-zero."""
    model = mcnet_rt.load(official_checkpoint, memory_noise=True)
    source = image_tensor(arrays["source"])
    kp_source, kp_driving = released_keypoints(arrays, "source"), released_keypoints(arrays, "driving")
    # The fixture's noise strength is 0, so the released behaviour is still deterministic here.
    assert max_diff(model.generate(source, kp_source, kp_driving)[0], arrays["prediction"]) <= PRED_TOL
    model.generator.memory.iicm.noise_strength.fill_(0.5)
    first = model.generate(source, kp_source, kp_driving)
    second = model.generate(source, kp_source, kp_driving)
    assert (first - second).abs().max() > 1e-4


@pytest.mark.slow
def test_convert_to_safetensors_and_back_keeps_outputs(official_checkpoint, arrays, tmp_path):
    ours = tmp_path / "mcnet.safetensors"
    back = tmp_path / "back.pth.tar"
    assert main(["convert", str(official_checkpoint), str(ours)]) == 0
    assert main(["convert", str(ours), str(back)]) == 0
    source = image_tensor(arrays["source"])
    kp_source, kp_driving = released_keypoints(arrays, "source"), released_keypoints(arrays, "driving")
    with torch.no_grad():
        for path in (ours, back):
            model = mcnet_rt.load(path)
            assert max_diff(model.generate(source, kp_source, kp_driving)[0], arrays["prediction"]) <= PRED_TOL
    # The official layout we write has the released key names, with the DDP prefix.
    raw = torch.load(back, weights_only=True)
    assert "module.mbUnit.mb" in raw["generator"] and "module.kp.weight" in raw["kp_detector"]


@pytest.mark.slow
@torch.no_grad()
def test_prediction_through_native_kernels_matches_released_code(official_model, arrays):
    """Every op that `_ops.so` implements runs its kernel (here the CPU twins) inside the released model."""
    source = image_tensor(arrays["source"])
    kp_source, kp_driving = released_keypoints(arrays, "source"), released_keypoints(arrays, "driving")
    with use_impl("kernel"):
        decoded, motion = official_model.generator(source, kp_source, kp_driving)
    assert max_diff(motion.deformation[0], arrays["deformation"]) <= 1e-5
    assert max_diff(motion.occlusion[0], arrays["occlusion_map"]) <= 1e-5
    assert max_diff(decoded.prediction[0], arrays["prediction"]) <= PRED_TOL
