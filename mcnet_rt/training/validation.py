"""Validation during training: same-identity reconstruction of a fixed set of held-out pairs.

Each pair is the first frame of a held-out clip (the source) and one other frame of it (the driving frame, drawn
once from the seed). The model reconstructs the driving frame from the source with the driving frame's keypoints,
which is the evaluation protocol's relative motion when the anchor is the source frame; the metrics are the
evaluation module's (L1, PSNR, LPIPS, AKD with MediaPipe FaceMesh landmarks at 256 px), averaged over the pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .. import faces
from ..evaluation import image_metrics, motion_metrics
from ..evaluation.perceptual import lpips
from ..models import MCNet
from ..visualize.panels import TRAINING_PANELS, draw_grid, samples
from .config import LOWER_IS_BETTER, ValidationSection
from .data import held_out_clips, read_chosen, split_videos, to_model_size

BATCH = 8  # pairs per forward pass
GRID_TAG = "validation: " + " | ".join(TRAINING_PANELS)  # the grid's TensorBoard tag


def validation_videos(root: str | Path, holdout: str) -> list[Path]:
    """The held-out clips: all of `root/test/` (held-out identities), or one clip per identity from train/."""
    if holdout == "identities":
        try:
            return split_videos(root, "test")
        except InputError as e:
            raise InputError(f"{e}. Validation needs held-out identities there (prepare the data with "
                             "test_fraction > 0); or set validation.holdout=clips, or validation.every=0",
                             options=("test_fraction",)) from None
    clips = held_out_clips(split_videos(root, "train"))
    if not clips:
        raise InputError(f"{Path(root) / 'train'}: no identity has more than one clip, so none can be held out "
                         "(validation.holdout=clips); use validation.holdout=identities or validation.every=0")
    return clips


def is_improvement(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats the best so far (None: nothing yet); NaN never does."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if LOWER_IS_BETTER[metric] else value > best


@dataclass
class ValidationResult:
    metrics: dict[str, float]  # mean over the pairs (AKD: over the pairs where FaceMesh found both faces)
    grid: np.ndarray  # (H, W, 3) uint8: one row of TRAINING_PANELS per pair
    faces_missing: int  # AKD pairs without a face in the prediction or the driving frame


class Validator:
    def __init__(self, config: ValidationSection, root: str | Path, image_size: int, seed: int):
        self.config = config
        videos = validation_videos(root, config.holdout)
        pairs = []
        for i in range(config.pairs):
            rng = np.random.default_rng([seed, i])
            pairs.append(read_chosen(videos[i % len(videos)], lambda n: [0, int(rng.integers(1, n)) if n > 1 else 0]))
        frames = to_model_size(np.concatenate(pairs), image_size)
        self.source, self.driving = frames[0::2], frames[1::2]
        self._driving_faces = None

    @torch.no_grad()
    def __call__(self, model: MCNet) -> ValidationResult:
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        training = model.training
        model.eval()
        predictions, rows = [], []
        for start in range(0, len(self.source), BATCH):
            source = self.source[start:start + BATCH].to(device, dtype)
            driving = self.driving[start:start + BATCH].to(device, dtype)
            kp_source, kp_driving = model.kp_detector(source), model.kp_detector(driving)
            decoded, motion = model.generator(source, kp_source, kp_driving)
            predictions.append(decoded.prediction.float())
            if len(rows) < self.config.grid_pairs:
                rows += samples(source, driving, decoded.prediction, kp_source, kp_driving, motion=motion,
                                deformed=decoded.deformed)[:self.config.grid_pairs - len(rows)]
        model.train(training)
        prediction = torch.cat(predictions).clamp(0, 1)
        driving = self.driving.to(device)
        metrics, missing = {}, 0
        for name in self.config.metrics:
            if name == "akd":
                if self._driving_faces is None:
                    self._driving_faces = faces.observe_batch(self.driving)
                values = motion_metrics.akd(faces.observe_batch(prediction), self._driving_faces, "mediapipe")
                missing = int(np.isnan(values).sum())
                metrics[name] = float(np.nanmean(values)) if missing < len(values) else math.nan
            elif name == "lpips":
                metrics[name] = lpips(prediction, driving).mean().item()
            else:
                metrics[name] = getattr(image_metrics, name)(prediction, driving).mean().item()
        return ValidationResult(metrics, draw_grid(rows, TRAINING_PANELS), missing)
