"""What the face models see in one image, for the evaluation's motion and identity metrics.

The paper's metrics used face-alignment (FAN, 68 points) for AKD, OpenFace nn4.small2 for AED and py-feat for head
pose and action units; none of those models can be installed here (they download their weights), so the models
of `landmarks` stand in. Every image is analysed at ANALYSIS_SIZE×ANALYSIS_SIZE, so that landmark distances are in
pixels at 256 as the paper reports them, whatever the model's resolution. A face that a model does not find is a
None in the observation, which the metrics count; nothing is dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .landmarks import dlib_faces, face_mesh

ANALYSIS_SIZE = 256


@dataclass(frozen=True)
class FaceObservation:
    """What the face models saw in one image (at ANALYSIS_SIZE); None where a model found no face."""

    mesh: np.ndarray | None  # (478, 3) MediaPipe landmarks: x, y in pixels, z in pixels relative to the face centre
    dlib68: np.ndarray | None  # (68, 2) dlib landmarks in pixels
    embedding: np.ndarray | None  # (128,) dlib identity embedding


def to_analysis_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """One image, (3, H, W) float in [0, 1] or (H, W, 3) uint8, as (256, 256, 3) uint8 RGB (bicubic resize)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a (3, H, W) float tensor or an (H, W, 3) uint8 array, got {image.shape}")
    if image.shape[:2] != (ANALYSIS_SIZE, ANALYSIS_SIZE):
        image = np.asarray(Image.fromarray(image).resize((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.BICUBIC))
    return np.ascontiguousarray(image)


def observe(image: np.ndarray | torch.Tensor) -> FaceObservation:
    """Run every face model once on one image; see to_analysis_image for the accepted forms."""
    image = to_analysis_image(image)
    dlib68, embedding = dlib_faces()(image)
    return FaceObservation(mesh=face_mesh()(image), dlib68=dlib68, embedding=embedding)


def observe_batch(images: torch.Tensor | np.ndarray) -> list[FaceObservation]:
    """Observations of a (B, 3, H, W) float batch in [0, 1] or a (B, H, W, 3) uint8 array."""
    return [observe(image) for image in images]
