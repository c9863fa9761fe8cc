"""Animate a still face with a driving video: the source is encoded once, driving frames go through in batches.

Motion transfer follows the released demo (`--relative --adapt_scale`): keypoint displacements since the first
driving frame, scaled by the ratio of the keypoint hulls, are applied to the source keypoints. Absolute mode
feeds the driver's keypoints directly (it transfers the driver's face shape too, which is rarely wanted).
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from .models import MCNet
from .pipeline import FrameStep, MotionReference, motion_reference, prepare_source, to_tensor, to_uint8
from .io.image import fit_square, read_image
from .io.video import VideoWriter, probe_video, read_timed_frames


@dataclass(frozen=True)
class AnimateOptions:
    relative: bool = True
    adapt_scale: bool = True
    batch_size: int = 8
    panels: bool = False  # source | driving | result side by side instead of the result alone
    label: str | None = None  # text burned into every output frame (used to mark untrained weights)
    max_frames: int | None = None  # stop after this many driving frames
    max_seconds: float | None = None  # stop at this time of the driving video


class Animator:
    """Holds one prepared source and turns batches of driving frames into predictions through the `FrameStep`;
    relative motion is measured from the first driving frame it sees."""

    def __init__(self, model: MCNet, source: np.ndarray, options: AnimateOptions,
                 dtype: torch.dtype = torch.float32):
        self.model = model
        self.options = options
        self.dtype = dtype
        self.device = next(model.parameters()).device
        self.step = FrameStep(model, dtype, relative=options.relative)
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
    """Write `text` on a black band across the top of the frame, wrapped at word breaks so that all of it shows
    on narrow frames (a cut-off "NOT A RESULT" would defeat the label)."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if lines[-1] and draw.textlength(joined) > frame.shape[1] - 8:
            lines.append(word)
        else:
            lines[-1] = joined
    line_height = draw.textbbox((0, 0), "Ag")[3] + 2
    band = max(12, frame.shape[0] // 16, line_height * len(lines) + 2)
    draw.rectangle((0, 0, frame.shape[1], band), fill=(0, 0, 0))
    draw.multiline_text((4, 1), "\n".join(lines), fill=(255, 64, 64), spacing=2)
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
    Frames keep the driving video's timestamps, so a variable frame rate stays in sync with its audio.
    Nothing is left at `output_path` unless the whole video was written.
    """
    size = model.config.image_size
    source, source_note = fit_square(read_image(source_path), size)
    if source_note:
        note(f"source {source_path}: {source_note}")
    info = probe_video(driving_path)
    animator = Animator(model, source, options, dtype)
    width = size * (3 if options.panels else 1)
    frames = _limited(read_timed_frames(driving_path), options, info.fps)
    first, first_time = next(frames)
    _, frame_note = fit_square(first, size)
    if frame_note:  # before the progress bar starts, so that the note does not break its line
        note(f"driving {driving_path}: {frame_note} (every frame)")
    total = min(filter(None, (info.num_frames, options.max_frames)), default=None)
    written = 0
    with VideoWriter(output_path, info.fps, width, size, audio_from=driving_path, time_base=info.time_base) as writer:
        with tqdm(total=total, unit="frame", desc="animate", disable=not progress) as bar:
            batch: list[np.ndarray] = []
            times: list[Fraction | None] = []

            def flush() -> None:
                nonlocal written
                driving = np.stack(batch)
                for frame, time in zip(compose(source, driving, animator(driving), options), times):
                    writer.write(frame, None if time is None or first_time is None else time - first_time)
                    bar.update(1)
                written += len(batch)
                batch.clear()
                times.clear()

            for frame, time in itertools.chain([(first, first_time)], frames):
                batch.append(fit_square(frame, size)[0])
                times.append(time)
                if len(batch) == options.batch_size:
                    flush()
            if batch:
                flush()
    if writer.audio_problem:
        note(writer.audio_problem)
    return written


def _limited(frames: Iterator[tuple[np.ndarray, Fraction | None]], options: AnimateOptions, fps: Fraction):
    """The driving frames up to --max-frames and before --max-seconds (counted from the first frame)."""
    start = None
    for index, (frame, time) in enumerate(frames):
        if options.max_frames is not None and index >= options.max_frames:
            return
        if options.max_seconds is not None:
            start = time if start is None else start
            elapsed = index / fps if time is None or start is None else time - start
            if elapsed >= options.max_seconds:
                return
        yield frame, time
