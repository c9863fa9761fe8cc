"""The whole model: keypoint detector + generator, with the public per-source / per-frame API."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..config import MCNetConfig
from ..keypoints import Keypoints
from .dense_motion import DenseMotion
from .generator import Decoded, Generator
from .keypoint_detector import KeypointDetector


class SourceCache(NamedTuple):
    """Everything about the source that does not change from frame to frame."""

    image: torch.Tensor  # (B, 3, H, W)
    keypoints: Keypoints
    features: list[torch.Tensor]  # encoder features, finest first

    def expand(self, batch: int) -> "SourceCache":
        """Broadcast a single source over a batch of driving frames (no copies)."""
        if self.image.shape[0] == batch:
            return self
        def grow(t: torch.Tensor) -> torch.Tensor:
            return t.expand(batch, *t.shape[1:])

        return SourceCache(grow(self.image), Keypoints(grow(self.keypoints.value), grow(self.keypoints.jacobian)),
                           [grow(f) for f in self.features])


class MCNet(nn.Module):
    def __init__(self, config: MCNetConfig):
        super().__init__()
        self.config = config
        self.kp_detector = KeypointDetector(config.keypoint_detector, config.num_kp, config.num_channels)
        self.generator = Generator(config.generator, config.num_kp, config.num_channels, config.image_size)

    def check_images(self, images: torch.Tensor, name: str = "images") -> None:
        """Reject inputs the network cannot take, with a message that says what was expected."""
        size, channels = self.config.image_size, self.config.num_channels
        if images.dim() != 4 or images.shape[1] != channels or tuple(images.shape[2:]) != (size, size):
            raise ValueError(f"{name}: expected a (B, {channels}, {size}, {size}) tensor, got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"{name}: expected floating-point values in [0, 1], got dtype {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError(f"{name}: contains NaN or infinite values")

    def detect_keypoints(self, images: torch.Tensor) -> Keypoints:
        """(B,3,H,W) float images in [0,1] -> keypoints .value (B,K,2), .jacobian (B,K,2,2)."""
        self.check_images(images)
        return self.kp_detector(images)

    def encode_source(self, source: torch.Tensor) -> SourceCache:
        self.check_images(source, "source")
        return SourceCache(source, self.kp_detector(source), self.generator.encode(source))

    def animate(self, cache: SourceCache, kp_driving: Keypoints) -> torch.Tensor:
        """The per-frame step: prediction (B,3,H,W) for driving keypoints, with the source cached."""
        return self.animate_outputs(cache, kp_driving)[0].prediction

    def animate_outputs(self, cache: SourceCache, kp_driving: Keypoints, keep_features: bool = False
                        ) -> tuple[Decoded, DenseMotion]:
        """`animate` with everything the generator computed on the way (what the visualiser draws)."""
        cache = cache.expand(kp_driving.value.shape[0])
        motion = self.generator.estimate_motion(cache.image, cache.keypoints, kp_driving)
        return self.generator.decode(cache.image, cache.features, motion, cache.keypoints.value, keep_features), motion

    def generate(self, source: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints) -> torch.Tensor:
        """Prediction (B,3,H,W) in [0,1]: `source` animated from `kp_source` to `kp_driving`."""
        self.check_images(source, "source")
        cache = SourceCache(source, kp_source, self.generator.encode(source))
        return self.animate(cache, kp_driving)
