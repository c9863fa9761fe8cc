"""`mcnet-rt visualize`: a source image and a driving video (or image) -> one row of panels per driving frame, as
an MP4 with the driving video's timestamps or as a PNG (one row per frame, a still driving image gives one row).

Frames are cropped and their relative motion measured exactly as `animate` does (a `Session`); each frame then
runs the eager per-frame step with its extra outputs (`FrameStep.render_outputs`), one frame at a time. A frame
without a face holds the last pose, as in `animate`; frames before the first face are left out.
"""
from __future__ import annotations

import contextlib

import itertools
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..animate import AnimateOptions, limited
from ..errors import InputError
from ..io.image import read_image, write_png
from ..io.messages import note
from ..io.overlay import burn_label
from ..io.video import VideoWriter, even_size, probe_video, read_timed_frames
from ..models import MCNet
from ..pipeline.step import FrameStep
from ..pipeline.session import Session
from ..pipeline.step import FrameOutputs
from .panels import PANELS, Sample, draw_row, samples

IMAGE_OUTPUTS = (".png",)


@dataclass(frozen=True)
class VisualizeOptions:
    panels: tuple[str, ...] = PANELS
    height: int | None = None  # of each panel; default the model's image size


def is_still_image(path: str | Path) -> bool:
    """Whether `path` names a still image (by its extension) rather than a video."""
    suffix = Path(path).suffix.lower()
    return suffix in Image.registered_extensions() and suffix != ".gif"


def check_request(driving_path: str | Path, output_path: str | Path) -> bool:
    """Whether the output is a PNG; refuses a still driving image written as a video (before any work)."""
    to_png = Path(output_path).suffix.lower() in IMAGE_OUTPUTS
    if is_still_image(driving_path) and not to_png:
        raise InputError(f"{driving_path}: a still driving image gives one row: write it to a .png")
    return to_png


class FrameDrawer:
    """Driving frames -> panel rows through one `Session` (crop, reference, held pose), as `animate` runs them."""

    def __init__(self, step: FrameStep, session: Session, options: VisualizeOptions):
        self.step, self.session, self.options = step, session, options
        self.crop: torch.Tensor | None = None  # the last driving crop with a face

    def sample(self, frame: np.ndarray) -> Sample | None:
        """What the panels of one driving frame show, or None before the first frame with a face."""
        session, step = self.session, self.step
        crop = session._crop(frame)
        if crop is not None:
            session._observe(step.keypoints(crop))
            self.crop = crop
        if session.pose is None:
            return None
        outputs: FrameOutputs = step.render_outputs(*session.pose, *step.inputs(session.source, session.reference))
        decoded = outputs.decoded
        return samples(session.source.image, self.crop, decoded.prediction, session.source.keypoints,
                       outputs.kp_driving, outputs.kp_transferred, outputs.motion, decoded.deformed,
                       decoded.warped, decoded.compensated)[0]

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """The panel row of one driving frame, or None before the first frame with a face."""
        sample = self.sample(frame)
        return None if sample is None else draw_row(sample, self.options.panels, self.options.height)


@torch.no_grad()
def visualize(model: MCNet, source_path: str | Path, driving_path: str | Path, output_path: str | Path,
              animate: AnimateOptions, options: VisualizeOptions = VisualizeOptions(),
              dtype: torch.dtype = torch.float32, progress: bool = True) -> int:
    """Write the panel rows to `output_path` (.png, or a video); returns the number of rows written.
    Nothing is left at `output_path` unless all of it was written."""
    to_png = check_request(driving_path, output_path)
    source = read_image(source_path)
    if is_still_image(driving_path):
        frames, fps, time_base = iter([(read_image(driving_path), None)]), Fraction(25), None
    else:
        info = probe_video(driving_path)
        frames, fps, time_base = limited(read_timed_frames(driving_path), animate, info.fps), info.fps, info.time_base
    step = FrameStep(model, dtype, relative=animate.relative)
    session = Session(model, source, replace(animate.session, rate=float(fps)), dtype, step=step,
                      source_name=str(source_path))
    draw = FrameDrawer(step, session, options)
    with contextlib.closing(session), tqdm(total=animate.max_frames, unit="frame", desc="visualize",
                                           disable=not progress) as bar:
        rows = _rows(draw, frames, animate.label, bar)
        written = _write_png(rows, output_path) if to_png else _write_video(rows, output_path, fps, time_base,
                                                                             driving_path)
    if not written:
        raise InputError(f"{driving_path}: no driving frame shows a face, so there is nothing to draw")
    return written


def _rows(draw: FrameDrawer, frames, label: str | None, bar: tqdm):
    """(row, time) for each driving frame from the first with a face, labelled when asked."""
    for frame, time in frames:
        row = draw(frame)
        if row is not None:
            bar.update(1)
            yield (burn_label(row, label, bottom=True) if label else row), time


def _write_png(rows, output_path: str | Path) -> int:
    stacked = [row for row, _ in rows]
    if stacked:
        write_png(np.concatenate(stacked, axis=0), output_path)
    return len(stacked)


def _write_video(rows, output_path: str | Path, fps: Fraction, time_base: Fraction | None,
                 driving_path: str | Path) -> int:
    first = next(rows, None)
    if first is None:
        return 0
    width, height = even_size(first[0].shape[1], first[0].shape[0])
    start = first[1]
    with VideoWriter(output_path, fps, width, height, audio_from=driving_path, time_base=time_base) as writer:
        for row, time in itertools.chain([first], rows):
            writer.write(np.ascontiguousarray(row[:height, :width]),
                         None if time is None or start is None else time - start)
    if writer.audio_problem:
        note(f"note: {writer.audio_problem}")
    return writer.frames_written
