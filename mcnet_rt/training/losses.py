"""MCNet's training losses as released (`modules/model.py: GeneratorFullModel`), every weight from the config.

- perceptual: VGG features of an image pyramid, L1 per scale and layer (`vgg.py` for the network);
- equivariance (FOMM): keypoints of a randomly warped driving frame, mapped back, must match — value and jacobian;
- keypoint distance: penalises keypoint pairs closer than a threshold. The released version is
  mean(1 − sign(d − 0.2)), whose gradient is zero everywhere; "smooth" (the default) is a hinge with the same
  range that does push crowded keypoints apart;
- memory consistency (paper eq. 4): per compensated scale, L1 between the memory value and the projected warped
  feature, detached and resized to the memory's size.
The GAN terms are off in the released recipe and not implemented.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..keypoints import Keypoints, inverse_2x2
from ..models import DenseMotion
from ..models.blocks import AntiAliasDownsample, coordinate_grid
from .config import LossSection
from .vgg import VGGFeatures


def loss_dtype(t: torch.Tensor) -> torch.dtype:
    """Losses are computed in float32 even under AMP, and in float64 when the model runs in float64."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.to(loss_dtype(t))


class ImagePyramid(nn.Module):
    def __init__(self, scales: list[float], channels: int = 3):
        super().__init__()
        self.scales = scales
        self.downs = nn.ModuleList(nn.Identity() if s == 1 else AntiAliasDownsample(channels, s) for s in scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [down(x) for down in self.downs]


def perceptual_loss(vgg: VGGFeatures, pyramid: ImagePyramid, prediction: torch.Tensor, target: torch.Tensor,
                    layer_weights: list[float]) -> torch.Tensor:
    total = prediction.new_zeros(())
    for pred, real in zip(pyramid(prediction), pyramid(target)):
        with torch.no_grad():
            real_features = vgg(real)
        for weight, a, b in zip(layer_weights, vgg(pred), real_features):
            total = total + weight * (at_least_float32(a) - at_least_float32(b)).abs().mean()
    return total


class RandomTransform:
    """FOMM's random warp for the equivariance loss: an affine map near the identity plus a thin-plate-spline term
    on a P×P control grid (with the released L1 radius and the same offset added to x and y).

    Each sample's parameters come from its own seed, so a sample is warped the same way whatever batch or process
    it lands in. The jacobian is in closed form (no double backward).
    """

    def __init__(self, seeds: torch.Tensor, sigma_affine: float, sigma_tps: float, points_tps: int,
                 device: torch.device, dtype: torch.dtype = torch.float32):
        thetas, params = [], []
        for seed in seeds.tolist():
            g = torch.Generator().manual_seed(seed)
            thetas.append(torch.randn(2, 3, generator=g) * sigma_affine + torch.eye(2, 3))
            params.append(torch.randn(points_tps ** 2, generator=g) * sigma_tps)
        self.theta = torch.stack(thetas).to(device, dtype)  # (B, 2, 3)
        self.tps = torch.stack(params).to(device, dtype)  # (B, P²)
        self.control = coordinate_grid(points_tps, points_tps, device=device, dtype=dtype).view(-1, 2)  # (P², 2)

    def warp_coordinates(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) -> (B, N, 2)."""
        affine = torch.einsum("bij,bnj->bni", self.theta[:, :, :2], points) + self.theta[:, None, :, 2]
        r = (points[:, :, None] - self.control).abs().sum(-1)  # (B, N, P²)
        offset = (r ** 2 * torch.log(r + 1e-6) * self.tps[:, None]).sum(-1, keepdim=True)
        return affine + offset

    def jacobian(self, points: torch.Tensor) -> torch.Tensor:
        """∂warp/∂points: (B, N, 2, 2), rows = output coordinate."""
        diff = points[:, :, None] - self.control
        r = diff.abs().sum(-1)
        d_offset_d_r = (2 * r * torch.log(r + 1e-6) + r ** 2 / (r + 1e-6)) * self.tps[:, None]
        grad = (d_offset_d_r[..., None] * torch.sign(diff)).sum(2)  # (B, N, 2)
        return self.theta[:, None, :, :2] + grad[:, :, None, :]

    def warp_image(self, image: torch.Tensor) -> torch.Tensor:
        b, _, h, w = image.shape
        grid = coordinate_grid(h, w, device=image.device, dtype=self.theta.dtype).view(1, -1, 2).expand(b, -1, -1)
        grid = self.warp_coordinates(grid).view(b, h, w, 2).to(image.dtype)
        return F.grid_sample(image, grid, padding_mode="reflection", align_corners=False)


def equivariance_losses(kp_driving: Keypoints, kp_transformed: Keypoints, transform: RandomTransform
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |kp_d − T(kp_t)| and mean |I − J_d⁻¹ · ∂T · J_t|, in float32 or wider."""
    value_d, value_t = at_least_float32(kp_driving.value), at_least_float32(kp_transformed.value)
    value = (value_d - transform.warp_coordinates(value_t)).abs().mean()
    mapped = transform.jacobian(value_t) @ at_least_float32(kp_transformed.jacobian)
    product = inverse_2x2(at_least_float32(kp_driving.jacobian)) @ mapped
    jacobian = (torch.eye(2, device=product.device, dtype=product.dtype) - product).abs().mean()
    return value, jacobian


def keypoint_distance_loss(value: torch.Tensor, threshold: float, mode: str) -> torch.Tensor:
    """Over all K×K pairs of (B, K, 2) keypoints; 0 when every pair is at least `threshold` apart, up to 2."""
    k = value.shape[1]
    diff = at_least_float32(value)[:, :, None] - at_least_float32(value)[:, None]
    distance = torch.sqrt(diff.square().sum(-1) + 1e-8)
    eye = torch.eye(k, device=value.device, dtype=diff.dtype)
    if mode == "released":
        return (1 - torch.sign(distance + eye * threshold - threshold)).mean()
    return (2 * F.relu(threshold - distance) / threshold * (1 - eye)).mean()


def consistency_loss(projected: list[torch.Tensor], values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per compensated scale: mean |value − resize(projected).detach()|; only the memory side gets gradient."""
    terms = []
    for feature, value in zip(projected, values):
        target = at_least_float32(feature.detach())
        if target.shape[2:] != value.shape[2:]:
            target = F.interpolate(target, size=value.shape[2:], mode="bilinear", align_corners=True)
        terms.append((target - at_least_float32(value)).abs().mean())
    return terms


class Objective(nn.Module):
    """The model and its losses in one module (what DistributedDataParallel wraps): one forward per step.

    Returns the weighted loss terms (zero-weight terms are not computed) and the tensors the logs show.
    """

    def __init__(self, model: nn.Module, config: LossSection, vgg: VGGFeatures | None):
        super().__init__()
        self.model = model
        self.config = config
        self.vgg = vgg
        self.pyramid = ImagePyramid(config.scales, model.config.num_channels)

    def forward(self, source: torch.Tensor, driving: torch.Tensor, seeds: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], dict]:
        c = self.config
        kp_detector, generator = self.model.kp_detector, self.model.generator
        kp_source, kp_driving = kp_detector(source), kp_detector(driving)
        decoded, motion = generator(source, kp_source, kp_driving)
        losses = {}
        if sum(c.perceptual):
            losses["perceptual"] = perceptual_loss(self.vgg, self.pyramid, decoded.prediction, driving, c.perceptual)
        if c.equivariance_value or c.equivariance_jacobian:
            transform = RandomTransform(seeds, c.sigma_affine, c.sigma_tps, c.points_tps, driving.device,
                                        loss_dtype(driving))
            kp_transformed = kp_detector(transform.warp_image(driving))
            value, jacobian = equivariance_losses(kp_driving, kp_transformed, transform)
            if c.equivariance_value:
                losses["equivariance_value"] = c.equivariance_value * value
            if c.equivariance_jacobian:
                losses["equivariance_jacobian"] = c.equivariance_jacobian * jacobian
        if c.kp_distance:
            losses["kp_distance"] = c.kp_distance * sum(
                keypoint_distance_loss(kp.value, c.kp_distance_threshold, c.kp_distance_mode)
                for kp in (kp_source, kp_driving))
        if c.feat_consistent:
            losses["feat_consistent"] = c.feat_consistent * sum(consistency_loss(decoded.projected, decoded.values))
        # What the TensorBoard images draw (mcnet_rt.visualize.panels), detached from the graph.
        visuals = {"prediction": decoded.prediction.detach(), "deformed": decoded.deformed.detach(),
                   "motion": DenseMotion(*(t.detach() for t in motion)),
                   "kp_source": Keypoints(*(t.detach() for t in kp_source)),
                   "kp_driving": Keypoints(*(t.detach() for t in kp_driving))}
        return losses, visuals
