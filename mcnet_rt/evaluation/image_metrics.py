"""Per-image reconstruction metrics (L1, PSNR, SSIM) on (B, 3, H, W) batches in [0, 1].

Every function returns one value per image, a (B,) float64 tensor: the statistics are accumulated in float64 so
that the values agree with scikit-image to well below the precision papers report, whatever the input precision.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Slack on the [0, 1] range check: resampling can overshoot by a rounding error, while a batch in [0, 255] or
# [-1, 1] (the usual mistakes) is still refused.
_RANGE_SLACK = 1e-3


def check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """Refuse anything but two same-shaped (B, 3, H, W) float batches in [0, 1], naming the problem."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a (B, 3, H, W) tensor, got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a float tensor in [0, 1], got {x.dtype}")
        if not ((x >= -_RANGE_SLACK) & (x <= 1 + _RANGE_SLACK)).all():
            raise ValueError(f"{name}: values must lie in [0, 1] (found {x.min().item():g} to {x.max().item():g})")
    if a.shape != b.shape:
        raise ValueError(f"a and b differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")


def _float64_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_pair(a, b)
    return a.double(), b.double()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of each image pair, over pixels and channels."""
    a, b = _float64_pair(a, b)
    return (a - b).abs().mean(dim=(1, 2, 3))


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10·log10(data_range² / MSE); inf for identical images.

    The released evaluation's `compare_psnr` also used data_range 1 for non-negative float images, so unlike
    SSIM its PSNR is the standard one.
    """
    a, b = _float64_pair(a, b)
    mse = (a - b).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(data_range**2 / mse)


@dataclass(frozen=True)
class _SSIMSettings:
    window: int
    sigma: float | None  # Gaussian window of this standard deviation; None: uniform window
    sample_covariance: bool
    data_range: float


_SSIM_MODES = {
    # Wang et al. 2004 as scikit-image computes it: an 11×11 Gaussian window (σ 1.5, truncated at 3.5σ).
    "modern": _SSIMSettings(window=11, sigma=1.5, sample_covariance=False, data_range=1.0),
    # scikit-image < 0.19 `compare_ssim(multichannel=True)` on float images, as the released evaluation ran it.
    "released": _SSIMSettings(window=7, sigma=None, sample_covariance=True, data_range=2.0),
}


def _local_means(x: torch.Tensor, settings: _SSIMSettings) -> torch.Tensor:
    """Window-weighted means of every plane of x over the valid region (where the window fits in the image).

    The window is separable, so each plane is filtered along rows then columns with the 1-D weights that
    scipy.ndimage uses: in float64 on the CPU, 7× faster than one 2-D depthwise convolution, same result.
    """
    if settings.sigma is None:
        line = torch.ones(settings.window, dtype=x.dtype, device=x.device)
    else:
        offsets = torch.arange(settings.window, dtype=x.dtype, device=x.device) - settings.window // 2
        line = torch.exp(-0.5 * (offsets / settings.sigma) ** 2)
    line = line / line.sum()
    planes = x.reshape(-1, 1, *x.shape[2:])
    planes = F.conv2d(F.conv2d(planes, line.view(1, 1, -1, 1)), line.view(1, 1, 1, -1))
    return planes.view(*x.shape[:2], *planes.shape[2:])


def ssim(a: torch.Tensor, b: torch.Tensor, mode: str = "modern") -> torch.Tensor:
    """Structural similarity of each image pair, computed per channel and averaged over the channels.

    mode "modern" is the standard SSIM (Wang et al. 2004), equal to current scikit-image's
    `structural_similarity(channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`. Report this one.

    mode "released" reproduces the released MCNet evaluation, old scikit-image's `compare_ssim(multichannel=True)`
    on float images: a 7×7 uniform window, sample covariance, and data_range 2 (the dtype range scikit-image < 0.19
    assumed for floats, although the images lie in [0, 1]). The doubled range quadruples the stabilising constants
    C1 = (0.01·range)² and C2 = (0.03·range)², which inflates the score; use it only to compare with published
    numbers computed that way.

    As scikit-image does, the mean is taken over the region where the window lies inside the image, i.e. after
    cropping (window - 1) // 2 pixels from each border, so the border mode of the filter plays no part.
    """
    if mode not in _SSIM_MODES:
        raise ValueError(f"unknown SSIM mode {mode!r}; expected one of {', '.join(_SSIM_MODES)}")
    settings = _SSIM_MODES[mode]
    a, b = _float64_pair(a, b)
    height, width = a.shape[2:]
    if min(height, width) < settings.window:
        raise ValueError(f"SSIM ({mode}) needs images of at least {settings.window}×{settings.window}, "
                         f"got {width}×{height}")

    signals = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    mu_a, mu_b, mean_aa, mean_bb, mean_ab = _local_means(signals, settings).chunk(5, dim=1)

    samples = settings.window**2
    cov_norm = samples / (samples - 1) if settings.sample_covariance else 1.0
    var_a = cov_norm * (mean_aa - mu_a * mu_a)
    var_b = cov_norm * (mean_bb - mu_b * mu_b)
    cov_ab = cov_norm * (mean_ab - mu_a * mu_b)

    c1 = (0.01 * settings.data_range) ** 2
    c2 = (0.03 * settings.data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3))
