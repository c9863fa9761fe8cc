"""Animate a still face with a driving video: the source is encoded once, driving frames go through in batches.

Motion transfer follows the released demo (`--relative --adapt_scale`): keypoint displacements since the first
driving frame, scaled by the ratio of the keypoint hulls, are applied to the source keypoints. Absolute mode
feeds the driver's keypoints directly (it transfers the driver's face shape too, which is rarely wanted).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from .engine import load_backend
from .models import MCNet
from .pipeline import FrameStep, MotionReference, motion_reference, prepare_source, to_tensor, to_uint8
from .io.image import fit_square, read_image
from .io.video import VideoWriter, probe_video, read_frames


@dataclass(frozen=True)
class AnimateOptions:
    relative: bool = True
    adapt_scale: bool = True
    batch_size: int = 8
    panels: bool = False  # source | driving | result side by side instead of the result alone
    label: str | None = None  # text burned into every output frame (used to mark untrained weights)
    backend: str = "eager"  # how the per-frame step runs (mcnet_rt.engine.BACKENDS)


class Animator:
    """Holds one prepared source and turns batches of driving frames into predictions through the `FrameStep`;
    relative motion is measured from the first driving frame it sees."""

    def __init__(self, model: MCNet, source: np.ndarray, options: AnimateOptions,
                 dtype: torch.dtype = torch.float32):
        self.model = model
        self.options = options
        self.dtype = dtype
        self.device = next(model.parameters()).device
        self.step = load_backend(options.backend, FrameStep(model, dtype, relative=options.relative),
                                 batch=options.batch_size)
        self.source = prepare_source(model, to_tensor(source[None], self.device), dtype)
        self.reference: MotionReference | None = None

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        driving = to_tensor(frames, self.device)
        if self.reference is None:
            self.reference = motion_reference(self.model, self.source, driving[:1], self.options.adapt_scale,
                                              self.dtype)
        return to_uint8(self.step(driving, *self.step.inputs(self.source, self.reference)))


def burn_label(frame: np.ndarray, text: str) -> np.ndarray:
    """Write `text` on a black band across the top of the frame."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    band = max(12, frame.shape[0] // 16)
    draw.rectangle((0, 0, frame.shape[1], band), fill=(0, 0, 0))
    draw.text((4, 1), text, fill=(255, 64, 64))
    return np.asarray(image)


def compose(source: np.ndarray, driving: np.ndarray, results: np.ndarray, options: AnimateOptions) -> np.ndarray:
    """The frames to write: results alone, or source | driving | result panels; labelled when asked."""
    out = results
    if options.panels:
        out = np.concatenate([np.broadcast_to(source, driving.shape), driving, results], axis=2)
    if options.label:
        out = np.stack([burn_label(f, options.label) for f in out])
    return out


def note(message: str) -> None:
    tqdm.write(f"mcnet-rt: note: {message}", file=sys.stderr)  # above the progress bar, not through it


def animate_video(model: MCNet, source_path: str | Path, driving_path: str | Path, output_path: str | Path,
                  options: AnimateOptions = AnimateOptions(), dtype: torch.dtype = torch.float32,
                  progress: bool = True) -> int:
    """Write `output_path` (H.264 MP4 with the driving video's audio); returns the number of frames written.

    Inputs are assumed face-centred; other sizes are centre-cropped to a square and resized, with a note.
    Nothing is left at `output_path` unless the whole video was written.
    """
    size = model.config.image_size
    source, source_note = fit_square(read_image(source_path), size)
    if source_note:
        note(f"source {source_path}: {source_note}")
    info = probe_video(driving_path)
    animator = Animator(model, source, options, dtype)
    width = size * (3 if options.panels else 1)
    written = 0
    with VideoWriter(output_path, info.fps, width, size, audio_from=driving_path) as writer, \
            tqdm(total=info.num_frames or None, unit="frame", desc="animate", disable=not progress) as bar:
        batch: list[np.ndarray] = []

        def flush() -> None:
            nonlocal written
            driving = np.stack(batch)
            for frame in compose(source, driving, animator(driving), options):
                writer.write(frame)
            written += len(batch)
            bar.update(len(batch))
            batch.clear()

        for index, frame in enumerate(read_frames(driving_path)):
            frame, frame_note = fit_square(frame, size)
            if index == 0 and frame_note:
                note(f"driving {driving_path}: {frame_note} (every frame)")
            batch.append(frame)
            if len(batch) == options.batch_size:
                flush()
        if batch:
            flush()
    return written
